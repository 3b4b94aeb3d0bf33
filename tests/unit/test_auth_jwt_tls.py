"""Signed JWT bearer tokens beside static ones, and TLS on gRPC and HTTP, with keys made here."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import time

import aiohttp
import grpc
import jwt
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tessera.evaluation.v1 import evaluation_pb2, evaluation_pb2_grpc

from services.common import channels, config
from services.common.auth import JwtVerifier, TokenAuthenticator, bearer, current_principal
from services.common.errors import Unauthenticated
from services.common.grpc_server import TesseraServer

pytestmark = pytest.mark.unit

ISSUER = "https://issuer.test"
AUDIENCE = "tessera"


def _jwk(public_key, kid: str) -> dict:
    algorithm = jwt.algorithms.RSAAlgorithm if isinstance(public_key, rsa.RSAPublicKey) else jwt.algorithms.ECAlgorithm
    key = json.loads(algorithm.to_jwk(public_key))
    key["kid"] = kid
    return key


@pytest.fixture(scope="module")
def keys():
    return {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ec": ec.generate_private_key(ec.SECP256R1()),
        "stranger": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }


@pytest.fixture
def jwks_file(tmp_path, keys):
    path = tmp_path / "jwks.json"
    path.write_text(
        json.dumps({"keys": [_jwk(keys["rsa"].public_key(), "rsa-1"), _jwk(keys["ec"].public_key(), "ec-1")]})
    )
    return path


def _token(key, kid: str, algorithm: str = "RS256", **claims) -> str:
    now = int(time.time())
    payload = {"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300, **claims}
    return jwt.encode(payload, key, algorithm=algorithm, headers={"kid": kid})


def _authenticator(jwks_file, **settings) -> TokenAuthenticator:
    values = {
        "auth_tokens": "static-token=bob",
        "auth_jwks_file": str(jwks_file),
        "auth_jwt_issuer": ISSUER,
        "auth_jwt_audience": AUDIENCE,
        **settings,
    }
    return TokenAuthenticator.from_settings(config.load(config.CommonSettings, environ={}, **values))


def test_rs256_and_es256_tokens_name_their_subject_and_static_tokens_still_work(jwks_file, keys):
    auth = _authenticator(jwks_file)
    assert auth.authenticate(bearer(_token(keys["rsa"], "rsa-1"))).name == "alice"
    assert auth.authenticate(bearer(_token(keys["ec"], "ec-1", "ES256", sub="carol"))).name == "carol"
    assert auth.authenticate(bearer("static-token")).name == "bob"


def test_the_principal_comes_from_the_configured_claim(jwks_file, keys):
    auth = _authenticator(jwks_file, auth_jwt_principal_claim="email")
    token = _token(keys["rsa"], "rsa-1", email="dora@example.test")
    assert auth.principal_for_token(token).name == "dora@example.test"
    with pytest.raises(Unauthenticated, match="email"):
        auth.principal_for_token(_token(keys["rsa"], "rsa-1"))


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda k: _token(k["stranger"], "rsa-1"), id="signed-by-another-key"),
        pytest.param(lambda k: _token(k["stranger"], "unknown-kid"), id="unknown-kid"),
        pytest.param(lambda k: _token(k["rsa"], "rsa-1", iss="https://evil.test"), id="wrong-issuer"),
        pytest.param(lambda k: _token(k["rsa"], "rsa-1", aud="someone-else"), id="wrong-audience"),
        pytest.param(lambda k: _token(k["rsa"], "rsa-1", exp=int(time.time()) - 3600), id="expired"),
        pytest.param(lambda k: _token(k["rsa"], "rsa-1", sub=""), id="empty-subject"),
        pytest.param(lambda k: _token(k["rsa"], "rsa-1", sub="x" * 1000), id="huge-subject"),
        pytest.param(lambda k: jwt.encode({"sub": "alice", "exp": time.time() + 60}, None, "none"), id="alg-none"),
        pytest.param(
            lambda k: jwt.encode(
                {"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "exp": time.time() + 60}, "s" * 32, "HS256"
            ),
            id="hs256",
        ),
        pytest.param(lambda k: _token(k["rsa"], "rsa-1")[:-4] + "AAAA", id="tampered-signature"),
        pytest.param(lambda k: "a." * 9000 + "b", id="oversized"),
    ],
)
def test_bad_tokens_are_unauthenticated(jwks_file, keys, make):
    with pytest.raises(Unauthenticated):
        _authenticator(jwks_file).principal_for_token(make(keys))


def test_without_a_jwks_file_a_jwt_is_just_an_unknown_token(keys):
    auth = TokenAuthenticator.from_settings(config.load(config.CommonSettings, environ={}, auth_tokens="t=bob"))
    with pytest.raises(Unauthenticated):
        auth.principal_for_token(_token(keys["rsa"], "rsa-1"))


def test_a_rotated_key_set_is_read_again(jwks_file, keys):
    verifier = JwtVerifier(str(jwks_file), issuer=ISSUER, audience=AUDIENCE)
    newcomer = _token(keys["stranger"], "rsa-2")
    with pytest.raises(Unauthenticated):
        verifier.verify(newcomer)
    jwks_file.write_text(json.dumps({"keys": [_jwk(keys["stranger"].public_key(), "rsa-2")]}))
    assert verifier.verify(newcomer) == "alice"
    with pytest.raises(Unauthenticated):  # the retired key no longer signs
        verifier.verify(_token(keys["rsa"], "rsa-1"))


def test_a_missing_key_set_fails_at_start(tmp_path):
    with pytest.raises(FileNotFoundError):
        JwtVerifier(str(tmp_path / "absent.json"))


# -- TLS ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 and localhost, acting as its own CA."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tessera-test")])
    now = datetime.datetime.now(datetime.UTC)

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "server.crt", folder / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


class _Echo(evaluation_pb2_grpc.EvaluationServiceServicer):
    async def GetEvalRun(self, request, context):
        return evaluation_pb2.EvalRun(eval_run_id=request.eval_run_id, created_by=current_principal().name)


async def test_grpc_over_tls_with_a_jwt(certificate, jwks_file, keys, monkeypatch):
    cert_file, key_file = certificate
    settings = config.load(
        config.CommonSettings,
        environ={},
        service_name="tls-sample",
        auth_tokens="static-token=bob",
        auth_jwks_file=str(jwks_file),
        tls_cert_file=str(cert_file),
        tls_key_file=str(key_file),
    )
    server = TesseraServer(settings)
    server.add(
        evaluation_pb2_grpc.add_EvaluationServiceServicer_to_server, _Echo(), "tessera.evaluation.v1.EvaluationService"
    )
    port = await server.start()
    try:
        monkeypatch.setenv("TESSERA_TLS_CA_FILE", str(cert_file))
        async with channels.channel(f"localhost:{port}") as secure:
            stub = evaluation_pb2_grpc.EvaluationServiceStub(secure)
            token = _token(keys["ec"], "ec-1", "ES256", iss="any", aud="any", sub="erin")
            reply = await stub.GetEvalRun(evaluation_pb2.GetEvalRunRequest(eval_run_id="r1"), metadata=bearer(token))
            assert reply.created_by == "erin"
        # A plaintext client gets no answer from a TLS server.
        monkeypatch.delenv("TESSERA_TLS_CA_FILE")
        async with channels.channel(f"127.0.0.1:{port}") as plain:
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)


async def test_http_server_speaks_tls_with_the_configured_certificate(certificate):
    cert_file, key_file = certificate
    settings = config.load(config.CommonSettings, environ={}, tls_cert_file=str(cert_file), tls_key_file=str(key_file))
    app = web.Application()

    async def health(_request: web.Request) -> web.Response:
        return web.Response(text="OK")

    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=channels.ssl_context(settings))
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        trusted = ssl.create_default_context(cafile=str(cert_file))
        async with aiohttp.ClientSession() as session:
            async with session.get(f"https://127.0.0.1:{port}/health", ssl=trusted) as response:
                assert await response.text() == "OK"
            with pytest.raises(aiohttp.ClientSSLError):  # a client without the CA refuses the certificate
                await session.get(f"https://127.0.0.1:{port}/health")
    finally:
        await runner.cleanup()


def test_half_a_certificate_is_refused(certificate):
    cert_file, _ = certificate
    settings = config.load(config.CommonSettings, environ={}, tls_cert_file=str(cert_file))
    with pytest.raises(ValueError, match="together"):
        channels.server_credentials(settings)
