"""Bearer-token authentication: `authorization: Bearer <token>` metadata -> a Principal.

Tokens are configured per deployment (`TESSERA_AUTH_TOKENS=token=principal,...`);
signed JWTs (RS256/ES256) are accepted beside them when a JWKS file is configured
(`TESSERA_AUTH_JWKS_FILE`, with optional issuer and audience): the principal is
the configured claim (`sub` by default).
The gRPC pipeline resolves the caller before the handler runs and makes the
principal available through `current_principal()`; a missing or unknown token
is UNAUTHENTICATED. Health checks and reflection need no token.
"""

from __future__ import annotations

import contextvars
import hmac
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import jwt

from services.common.errors import Unauthenticated

if TYPE_CHECKING:
    from services.common.config import CommonSettings

# Asymmetric algorithms only: a shared-secret HS256 key in a JWKS file would let anyone who can
# read the file mint tokens, and `none` is never acceptable.
JWT_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256")
# A token is a few hundred bytes; anything far larger is refused before it is parsed.
MAX_TOKEN_BYTES = 16 * 1024
# A principal name is a claim the issuer chose: bounded like any client value.
MAX_PRINCIPAL_CHARS = 256

ANONYMOUS = "anonymous"

# Methods any caller may use: probes and tooling must work without credentials.
PUBLIC_METHOD_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


@dataclass(frozen=True)
class Principal:
    name: str
    # The raw token, so a service can act on the caller's behalf when it calls another service;
    # kept out of repr so a logged principal never leaks it.
    token: str = field(default="", repr=False)

    @property
    def is_anonymous(self) -> bool:
        return self.name == ANONYMOUS


_current: contextvars.ContextVar[Principal] = contextvars.ContextVar("tessera_principal", default=Principal(ANONYMOUS))


def current_principal() -> Principal:
    """The caller of the RPC being handled (anonymous outside an RPC or with auth disabled)."""
    return _current.get()


def set_principal(principal: Principal) -> contextvars.Token:
    return _current.set(principal)


def reset_principal(token: contextvars.Token) -> None:
    _current.reset(token)


class JwtVerifier:
    """Verifies signed JWTs against the keys of a JWKS file, re-read when the file changes."""

    def __init__(self, jwks_file: str, *, issuer: str = "", audience: str = "", principal_claim: str = "sub") -> None:
        self._path = jwks_file
        self._issuer = issuer or None
        self._audience = audience or None
        self._claim = principal_claim
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._load()  # a missing or broken file fails at start-up, not at the first call

    def _load(self) -> dict[str, jwt.PyJWK]:
        stat = os.stat(self._path)
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return self._keys
        with self._lock:
            if stamp != self._stamp:
                with open(self._path, encoding="utf-8") as handle:
                    key_set = jwt.PyJWKSet.from_json(handle.read())
                keys = {key.key_id or "": key for key in key_set.keys}
                if not keys:
                    raise ValueError(f"{self._path}: the JWKS holds no usable key")
                self._keys, self._stamp = keys, stamp
        return self._keys

    def verify(self, token: str) -> str:
        """The principal a valid token names; Unauthenticated for anything else."""
        try:
            header = jwt.get_unverified_header(token)
            keys = self._load()
            kid = header.get("kid") or ""
            key = keys.get(kid) if kid or len(keys) != 1 else next(iter(keys.values()))
            if key is None:
                raise Unauthenticated("bearer token signed by an unknown key")
            claims = jwt.decode(
                token,
                key,
                algorithms=list(JWT_ALGORITHMS),
                issuer=self._issuer,
                audience=self._audience,
                options={"require": ["exp"], "verify_aud": self._audience is not None},
                leeway=30,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("bearer token expired") from None
        except (jwt.InvalidTokenError, jwt.PyJWKError) as exc:
            raise Unauthenticated(f"invalid bearer token: {exc}") from None
        except OSError:
            raise Unauthenticated("bearer token cannot be verified: the key set is unreadable") from None
        principal = claims.get(self._claim)
        if not isinstance(principal, str) or not principal or len(principal) > MAX_PRINCIPAL_CHARS:
            raise Unauthenticated(f"bearer token has no usable {self._claim!r} claim")
        return principal


class TokenAuthenticator:
    """Maps bearer tokens to principals; `enabled=False` admits everyone as anonymous."""

    def __init__(
        self, tokens: Mapping[str, str], enabled: bool = True, jwt_verifier: JwtVerifier | None = None
    ) -> None:
        self._tokens = dict(tokens)
        self.enabled = enabled
        self._jwt = jwt_verifier

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> TokenAuthenticator:
        verifier = None
        if settings.auth_jwks_file:
            verifier = JwtVerifier(
                settings.auth_jwks_file,
                issuer=settings.auth_jwt_issuer,
                audience=settings.auth_jwt_audience,
                principal_claim=settings.auth_jwt_principal_claim,
            )
        return cls(settings.token_table(), enabled=settings.auth_mode != "none", jwt_verifier=verifier)

    def authenticate(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Principal:
        if not self.enabled:
            return Principal(ANONYMOUS)
        header = ""
        for key, value in metadata or ():
            if key.lower() == "authorization":
                header = value.decode() if isinstance(value, bytes) else value
                break
        if not header:
            raise Unauthenticated("missing bearer token: send metadata 'authorization: Bearer <token>'")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("authorization metadata must be 'Bearer <token>'")
        return self.principal_for_token(token.strip())

    def principal_for_token(self, token: str) -> Principal:
        """Resolve a bare token (Kafka requests carry one in the payload)."""
        if not self.enabled:
            return Principal(ANONYMOUS)
        if len(token) > MAX_TOKEN_BYTES:
            raise Unauthenticated("bearer token too long")
        for known, name in self._tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return Principal(name, token)
        # A JWT is three base64url parts; a static token that happens to contain two dots was tried above.
        if self._jwt is not None and token.count(".") == 2:
            return Principal(self._jwt.verify(token), token)
        raise Unauthenticated("invalid bearer token")

    @staticmethod
    def is_public(method: str) -> bool:
        return method.startswith(PUBLIC_METHOD_PREFIXES)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata for a client: `stub.Method(req, metadata=bearer(token))`."""
    return (("authorization", f"Bearer {token}"),)
