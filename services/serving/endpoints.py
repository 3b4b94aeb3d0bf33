"""Endpoint lifecycle: create, update, delete, load models, follow alias moves, stay in step with other replicas.

Config lives in PostgreSQL; what runs lives in `Deployment`s. Each endpoint is
a registry securable owned by its creator: MANAGE changes it, EXECUTE calls it,
and any of EXECUTE/MANAGE/SELECT shows it. Every change goes through the
registry (RegisterSecurable/TouchSecurable/UnregisterSecurable), whose events
make every replica, this one included, reload the endpoint from the store
(`apply`, idempotent). A change loads the new model versions first, then
switches traffic, then drains and unloads the old ones, so no request fails
during the switch; changes to one endpoint are serialised.
"""

from __future__ import annotations

import asyncio
import logging

from services.common.auth import Principal
from services.common.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied, TesseraError
from services.common.paging import Page, decode_token, page_of, page_size
from services.common.registry_privileges import RegistryPrivileges
from services.serving.catalog import ModelCatalog
from services.serving.deployment import Deployment, Route
from services.serving.entities import (
    FAILED,
    LOADING,
    READY,
    EndpointSpec,
    EndpointView,
    EngineBounds,
    ResolvedVersion,
    ServedModelSpec,
    StoredEndpoint,
    check_endpoint_name,
    is_valid_endpoint_name,
)
from services.serving.external import ExternalProviders
from services.serving.model_pool import LoadedModel, ModelPool
from services.serving.store import EndpointStore

_log = logging.getLogger(__name__)

ENDPOINT = "ENDPOINT"
# Any of these shows an endpoint in Get/List/ModelReady.
_SHOWING = ("EXECUTE", "MANAGE", "SELECT")
# Privilege questions a list call has in flight at once (answers are cached; the first page is the slow one).
_CHECKS_AT_ONCE = 50


class EndpointControl:
    def __init__(
        self,
        store: EndpointStore,
        catalog: ModelCatalog,
        pool: ModelPool,
        privileges: RegistryPrivileges,
        *,
        default_concurrency: int,
        external: ExternalProviders | None = None,
        engine_bounds: EngineBounds | None = None,
    ) -> None:
        self._store = store
        self._engine_bounds = engine_bounds
        self._external = external
        self._catalog = catalog
        self._pool = pool
        self._privileges = privileges
        self._default_concurrency = default_concurrency
        # What serves each endpoint now, and the replacement still loading for it.
        self._deployments: dict[str, Deployment] = {}
        self._pending: dict[str, Deployment] = {}
        # One change at a time per endpoint: store write and deployment stay in step.
        self._locks: dict[str, asyncio.Lock] = {}
        self._retiring: set[asyncio.Task] = set()
        self._adopting: asyncio.Task | None = None

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Deploy every stored endpoint (in the background: serving starts before models load)."""
        await self.reconcile()
        self._adopting = asyncio.create_task(self._adopt_unregistered(), name="adopt-endpoints")

    async def _adopt_unregistered(self) -> None:
        """Register endpoints stored before endpoints were securables, owned by their creator."""
        after = ""
        while batch := await self._store.list(after=after, limit=500):
            for stored in batch:
                name = stored.spec.name
                try:
                    await self._privileges.check(stored.created_by, ENDPOINT, name, "MANAGE")
                    continue  # known to the registry
                except NotFound:
                    pass
                except TesseraError as exc:
                    _log.warning("could not ask the registry about endpoint %s: %s", name, exc)
                    continue
                try:
                    await self._privileges.register(ENDPOINT, name, stored.created_by)
                    _log.info("registered endpoint %s (owner %s) with the registry", name, stored.created_by)
                except AlreadyExists:
                    continue
                except TesseraError as exc:
                    _log.warning("could not register endpoint %s: %s", name, exc)
                    continue
                async with self._lock(name):
                    try:
                        await self._store.get(name)
                    except NotFound:  # deleted meanwhile: no securable may outlive its endpoint
                        await self._privileges.unregister(ENDPOINT, name, stored.created_by)
            after = batch[-1].spec.name

    async def stop(self) -> None:
        if self._adopting is not None:
            self._adopting.cancel()
        deployments = [*self._deployments.values(), *self._pending.values()]
        tasks = [d.task for d in deployments if d.task is not None]
        for task in tasks:
            task.cancel()
        adopting = [self._adopting] if self._adopting is not None else []
        await asyncio.gather(*tasks, *self._retiring, *adopting, return_exceptions=True)
        self._deployments.clear()
        self._pending.clear()
        await self._pool.close()

    async def reconcile(self) -> None:
        """Make what runs here match the store (start-up, and a safety net for a lost registry event)."""
        stored_names: set[str] = set()
        after = ""
        while batch := await self._store.list(after=after, limit=500):
            for stored in batch:
                stored_names.add(stored.spec.name)
                async with self._lock(stored.spec.name):
                    self._apply_stored(stored)
            after = batch[-1].spec.name
        for name in set(self._deployments) - stored_names:
            await self.apply(name)  # re-read under the lock: it may have been created meanwhile

    async def apply(self, name: str) -> None:
        """Reload one endpoint from the store: deploy, re-point or remove it (a registry event said it changed)."""
        if not is_valid_endpoint_name(name):
            return
        async with self._lock(name):
            try:
                stored = await self._store.get(name)
            except NotFound:
                self._remove(name)
                return
            self._apply_stored(stored)

    # -- CRUD ------------------------------------------------------------------

    async def create(self, spec: EndpointSpec, principal: Principal, *, wait: bool = False) -> EndpointView:
        spec = spec.validated()
        await self._check_models(spec, principal)
        async with self._lock(spec.name):
            try:
                await self._privileges.register(ENDPOINT, spec.name, principal.name)
            except AlreadyExists as exc:
                raise AlreadyExists(f"endpoint {spec.name!r} already exists") from exc
            try:
                stored = await self._store.create(spec, principal.name)
            except BaseException:
                await asyncio.shield(self._privileges.unregister(ENDPOINT, spec.name, principal.name))
                raise
            deployment = self._apply_stored(stored)
        # Replicas that saw the registration before the row was committed reload now.
        await self._announce(spec.name, principal)
        if wait:
            await deployment.loaded.wait()
        return deployment.view()

    async def update(self, spec: EndpointSpec, principal: Principal, *, wait: bool = False) -> EndpointView:
        spec = spec.validated()
        await self._privileges.require(principal, ENDPOINT, spec.name, "MANAGE")
        await self._check_models(spec, principal)
        async with self._lock(spec.name):
            stored = await self._store.update(spec)
            deployment = self._apply_stored(stored)
        await self._announce(spec.name, principal)
        if wait:
            await deployment.loaded.wait()
        return deployment.view()

    async def delete(self, name: str, principal: Principal) -> None:
        check_endpoint_name(name)
        await self._privileges.require(principal, ENDPOINT, name, "MANAGE")
        async with self._lock(name):
            removed = await self._store.delete(name)
            # Also on a retry after a failed unregister: the row is gone, the securable must go too.
            await self._privileges.unregister(ENDPOINT, name, principal.name)
            self._remove(name)
        if not removed:
            raise NotFound(f"endpoint {name!r} does not exist")

    async def get(self, name: str, principal: Principal) -> EndpointView:
        check_endpoint_name(name)
        if not await self._shown(name, principal):
            raise NotFound(f"endpoint {name!r} does not exist")
        deployment = self._deployments.get(name)
        if deployment is not None:
            return deployment.view()
        stored = await self._store.get(name)  # stored by another replica, not deployed here yet
        return EndpointView(stored, LOADING, "not deployed in this replica yet", ())

    async def list(self, principal: Principal, size: int, token: str) -> Page[EndpointView]:
        """The endpoints `principal` may see, by name; hidden rows never cut a page short."""
        size = page_size(size)
        after = decode_token(token).get("after", "")
        if not isinstance(after, str):
            raise InvalidArgument("invalid page token", field="page_token")
        shown: list[StoredEndpoint] = []
        while len(shown) <= size:
            batch = await self._store.list(after=after, limit=size + 1)
            for start in range(0, len(batch), _CHECKS_AT_ONCE):
                part = batch[start : start + _CHECKS_AT_ONCE]
                visible = await asyncio.gather(*(self._shown(s.spec.name, principal) for s in part))
                shown += [stored for stored, ok in zip(part, visible, strict=True) if ok]
            if len(batch) <= size:
                break
            after = batch[-1].spec.name
        page = page_of(shown[: size + 1], size, lambda s: {"after": s.spec.name})
        return Page([self._view(s) for s in page.items], page.next_token)

    def _view(self, stored: StoredEndpoint) -> EndpointView:
        deployment = self._deployments.get(stored.spec.name)
        return deployment.view() if deployment else EndpointView(stored, LOADING, "not deployed", ())

    # -- lookups for callers -----------------------------------------------------

    async def callable(self, name: str, principal: Principal) -> Deployment:
        """The deployment `principal` may call (EXECUTE on the endpoint)."""
        check_endpoint_name(name)
        await self._privileges.require(principal, ENDPOINT, name, "EXECUTE")
        return self.deployment(name)

    async def may_call(self, name: str, principal: Principal) -> bool:
        """Whether `principal` holds EXECUTE on the endpoint (False for unknown or out-of-bounds names)."""
        if not is_valid_endpoint_name(name):
            return False
        try:
            return await self._privileges.allowed(principal, ENDPOINT, name, "EXECUTE")
        except NotFound:
            return False

    async def shown(self, name: str, principal: Principal) -> Deployment:
        """The deployment `principal` may see (any of EXECUTE/MANAGE/SELECT), NOT_FOUND otherwise."""
        check_endpoint_name(name)
        if not await self._shown(name, principal):
            raise NotFound(f"endpoint {name!r} does not exist")
        return self.deployment(name)

    def deployment(self, name: str) -> Deployment:
        """What serves `name` here, with no privilege check (callers check first)."""
        deployment = self._deployments.get(name)
        if deployment is None:
            raise NotFound(f"endpoint {name!r} does not exist")
        return deployment

    def loaded_models(self) -> int:
        return self._pool.loaded()

    def loaded(self) -> list[LoadedModel]:
        """The loaded models (engines and adapters), for status and tests."""
        return self._pool.models()

    # -- alias moves (registry events) -----------------------------------------

    async def refresh_aliases(self, model_name: str) -> None:
        """Re-resolve every route that follows an alias of `model_name` (an event is a hint, never the answer)."""
        for deployment in [*self._deployments.values(), *self._pending.values()]:
            for index, route in enumerate(deployment.routes):
                if route.spec.model_name == model_name and route.spec.alias:
                    await self._move_route(deployment, index)

    async def _move_route(self, deployment: Deployment, index: int) -> None:
        async with deployment.lock:
            route = deployment.routes[index]
            if deployment.retired or route.state == LOADING:
                return  # a loading route resolves its alias once it has loaded
            spec = route.spec
            try:
                resolved = await self._resolve(deployment, spec)
            except TesseraError as exc:
                # Keep serving what runs: an alias on a version that is not READY is not followed.
                route.reason = f"alias {spec.alias} not followed: {exc.message}"
                _log.warning("%s: %s", deployment.name, route.reason)
                return
            if route.model is not None and route.model.content_id == resolved.content_id:
                return
            _log.info("%s: %s@%s moved to v%d", deployment.name, spec.model_name, spec.alias, resolved.version)
            try:
                model = await self._pool.acquire(resolved, deployment.holder, spec.engine)
            except Exception as exc:  # noqa: BLE001 - a failed load must not take the endpoint down
                message = exc.message if isinstance(exc, TesseraError) else type(exc).__name__
                _log.warning("%s: v%d of %s did not load: %s", deployment.name, resolved.version, spec.model_name, exc)
                route.reason = f"alias moved to v{resolved.version}, which failed to load: {message}"
                return
            if deployment.retired:
                await self._pool.release(model, deployment.holder)
                return
            # Lineage first: once a caller sees an answer from the new version, its edge exists.
            await self._record_lineage(spec.model_name, resolved.version, deployment.name)
            old = route.model
            deployment.routes[index] = Route(spec, model, READY)
            if old is not None and old is not model:
                await self._pool.release(old, deployment.holder)

    # -- deploying -------------------------------------------------------------

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def _apply_stored(self, stored: StoredEndpoint) -> Deployment:
        """Run `stored` (caller holds the endpoint's lock); a no-op when it already runs or loads."""
        name = stored.spec.name
        latest = self._pending.get(name) or self._deployments.get(name)
        if latest is not None and latest.stored == stored:
            return latest
        deployment = Deployment(stored, self._default_concurrency)
        superseded = self._pending.pop(name, None)
        if superseded is not None:
            self._retire_later(superseded)
        if name in self._deployments:
            self._pending[name] = deployment  # the running one serves until this one has loaded
        else:
            self._deployments[name] = deployment
        deployment.task = asyncio.create_task(self._load(deployment), name=f"deploy-{name}")
        return deployment

    def _remove(self, name: str) -> None:
        for deployment in (self._pending.pop(name, None), self._deployments.pop(name, None)):
            if deployment is not None:
                self._retire_later(deployment)

    async def _load(self, deployment: Deployment) -> None:
        try:
            await asyncio.gather(*(self._load_route(deployment, route) for route in deployment.routes))
            # An alias that moved while this deployment loaded is followed now.
            for index, route in enumerate(deployment.routes):
                if route.spec.alias and route.state == READY:
                    await self._move_route(deployment, index)
        finally:
            self._switch(deployment)
            deployment.loaded.set()

    def _switch(self, deployment: Deployment) -> None:
        """Move traffic to a loaded replacement (superseded or deleted ones are no longer pending)."""
        name = deployment.name
        if self._pending.get(name) is not deployment:
            return
        del self._pending[name]
        old = self._deployments.get(name)
        self._deployments[name] = deployment
        if old is not None:
            self._retire_later(old)

    async def _load_route(self, deployment: Deployment, route: Route) -> None:
        spec = route.spec
        try:
            resolved = await self._resolve(deployment, spec)
            route.model = await self._pool.acquire(resolved, deployment.holder, spec.engine)
            route.state = READY
        except asyncio.CancelledError:
            raise
        except TesseraError as exc:
            route.state, route.reason = FAILED, exc.message
            _log.warning("%s: %s %s failed to load: %s", deployment.name, spec.model_name, spec.selector, exc)
            return
        except Exception as exc:  # noqa: BLE001 - an engine that fails to start fails the route, not the service
            route.state, route.reason = FAILED, f"{type(exc).__name__}: {exc}"
            _log.exception("%s: %s %s failed to load", deployment.name, spec.model_name, spec.selector)
            return
        await self._record_lineage(spec.model_name, route.model.version, deployment.name)

    async def _resolve(self, deployment: Deployment, spec: ServedModelSpec) -> ResolvedVersion:
        """The version `spec` serves now. An alias can move to a LoRA adapter version on another base
        than the one checked when the endpoint was set up: the endpoint's creator must be allowed to
        use that base too (PERMISSION_DENIED otherwise: the alias is not followed)."""
        resolved = await self._catalog.resolve(spec.model_name, spec.version, spec.alias)
        if spec.alias and resolved.is_adapter:
            creator = deployment.stored.created_by
            if not await self._privileges.allowed(creator, "REGISTERED_MODEL", resolved.base_model, "EXECUTE"):
                raise PermissionDenied(
                    f"{creator}, who set up the endpoint, lacks EXECUTE on {resolved.base_model},"
                    f" the base of {spec.model_name} v{resolved.version}"
                )
        return resolved

    async def _record_lineage(self, model_name: str, version: int, endpoint: str) -> None:
        try:
            await self._catalog.record_lineage(model_name, version, endpoint)
        except TesseraError as exc:  # lineage is bookkeeping: serving goes on without it
            _log.warning("lineage %s/%d -> %s not recorded: %s", model_name, version, endpoint, exc)

    def _retire_later(self, deployment: Deployment) -> None:
        task = asyncio.create_task(self._retire(deployment), name=f"retire-{deployment.name}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _retire(self, deployment: Deployment) -> None:
        if deployment.retired:
            return
        deployment.retired = True
        if deployment.task is not None and not deployment.task.done():
            deployment.task.cancel()
            await asyncio.gather(deployment.task, return_exceptions=True)
        async with deployment.lock:
            for route in deployment.routes:
                if route.model is not None:
                    await self._pool.release(route.model, deployment.holder)
                    route.model = None

    # -- privileges -------------------------------------------------------------

    async def _check_models(self, spec: EndpointSpec, principal: Principal) -> None:
        """The caller may use every served model (and a LoRA adapter's base), each one resolves to a READY
        version, and engine settings stay within the operator's bounds."""
        for served in spec.served_models:
            if not served.engine.is_default():
                if self._engine_bounds is None:
                    raise InvalidArgument(
                        f"{served.model_name}: this serving process takes no engine settings", field="served_models"
                    )
                self._engine_bounds.check(served.engine, served.model_name)
        for served in spec.served_models:
            if ExternalProviders.is_external(served.model_name) and self._external is not None:
                self._external.require(principal, served.model_name)  # the operator's list, not the registry
            else:
                await self._privileges.require(principal, "REGISTERED_MODEL", served.model_name, "EXECUTE")
            resolved = await self._catalog.resolve(served.model_name, served.version, served.alias)
            if resolved.is_adapter:
                # The adapter's weights run under its base's: the caller must be allowed to use both.
                await self._privileges.require(principal, "REGISTERED_MODEL", resolved.base_model, "EXECUTE")
                await self._catalog.resolve(resolved.base_model, resolved.base_version, None)

    async def _shown(self, name: str, principal: Principal) -> bool:
        for privilege in _SHOWING:
            try:
                if await self._privileges.allowed(principal, ENDPOINT, name, privilege):
                    return True
            except NotFound:
                return False
        return False

    async def _announce(self, name: str, principal: Principal) -> None:
        try:
            await self._privileges.touch(ENDPOINT, name, principal.name)
        except TesseraError as exc:  # the change stands; other replicas catch up at their next reconcile
            _log.warning("endpoint %s changed but the registry was not told: %s", name, exc)
