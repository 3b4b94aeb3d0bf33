"""Bearer-token authentication: `authorization: Bearer <token>` metadata -> a Principal.

Tokens are configured per deployment (`TESSERA_AUTH_TOKENS=token=principal,...`).
The gRPC pipeline resolves the caller before the handler runs and makes the
principal available through `current_principal()`; a missing or unknown token
is UNAUTHENTICATED. Health checks and reflection need no token.
"""

from __future__ import annotations

import contextvars
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from services.common.errors import Unauthenticated

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


class TokenAuthenticator:
    """Maps bearer tokens to principals; `enabled=False` admits everyone as anonymous."""

    def __init__(self, tokens: Mapping[str, str], enabled: bool = True) -> None:
        self._tokens = dict(tokens)
        self.enabled = enabled

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
        for known, name in self._tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return Principal(name, token)
        raise Unauthenticated("invalid bearer token")

    @staticmethod
    def is_public(method: str) -> bool:
        return method.startswith(PUBLIC_METHOD_PREFIXES)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata for a client: `stub.Method(req, metadata=bearer(token))`."""
    return (("authorization", f"Bearer {token}"),)
