"""The protos are the only contract between services: stubs and topics must agree with them."""

import subprocess
import sys
from pathlib import Path

import pytest
import tessera.events.v1.drift_pb2  # noqa: F401 - registers the event descriptors
import tessera.events.v1.evaluation_pb2  # noqa: F401
import tessera.events.v1.payload_log_pb2  # noqa: F401
import tessera.events.v1.registry_pb2  # noqa: F401
import tessera.events.v1.retrieval_pb2  # noqa: F401
import tessera.events.v1.serving_pb2  # noqa: F401
import tessera.events.v1.training_pb2  # noqa: F401
from google.protobuf import descriptor_pool

from services.common import topics

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.unit


def test_generated_stubs_match_the_protos():
    result = subprocess.run(
        [sys.executable, str(ROOT / "protos" / "generate.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_every_topic_has_a_protobuf_message():
    assert set(topics.SCHEMAS) == set(topics.TOPICS)
    pool = descriptor_pool.Default()
    for topic, schema in topics.SCHEMAS.items():
        assert pool.FindMessageTypeByName(schema).full_name == schema, topic


def test_every_topic_has_a_dead_letter_topic():
    every = topics.all_topics()
    assert all(topics.dlq(t) in every for t in topics.TOPICS)
    assert len(every) == 2 * len(topics.TOPICS)
