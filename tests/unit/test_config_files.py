"""`TESSERA_<FIELD>_FILE`: every setting, secrets first, may come from a mounted file instead of the environment."""

import dataclasses

import pytest

from services.common.config import CommonSettings, load

pytestmark = pytest.mark.unit


@dataclasses.dataclass(frozen=True)
class Sample(CommonSettings):
    sample_port: int = 1


def test_a_secret_is_read_from_the_file_named_by_the_file_variable(tmp_path):
    (tmp_path / "dsn").write_text("postgresql://tessera:s3cret@db:5432/tessera\n")
    (tmp_path / "tokens").write_text("t1=admin,t2=tessera-services")
    settings = load(
        Sample,
        {"TESSERA_PG_DSN_FILE": str(tmp_path / "dsn"), "TESSERA_AUTH_TOKENS_FILE": str(tmp_path / "tokens")},
    )
    assert settings.pg_dsn == "postgresql://tessera:s3cret@db:5432/tessera"
    assert settings.token_table() == {"t1": "admin", "t2": "tessera-services"}


def test_a_file_value_is_parsed_like_an_environment_value(tmp_path):
    (tmp_path / "port").write_text(" 8080\n")
    assert load(Sample, {"TESSERA_SAMPLE_PORT_FILE": str(tmp_path / "port")}).sample_port == 8080


def test_both_the_variable_and_its_file_is_refused(tmp_path):
    (tmp_path / "token").write_text("x")
    with pytest.raises(ValueError, match="TESSERA_SERVICE_TOKEN and TESSERA_SERVICE_TOKEN_FILE"):
        load(Sample, {"TESSERA_SERVICE_TOKEN": "y", "TESSERA_SERVICE_TOKEN_FILE": str(tmp_path / "token")})


def test_a_missing_file_is_named_in_the_error(tmp_path):
    with pytest.raises(ValueError, match="TESSERA_PG_DSN_FILE=.*cannot be read"):
        load(Sample, {"TESSERA_PG_DSN_FILE": str(tmp_path / "absent")})


def test_an_explicit_override_still_wins(tmp_path):
    (tmp_path / "token").write_text("from-file")
    settings = load(Sample, {"TESSERA_SERVICE_TOKEN_FILE": str(tmp_path / "token")}, service_token="explicit")
    assert settings.service_token == "explicit"
