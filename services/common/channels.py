"""The one way a service opens a gRPC channel to another: tracing and TLS in one place.

`channel(address)` returns a `grpc.aio` channel whose calls carry the current
trace context (`telemetry.client_interceptors`), over TLS verified against
`TESSERA_TLS_CA_FILE` when that is set (plaintext otherwise, the local default).
A client certificate is presented when `TESSERA_TLS_CLIENT_CERT_FILE` and
`TESSERA_TLS_CLIENT_KEY_FILE` are set too. `server_credentials(settings)` is the
server side: None without a certificate.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from services.common import telemetry
from services.common.config import CommonSettings

ChannelOptions = Sequence[tuple[str, Any]]


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


def client_credentials(environ: os._Environ | dict[str, str] | None = None) -> grpc.ChannelCredentials | None:
    """TLS credentials for outgoing channels, or None for plaintext."""
    environ = os.environ if environ is None else environ
    ca_file = environ.get("TESSERA_TLS_CA_FILE", "")
    if not ca_file:
        return None
    cert_file = environ.get("TESSERA_TLS_CLIENT_CERT_FILE", "")
    key_file = environ.get("TESSERA_TLS_CLIENT_KEY_FILE", "")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca_file),
        private_key=_read(key_file) if cert_file and key_file else None,
        certificate_chain=_read(cert_file) if cert_file and key_file else None,
    )


def channel(address: str, options: ChannelOptions | None = None) -> grpc.aio.Channel:
    """A traced channel to another service, over TLS when a CA is configured."""
    credentials = client_credentials()
    interceptors = telemetry.client_interceptors()
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(address, credentials, options=options, interceptors=interceptors)


def server_credentials(settings: CommonSettings) -> grpc.ServerCredentials | None:
    """The server's TLS credentials from TESSERA_TLS_CERT_FILE/KEY_FILE; None when not configured.

    With TESSERA_TLS_CA_FILE set too, clients presenting a certificate are verified against it
    (a client certificate is accepted, not required: callers authenticate with bearer tokens)."""
    if not settings.tls_cert_file and not settings.tls_key_file:
        return None
    if not (settings.tls_cert_file and settings.tls_key_file):
        raise ValueError("TESSERA_TLS_CERT_FILE and TESSERA_TLS_KEY_FILE must be set together")
    return grpc.ssl_server_credentials(
        [(_read(settings.tls_key_file), _read(settings.tls_cert_file))],
        root_certificates=_read(settings.tls_ca_file) if settings.tls_ca_file else None,
        require_client_auth=False,
    )


def ssl_context(settings: CommonSettings):
    """An `ssl.SSLContext` for HTTP servers (the registry's MLflow REST), or None without a certificate."""
    if not settings.tls_cert_file and not settings.tls_key_file:
        return None
    if not (settings.tls_cert_file and settings.tls_key_file):
        raise ValueError("TESSERA_TLS_CERT_FILE and TESSERA_TLS_KEY_FILE must be set together")
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    return context
