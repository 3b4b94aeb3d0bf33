"""Typed settings from `TESSERA_*` environment variables, with defaults that run locally.

Each service declares one frozen dataclass that extends `CommonSettings` and
reads it with `load(MySettings)`. A field `foo_bar` is read from
`TESSERA_FOO_BAR`; a service may give its fields a prefix of its own
(`TESSERA_REGISTRY_...`) by naming them so. Any field may instead be read from a
file named by `TESSERA_FOO_BAR_FILE` (its content, stripped): how Kubernetes and
Docker secrets mount tokens and DSNs without putting them in the environment.

The default tokens only work on loopback: a server whose host is anything
else refuses to start while one of them is configured (`check_listen_safety`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parents[2]

T = TypeVar("T", bound="CommonSettings")

# The local defaults: the superuser `admin` and the services' own (not super) principal.
DEV_ADMIN_TOKEN = "tessera-dev-token"
DEV_SERVICE_TOKEN = "tessera-service-token"
DEFAULT_TOKENS = frozenset({DEV_ADMIN_TOKEN, DEV_SERVICE_TOKEN})


class UnsafeSettings(ValueError):
    """The settings would expose a well-known credential beyond this machine."""


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and `localhost`; an empty host (every interface) is not."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclasses.dataclass(frozen=True)
class CommonSettings:
    """What every Tessera process needs: where Kafka and PostgreSQL are, and how to be reached."""

    service_name: str = "tessera"
    host: str = "127.0.0.1"
    grpc_port: int = 0
    metrics_port: int = 0
    kafka_bootstrap: str = "127.0.0.1:9092"
    # Empty: the local PostgreSQL started by infra/postgres (its DSN file under the data dir).
    pg_dsn: str = ""
    data_dir: Path = REPO_ROOT / ".data"
    # Bearer tokens accepted by every service, as `token=principal` pairs separated by commas.
    # The defaults are public: they work on loopback only (see check_listen_safety).
    auth_tokens: str = f"{DEV_ADMIN_TOKEN}=admin,{DEV_SERVICE_TOKEN}=tessera-services"
    # `tokens` (the default) or `none` to accept every caller as `anonymous`.
    auth_mode: str = "tokens"
    # The token this process presents when it calls another service.
    service_token: str = DEV_SERVICE_TOKEN
    otlp_endpoint: str = ""
    # Signed JWT bearer tokens, beside the static ones: verified against this JWKS file (RS256/ES256),
    # with the issuer and audience checked when set; the principal is the named claim.
    auth_jwks_file: str = ""
    auth_jwt_issuer: str = ""
    auth_jwt_audience: str = ""
    auth_jwt_principal_claim: str = "sub"
    # TLS: servers (gRPC, the registry's HTTP) use this certificate and key when both are set;
    # clients verify servers against this CA bundle when it is set (plaintext otherwise).
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_ca_file: str = ""
    log_level: str = "INFO"
    shutdown_grace_s: float = 10.0
    # Any statement running longer is cancelled by PostgreSQL (0: no limit).
    pg_statement_timeout_ms: int = 30_000
    # Topics created by `kafka_admin`: replicas per partition (-1: the broker's default.replication.factor)
    # and how long dead-letter topics keep records (longer than their source: someone has to look at them).
    kafka_replication_factor: int = -1
    kafka_dlq_retention_ms: int = 30 * 24 * 3600 * 1000
    # min.insync.replicas of the topics Tessera creates (0: the broker's default).
    kafka_min_insync_replicas: int = 0
    # Tries of a record that keeps failing transiently (a conflict, a timeout) before it is dead-lettered.
    kafka_consumer_max_attempts: int = 5

    def resolved_pg_dsn(self) -> str:
        if self.pg_dsn:
            return self.pg_dsn
        dsn_file = self.data_dir / "postgres" / "dsn"
        if not dsn_file.exists():
            raise RuntimeError(
                f"TESSERA_PG_DSN is not set and no local PostgreSQL runs ({dsn_file} is missing): run `make up`"
            )
        return dsn_file.read_text().strip()

    def token_table(self) -> dict[str, str]:
        table: dict[str, str] = {}
        for pair in filter(None, (p.strip() for p in self.auth_tokens.split(","))):
            token, sep, principal = pair.partition("=")
            if not sep or not token or not principal:
                raise ValueError(f"TESSERA_AUTH_TOKENS: expected token=principal, got {pair!r}")
            table[token.strip()] = principal.strip()
        return table

    def check_listen_safety(self) -> None:
        """Refuse a non-loopback host while a default token is configured (raises UnsafeSettings)."""
        if is_loopback(self.host):
            return
        configured = set(self.token_table()) | {self.service_token}
        for token in sorted(configured & DEFAULT_TOKENS):
            where = "TESSERA_SERVICE_TOKEN" if token == self.service_token else "TESSERA_AUTH_TOKENS"
            raise UnsafeSettings(
                f"{self.service_name}: TESSERA_HOST={self.host!r} is not a loopback address, but {where} still"
                f" holds the public default token {token!r}; set TESSERA_AUTH_TOKENS and TESSERA_SERVICE_TOKEN"
                " to tokens of your own"
            )


def load(cls: type[T], environ: typing.Mapping[str, str] | None = None, **overrides: Any) -> T:
    """Build `cls` from the environment; explicit keyword overrides win."""
    environ = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if field.name in overrides:
            values[field.name] = overrides[field.name]
            continue
        raw = _raw_value(environ, f"TESSERA_{field.name.upper()}")
        if raw is not None:
            values[field.name] = _parse(raw, hints[field.name], field.name)
    return cls(**values)


def _raw_value(environ: typing.Mapping[str, str], key: str) -> str | None:
    """`KEY` from the environment, or the content of the file `KEY_FILE` names; both at once is an error."""
    file_key = f"{key}_FILE"
    if file_key not in environ:
        return environ.get(key)
    if key in environ:
        raise ValueError(f"{key} and {file_key} are both set: keep one")
    try:
        return Path(environ[file_key]).read_text().strip()
    except OSError as exc:
        raise ValueError(f"{file_key}={environ[file_key]!r} cannot be read: {exc.strerror}") from exc


def _parse(raw: str, hint: Any, name: str) -> Any:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    try:
        if hint is bool:
            if raw.lower() in {"1", "true", "yes", "on"}:
                return True
            if raw.lower() in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError(raw)
        if hint in (int, float, str, Path):
            return hint(raw)
        if typing.get_origin(hint) in (tuple, list):
            return tuple(item.strip() for item in raw.split(",") if item.strip())
    except ValueError as exc:
        raise ValueError(f"TESSERA_{name.upper()}={raw!r} is not a valid {getattr(hint, '__name__', hint)}") from exc
    raise TypeError(f"setting {name}: unsupported type {hint}")
