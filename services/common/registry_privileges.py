"""One way for a service to ask the registry "may this principal do that?".

Every service that guards its objects with the registry's grants (serving's
endpoints and models, retrieval's schemas, monitoring's endpoints and monitors)
uses this client, so there is one cache policy and one invalidation rule:

- an answer (allowed or denied) is reused for `cache_s` seconds, so a hot path
  does not pay a registry round trip per call; concurrent callers share one
  question, and an expired "allowed" keeps serving while a fresh answer is
  fetched in the background;
- a registry event that can change an answer (grants, owners, deleted or
  renamed models, registered or removed securables) drops the whole cache at
  once; a question that was already in flight when the event arrived does not
  put its (possibly stale) answer back.

The same client registers the top-level securables a service owns (endpoints,
monitors) on behalf of their creator.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import grpc
from tessera.events.v1 import registry_pb2 as events_pb
from tessera.registry.v1 import registry_pb2 as pb
from tessera.registry.v1 import registry_pb2_grpc

from services.common import channels
from services.common.auth import Principal, bearer
from services.common.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied, TesseraError, Unavailable

_log = logging.getLogger(__name__)

# Securable types and privileges by their registry names ("ENDPOINT", "EXECUTE").
SECURABLE_TYPES = ("CATALOG", "SCHEMA", "REGISTERED_MODEL", "EXPERIMENT", "ENDPOINT", "MONITOR", "DATASET")
PRIVILEGES = ("USE_CATALOG", "USE_SCHEMA", "CREATE_SCHEMA", "CREATE_MODEL", "EXECUTE", "MODIFY", "MANAGE", "SELECT")

# Registry events after which a cached answer may be wrong.
_INVALIDATING = frozenset(
    {
        events_pb.RegistryEvent.GRANT_CHANGED,
        events_pb.RegistryEvent.OWNER_CHANGED,
        events_pb.RegistryEvent.MODEL_DELETED,
        events_pb.RegistryEvent.MODEL_RENAMED,
        events_pb.RegistryEvent.SECURABLE_REGISTERED,
        events_pb.RegistryEvent.SECURABLE_UNREGISTERED,
    }
)

_CODES: dict[grpc.StatusCode, type[TesseraError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
}


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


@dataclass(frozen=True)
class _Answer:
    expires_at: float
    decision: Decision


def _securable_enum(securable_type: str) -> int:
    if securable_type not in SECURABLE_TYPES:
        raise ValueError(f"unknown securable type {securable_type!r}")
    return pb.SecurableType.Value(f"SECURABLE_TYPE_{securable_type}")


def _privilege_enum(privilege: str) -> int:
    if privilege not in PRIVILEGES:
        raise ValueError(f"unknown privilege {privilege!r}")
    return pb.Privilege.Value(f"PRIVILEGE_{privilege}")


def invalidates(event: events_pb.RegistryEvent) -> bool:
    """Whether `event` may change some privilege answer."""
    return event.type in _INVALIDATING


class RegistryPrivileges:
    """Privilege checks and securable registration against the registry's gRPC API.

    `enforce=False` (TESSERA_AUTH_MODE=none) allows everything without asking.
    """

    def __init__(
        self,
        address: str,
        service_token: str,
        *,
        enforce: bool = True,
        cache_s: float = 30.0,
        timeout_s: float = 5.0,
        max_entries: int = 100_000,
    ) -> None:
        self.address = address
        self.enforce = enforce
        self._metadata = bearer(service_token)
        self._cache_s = cache_s
        self._timeout = timeout_s
        self._max_entries = max_entries
        self._answers: dict[tuple[str, str, str, str], _Answer] = {}
        self._asking: dict[tuple[str, str, str, str], asyncio.Task[_Answer]] = {}
        # Bumped by every invalidation; an answer asked under an older generation is not kept.
        self._generation = 0
        self._channel: grpc.aio.Channel | None = None
        self._stub: registry_pb2_grpc.RegistryServiceStub | None = None

    # -- checks ---------------------------------------------------------------

    async def check(self, principal: Principal | str, securable_type: str, name: str, privilege: str) -> Decision:
        """The registry's answer for `principal` holding `privilege` on the securable.

        Raises NotFound when the securable does not exist and Unavailable when
        the registry cannot answer; never caches either.
        """
        if not self.enforce:
            return Decision(True, "authorization is off")
        who = principal.name if isinstance(principal, Principal) else principal
        key = (who, securable_type, name, privilege)
        cached = self._answers.get(key)
        if cached is not None and cached.expires_at < time.monotonic():
            if cached.decision.allowed:
                # Refresh in the background; the caller is still allowed meanwhile. A failed
                # refresh already dropped the entry, so its error is read here and not re-raised.
                self._ask(key).add_done_callback(lambda t: t.cancelled() or t.exception())
            else:
                cached = None
        if cached is None:
            cached = await asyncio.shield(self._ask(key))
        return cached.decision

    async def allowed(self, principal: Principal | str, securable_type: str, name: str, privilege: str) -> bool:
        return (await self.check(principal, securable_type, name, privilege)).allowed

    async def require(self, principal: Principal | str, securable_type: str, name: str, privilege: str) -> None:
        """Return if allowed; raise PermissionDenied (with the registry's reason) otherwise."""
        decision = await self.check(principal, securable_type, name, privilege)
        if not decision.allowed:
            raise PermissionDenied(f"permission denied: {decision.reason}")

    def _ask(self, key: tuple[str, str, str, str]) -> asyncio.Task[_Answer]:
        task = self._asking.get(key)
        if task is None:
            task = self._asking[key] = asyncio.create_task(self._question(key, self._generation))
            task.add_done_callback(lambda _t: self._asking.pop(key, None))
        return task

    async def _question(self, key: tuple[str, str, str, str], generation: int) -> _Answer:
        who, securable_type, name, privilege = key
        request = pb.CheckPrivilegeRequest(
            principal=who,
            securable_type=_securable_enum(securable_type),
            securable_full_name=name,
            privilege=_privilege_enum(privilege),
        )
        try:
            reply = await self._registry().CheckPrivilege(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            self._answers.pop(key, None)  # unknown: ask again next time rather than keep a stale answer
            raise self._translated(exc, f"{securable_type.lower()} {name}") from exc
        if reply.allowed:
            reason = reply.reason or f"{privilege} granted to {who}"
        else:
            reason = f"{who} lacks {privilege} on {securable_type.lower()} {name}"
            reason += f" ({reply.reason})" if reply.reason else ""
        answer = _Answer(time.monotonic() + self._cache_s, Decision(reply.allowed, reason))
        if generation == self._generation:
            if len(self._answers) >= self._max_entries:
                self._answers.clear()
            self._answers[key] = answer
        return answer

    # -- invalidation ---------------------------------------------------------

    def forget(self) -> None:
        """Drop every cached answer, including those of questions still in flight."""
        self._generation += 1
        self._answers.clear()

    def on_registry_event(self, event: events_pb.RegistryEvent) -> None:
        if invalidates(event):
            self.forget()

    # -- securables owned by a service ------------------------------------------

    async def register(self, securable_type: str, name: str, owner: str) -> None:
        """Create the securable with `owner` (ALREADY_EXISTS when the name is taken)."""
        await self._call(
            "RegisterSecurable",
            pb.RegisterSecurableRequest(
                securable_type=_securable_enum(securable_type), securable_full_name=name, owner=owner
            ),
            f"{securable_type.lower()} {name}",
        )
        self.forget()

    async def touch(self, securable_type: str, name: str, actor: str) -> None:
        """Announce a change of the object's definition to every replica (SECURABLE_CHANGED)."""
        await self._call(
            "TouchSecurable",
            pb.TouchSecurableRequest(
                securable_type=_securable_enum(securable_type), securable_full_name=name, actor=actor
            ),
            f"{securable_type.lower()} {name}",
        )

    async def unregister(self, securable_type: str, name: str, actor: str) -> None:
        """Remove the securable and its grants (a missing one is not an error)."""
        try:
            await self._call(
                "UnregisterSecurable",
                pb.UnregisterSecurableRequest(
                    securable_type=_securable_enum(securable_type), securable_full_name=name, actor=actor
                ),
                f"{securable_type.lower()} {name}",
            )
        except NotFound:
            pass
        self.forget()

    async def _call(self, method: str, request, what: str):
        try:
            return await getattr(self._registry(), method)(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise self._translated(exc, what) from exc

    # -- plumbing ---------------------------------------------------------------

    def _translated(self, exc: grpc.aio.AioRpcError, what: str) -> TesseraError:
        if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
            _log.error("the registry refused this service's call: %s", exc.details())
            return PermissionDenied(
                "the registry does not let this service act for callers"
                " (its service principal must be in TESSERA_REGISTRY_SERVICE_PRINCIPALS)"
            )
        kind = _CODES.get(exc.code())
        if kind is not None:
            return kind(f"registry: {what}: {exc.details() or exc.code().name}")
        return Unavailable(f"the registry at {self.address} did not answer: {exc.code().name}")

    def _registry(self) -> registry_pb2_grpc.RegistryServiceStub:
        # Created on first use, inside the running event loop that grpc.aio binds it to.
        if self._stub is None:
            self._channel = channels.channel(self.address)
            self._stub = registry_pb2_grpc.RegistryServiceStub(self._channel)
        return self._stub

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stub = None
