"""Loaded model versions, shared by the endpoints that serve them, unloaded once drained.

A version is loaded once however many endpoints use it; each request holds a
lease on the version it runs on, so an endpoint that moves away (alias moved,
endpoint updated or deleted) unloads the old version only after the requests
still on it have finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import Gauge

from services.common.errors import Unavailable
from services.serving.catalog import ModelCatalog
from services.serving.entities import ResolvedVersion
from services.serving.runtimes.base import ModelRuntime, RuntimeFactory

_log = logging.getLogger(__name__)

LOADED = Gauge("tessera_serving_loaded_models", "Model versions loaded", ["runtime"])


class LoadedModel:
    def __init__(self, model_name: str, version: int, runtime: ModelRuntime, content_id: str = "") -> None:
        self.model_name = model_name
        self.version = version
        self.content_id = content_id or f"{model_name}/{version}"
        self.runtime = runtime
        self.users: set[str] = set()
        self.in_flight = 0
        self.unloaded = False
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def lease(self) -> Iterator[ModelRuntime]:
        """Keep the version loaded while the caller uses it (take it right after picking, with no await between)."""
        if self.unloaded:
            raise Unavailable(f"{self.model_name} v{self.version} was just unloaded; retry")
        self.in_flight += 1
        self._idle.clear()
        try:
            yield self.runtime
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False


class ModelPool:
    def __init__(
        self,
        catalog: ModelCatalog,
        build_runtime: RuntimeFactory,
        *,
        drain_timeout_s: float,
        external: Callable[[ResolvedVersion], ModelRuntime | None] | None = None,
    ) -> None:
        self._catalog = catalog
        self._build = build_runtime
        # External models (services/serving/external.py) have no files: their runtime talks to a provider.
        self._external = external or (lambda _version: None)
        self._drain_timeout = drain_timeout_s
        # Keyed by content id: a re-created model with a reused name and version is another model.
        self._models: dict[str, LoadedModel] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def acquire(self, version: ResolvedVersion, user: str) -> LoadedModel:
        """The loaded version, loading it (files fetched from the registry) if nobody has yet."""
        key = version.content_id
        async with self._locks.setdefault(key, asyncio.Lock()):
            model = self._models.get(key)
            if model is None:
                runtime = self._external(version)
                if runtime is None:
                    folder: Path = await self._catalog.fetch(version)
                    runtime = self._build(folder)
                    if hasattr(runtime, "assign_version"):  # agents name their version in lineage and logs
                        runtime.assign_version(version.model_name, version.version)
                    _log.info("loading %s v%d (%s) from %s", version.model_name, version.version, runtime.kind, folder)
                await runtime.start()
                model = self._models[key] = LoadedModel(version.model_name, version.version, runtime, key)
                LOADED.labels(runtime.kind).inc()
            model.users.add(user)
            return model

    def loaded(self) -> int:
        return len(self._models)

    async def release(self, model: LoadedModel, user: str) -> None:
        """Drop `user`'s hold; the last one out unloads the version after its requests drained."""
        key = model.content_id
        async with self._locks.setdefault(key, asyncio.Lock()):
            model.users.discard(user)
            if model.users:
                return
            if not await model.wait_idle(self._drain_timeout):
                _log.warning(
                    "%s v%d: %d request(s) still running after %.0fs; unloading anyway",
                    model.model_name,
                    model.version,
                    model.in_flight,
                    self._drain_timeout,
                )
            if model.users:  # re-acquired while draining
                return
            self._models.pop(key, None)
            model.unloaded = True
            LOADED.labels(model.runtime.kind).dec()
            await model.runtime.stop()
            _log.info("unloaded %s v%d", model.model_name, model.version)

    async def close(self) -> None:
        for model in list(self._models.values()):
            model.unloaded = True
            await model.runtime.stop()
            LOADED.labels(model.runtime.kind).dec()
        self._models.clear()
