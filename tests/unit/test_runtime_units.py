"""Settings, tokens and record decoding: the runtime's pure parts."""

from pathlib import Path

import pytest
from google.protobuf import json_format
from tessera.events.v1.drift_pb2 import DriftEvent
from tessera.events.v1.payload_log_pb2 import PayloadLog

from services.common import config, serialization
from services.common.auth import TokenAuthenticator
from services.common.errors import InvalidArgument, Unauthenticated

pytestmark = pytest.mark.unit


def test_settings_come_from_tessera_environment_variables():
    settings = config.load(
        config.CommonSettings,
        {"TESSERA_GRPC_PORT": "50099", "TESSERA_KAFKA_BOOTSTRAP": "kafka:9092", "TESSERA_DATA_DIR": "/tmp/x"},
    )
    assert settings.grpc_port == 50099
    assert settings.kafka_bootstrap == "kafka:9092"
    assert settings.data_dir == Path("/tmp/x")
    assert config.load(config.CommonSettings, {}).kafka_bootstrap == "127.0.0.1:9092"


def test_a_malformed_setting_names_the_variable():
    with pytest.raises(ValueError, match="TESSERA_GRPC_PORT"):
        config.load(config.CommonSettings, {"TESSERA_GRPC_PORT": "fifty"})


def test_token_table_parses_pairs_and_rejects_garbage():
    settings = config.load(config.CommonSettings, {"TESSERA_AUTH_TOKENS": "t1=alice, t2=bob"})
    assert settings.token_table() == {"t1": "alice", "t2": "bob"}
    with pytest.raises(ValueError, match="token=principal"):
        config.load(config.CommonSettings, {"TESSERA_AUTH_TOKENS": "no-separator"}).token_table()


def test_bearer_tokens_resolve_to_principals():
    auth = TokenAuthenticator({"t1": "alice"})
    assert auth.authenticate([("authorization", "Bearer t1")]).name == "alice"
    for metadata in ([], [("authorization", "Bearer nope")], [("authorization", "Basic t1")]):
        with pytest.raises(Unauthenticated):
            auth.authenticate(metadata)
    assert TokenAuthenticator({}, enabled=False).authenticate([]).is_anonymous


def test_records_decode_from_protobuf_and_json():
    log = PayloadLog(request_id="r1", endpoint="chat", latency_ms=12.5)
    assert serialization.decode(PayloadLog, log.SerializeToString()) == log
    as_json = json_format.MessageToJson(log).encode()
    assert serialization.decode(PayloadLog, as_json, "application/json") == log


@pytest.mark.parametrize(
    ("value", "content_type", "schema", "reason"),
    [
        (b"\xff\xff\xff", serialization.PROTOBUF, "", "invalid protobuf"),
        (b"{not json", serialization.JSON, "", "invalid JSON"),
        (b"{}", "text/csv", "", "unsupported content-type"),
        (None, serialization.PROTOBUF, "", "tombstone"),
        (b"", serialization.PROTOBUF, DriftEvent.DESCRIPTOR.full_name, "schema header"),
    ],
)
def test_undecodable_records_raise_invalid_argument_with_a_reason(value, content_type, schema, reason):
    with pytest.raises(InvalidArgument, match=reason):
        serialization.decode(PayloadLog, value, content_type, schema)
