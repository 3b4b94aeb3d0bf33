"""Endpoint lifecycle: create, update, delete, load models, follow alias moves.

Config lives in PostgreSQL; what runs lives in `Deployment`s. A change loads
the new model versions first, then switches traffic, then drains and unloads
the old ones, so no request fails during the switch.
"""

from __future__ import annotations

import asyncio
import logging

from services.common.auth import Principal
from services.common.errors import NotFound, TesseraError
from services.serving.access import ExecuteChecker
from services.serving.catalog import ModelCatalog
from services.serving.deployment import Deployment, Route
from services.serving.entities import FAILED, LOADING, READY, EndpointSpec, EndpointView, StoredEndpoint
from services.serving.model_pool import ModelPool
from services.serving.store import EndpointStore

_log = logging.getLogger(__name__)


class EndpointControl:
    def __init__(
        self,
        store: EndpointStore,
        catalog: ModelCatalog,
        pool: ModelPool,
        access: ExecuteChecker,
        *,
        default_concurrency: int,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._pool = pool
        self._access = access
        self._default_concurrency = default_concurrency
        self._deployments: dict[str, Deployment] = {}

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Deploy every stored endpoint (in the background: serving starts before models load)."""
        after = ""
        while batch := await self._store.list(after=after, limit=500):
            for stored in batch:
                self._deploy(stored)
            after = batch[-1].spec.name

    async def stop(self) -> None:
        tasks = [d.task for d in self._deployments.values() if d.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._deployments.clear()
        await self._pool.close()

    # -- CRUD ------------------------------------------------------------------

    async def create(self, spec: EndpointSpec, principal: Principal, *, wait: bool = False) -> EndpointView:
        spec = spec.validated()
        for served in spec.served_models:
            await self._access.check(principal, served.model_name)
            await self._catalog.resolve(served.model_name, served.version, served.alias)
        stored = await self._store.create(spec, principal.name)
        deployment = self._deploy(stored)
        if wait:
            await deployment.loaded.wait()
        return deployment.view()

    async def update(self, spec: EndpointSpec, principal: Principal, *, wait: bool = False) -> EndpointView:
        spec = spec.validated()
        for served in spec.served_models:
            await self._access.check(principal, served.model_name)
            await self._catalog.resolve(served.model_name, served.version, served.alias)
        stored = await self._store.update(spec)
        old = self._deployments.get(spec.name)
        deployment = self._deploy(stored, previous=old)
        if wait:
            await deployment.loaded.wait()
        return deployment.view()

    async def delete(self, name: str, principal: Principal) -> None:
        await self._store.delete(name)
        deployment = self._deployments.pop(name, None)
        if deployment is not None:
            asyncio.create_task(self._retire(deployment), name=f"retire-{name}")

    async def get(self, name: str) -> EndpointView:
        deployment = self._deployments.get(name)
        if deployment is not None:
            return deployment.view()
        stored = await self._store.get(name)  # stored by another replica, not deployed here yet
        return EndpointView(stored, LOADING, "not deployed in this replica yet", ())

    async def list(self, after: str, limit: int) -> list[EndpointView]:
        views = []
        for stored in await self._store.list(after=after, limit=limit):
            deployment = self._deployments.get(stored.spec.name)
            views.append(deployment.view() if deployment else EndpointView(stored, LOADING, "not deployed", ()))
        return views

    def deployment(self, name: str) -> Deployment:
        deployment = self._deployments.get(name)
        if deployment is None:
            raise NotFound(f"endpoint {name!r} does not exist")
        return deployment

    def deployments(self) -> list[Deployment]:
        return list(self._deployments.values())

    # -- alias moves (registry events) -----------------------------------------

    async def on_alias_set(self, model_name: str, alias: str, version: int) -> None:
        for deployment in list(self._deployments.values()):
            for index, route in enumerate(deployment.routes):
                if route.spec.model_name == model_name and route.spec.alias == alias:
                    if route.model is None or route.model.version != version:
                        await self._move_route(deployment, index, version)

    async def _move_route(self, deployment: Deployment, index: int, version: int) -> None:
        async with deployment.lock:
            route = deployment.routes[index]
            _log.info("%s: %s@%s moved to v%d", deployment.name, route.spec.model_name, route.spec.alias, version)
            try:
                model = await self._pool.acquire(route.spec.model_name, version, deployment.holder)
            except TesseraError as exc:
                # Keep serving the old version: a failed load must not take the endpoint down.
                _log.warning("%s: v%d of %s did not load: %s", deployment.name, version, route.spec.model_name, exc)
                route.reason = f"alias moved to v{version}, which failed to load: {exc.message}"
                return
            # Lineage first: once a caller sees an answer from the new version, its edge exists.
            await self._record_lineage(route.spec.model_name, version, deployment.name)
            old = route.model
            deployment.routes[index] = Route(route.spec, model, READY)
            if old is not None and old is not model:
                await self._pool.release(old, deployment.holder)

    # -- deploying -------------------------------------------------------------

    def _deploy(self, stored: StoredEndpoint, previous: Deployment | None = None) -> Deployment:
        deployment = Deployment(stored, self._default_concurrency)
        if previous is None:
            self._deployments[stored.spec.name] = deployment
        deployment.task = asyncio.create_task(self._load(deployment, previous), name=f"deploy-{stored.spec.name}")
        return deployment

    async def _load(self, deployment: Deployment, previous: Deployment | None) -> None:
        try:
            await asyncio.gather(*(self._load_route(deployment, route) for route in deployment.routes))
        finally:
            deployment.loaded.set()
        if previous is not None:
            # The new routes are loaded: switch traffic, then drain and release the old ones.
            if self._deployments.get(deployment.name) is previous:
                self._deployments[deployment.name] = deployment
            await self._retire(previous)

    async def _load_route(self, deployment: Deployment, route: Route) -> None:
        spec = route.spec
        try:
            version = await self._catalog.resolve(spec.model_name, spec.version, spec.alias)
            route.model = await self._pool.acquire(spec.model_name, version, deployment.holder)
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

    async def _record_lineage(self, model_name: str, version: int, endpoint: str) -> None:
        try:
            await self._catalog.record_lineage(model_name, version, endpoint)
        except TesseraError as exc:  # lineage is bookkeeping: serving goes on without it
            _log.warning("lineage %s/%d -> %s not recorded: %s", model_name, version, endpoint, exc)

    async def _retire(self, deployment: Deployment) -> None:
        if deployment.task is not None and not deployment.task.done():
            deployment.task.cancel()
            await asyncio.gather(deployment.task, return_exceptions=True)
        async with deployment.lock:
            for route in deployment.routes:
                if route.model is not None:
                    await self._pool.release(route.model, deployment.holder)
