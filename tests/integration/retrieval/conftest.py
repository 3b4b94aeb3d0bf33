"""A real retrieval service per test module: in-process gRPC server, real PostgreSQL and Kafka."""

from __future__ import annotations

import uuid

import grpc
import psycopg
import pytest
from psycopg import sql
from tessera.retrieval.v1 import retrieval_pb2 as pb
from tessera.retrieval.v1 import retrieval_pb2_grpc

from services.common import kafka_admin
from services.common.auth import bearer
from services.common.config import load
from services.retrieval.app import RetrievalApp
from services.retrieval.settings import RetrievalSettings

TOKEN = "retrieval-test-token"
METADATA = bearer(TOKEN)


@pytest.fixture(scope="module")
async def retrieval(pg_dsn, kafka_bootstrap):
    """The running app (sync consumer on a topic of its own) and a stub."""
    suffix = uuid.uuid4().hex[:10]
    topic = f"test.retrieval.sync.{suffix}"
    kafka_admin.ensure_topics(kafka_bootstrap, [topic, topic + ".dlq"], partitions=1)
    schema = f"retrieval_t_{suffix}"
    settings = load(
        RetrievalSettings,
        pg_dsn=pg_dsn,
        kafka_bootstrap=kafka_bootstrap,
        grpc_port=0,
        retrieval_schema=schema,
        retrieval_sync_topic=topic,
        retrieval_sync_group=f"test-retrieval-{suffix}",
        auth_tokens=f"{TOKEN}=alice",
        retrieval_authz="none",
    )
    app = RetrievalApp(settings, serve_metrics=False)
    await app.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    app.stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
    app.topic = topic
    yield app
    await channel.close()
    await app.stop()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def index_name(prefix: str = "t") -> str:
    return f"tests.s_{uuid.uuid4().hex[:8]}.{prefix}"


def field(name: str, kind: int) -> pb.MetadataField:
    return pb.MetadataField(name=name, type=kind)
