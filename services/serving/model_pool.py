"""Loaded model versions, shared by the endpoints that serve them, unloaded once drained.

A version is loaded once however many endpoints use it; each request holds a
lease on the version it runs on, so an endpoint that moves away (alias moved,
endpoint updated or deleted) unloads the old version only after the requests
still on it have finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import Gauge

from services.common.errors import FailedPrecondition, Unavailable
from services.serving.catalog import ModelCatalog
from services.serving.entities import EngineSpec, ResolvedVersion
from services.serving.llm_engine import Adapter
from services.serving.runtimes.base import ModelRuntime, RuntimeFactory
from services.serving.runtimes.llm import AdapterRuntime, LlmRuntime, adapter_rank

_log = logging.getLogger(__name__)

_adapter_ids = itertools.count(1)

LOADED = Gauge("tessera_serving_loaded_models", "Model versions loaded", ["runtime"])


class LoadedModel:
    def __init__(
        self,
        model_name: str,
        version: int,
        runtime: ModelRuntime,
        content_id: str = "",
        *,
        key: str = "",
        base: LoadedModel | None = None,
    ) -> None:
        self.model_name = model_name
        self.version = version
        # The version's content id (what an alias move compares); `key` is the pool's, which adds
        # the engine settings and, for an adapter, its base.
        self.content_id = content_id or f"{model_name}/{version}"
        self.key = key or self.content_id
        self.runtime = runtime
        # A LoRA adapter's base version, loaded (with LoRA on) for as long as the adapter is.
        self.base = base
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
        max_loras: int = 4,
        max_lora_rank: int = 16,
    ) -> None:
        self._catalog = catalog
        self._build = build_runtime
        # External models (services/serving/external.py) have no files: their runtime talks to a provider.
        self._external = external or (lambda _version: None)
        self._drain_timeout = drain_timeout_s
        # LoRA limits of an adapter's engine when its served model sets none.
        self._max_loras, self._max_lora_rank = max_loras, max_lora_rank
        # Keyed by content id: a re-created model with a reused name and version is another model.
        self._models: dict[str, LoadedModel] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def acquire(self, version: ResolvedVersion, user: str, engine: EngineSpec | None = None) -> LoadedModel:
        """The loaded version, loading it (files fetched from the registry) if nobody has yet.

        Engines are keyed by (version, engine settings): equal settings share one engine, different
        ones get their own. A LoRA adapter version loads its base version's engine with LoRA on.
        """
        engine = engine or EngineSpec()
        if version.is_adapter:
            return await self._acquire_adapter(version, user, engine)
        key = _key(version.content_id, engine)
        async with self._locks.setdefault(key, asyncio.Lock()):
            model = self._models.get(key)
            if model is None:
                runtime = self._external(version)
                if runtime is not None and not engine.is_default():
                    raise FailedPrecondition(f"{version.model_name} is an external model: it takes no engine settings")
                if runtime is None:
                    folder: Path = await self._catalog.fetch(version)
                    runtime = self._build(folder) if engine.is_default() else self._build(folder, engine)
                    if hasattr(runtime, "assign_version"):  # agents name their version in lineage and logs
                        runtime.assign_version(version.model_name, version.version)
                    _log.info(
                        "loading %s v%d (%s%s) from %s",
                        version.model_name,
                        version.version,
                        runtime.kind,
                        "" if engine.is_default() else f", engine {engine.to_json()}",
                        folder,
                    )
                await runtime.start()
                model = self._models[key] = LoadedModel(
                    version.model_name, version.version, runtime, version.content_id, key=key
                )
                LOADED.labels(runtime.kind).inc()
            model.users.add(user)
            return model

    async def _acquire_adapter(self, version: ResolvedVersion, user: str, engine: EngineSpec) -> LoadedModel:
        """A LoRA adapter on its base version's engine (loaded, or reused from another endpoint)."""
        engine = dataclasses.replace(
            engine,
            max_loras=engine.max_loras or self._max_loras,
            max_lora_rank=engine.max_lora_rank or self._max_lora_rank,
        )
        key = _key(f"{version.content_id}@{version.base_model}/{version.base_version}", engine)
        async with self._locks.setdefault(key, asyncio.Lock()):
            model = self._models.get(key)
            if model is None:
                folder: Path = await self._catalog.fetch(version)
                rank = adapter_rank(folder)
                if rank > engine.max_lora_rank:
                    raise FailedPrecondition(
                        f"{version.model_name} v{version.version}: the adapter's rank {rank} is over the engine's"
                        f" max_lora_rank {engine.max_lora_rank}; set engine.max_lora_rank >= {rank}"
                    )
                base_version = await self._catalog.resolve(version.base_model, version.base_version, None)
                if base_version.is_adapter:
                    raise FailedPrecondition(
                        f"{version.model_name} v{version.version}: its base {version.base_model}"
                        f" v{version.base_version} is itself an adapter"
                    )
                holder = f"adapter:{key}"
                base = await self.acquire(base_version, holder, engine)
                if not isinstance(base.runtime, LlmRuntime):
                    await self.release(base, holder)
                    raise FailedPrecondition(
                        f"{version.model_name} v{version.version}: its base {version.base_model}"
                        f" v{version.base_version} is not an LLM"
                    )
                # An id never reused in this process: vLLM caches adapters by it.
                adapter = Adapter(f"{version.model_name}/{version.version}", next(_adapter_ids), str(folder))
                _log.info(
                    "serving adapter %s v%d (rank %d, LoRA id %d) on %s v%d",
                    version.model_name,
                    version.version,
                    rank,
                    adapter.adapter_id,
                    base.model_name,
                    base.version,
                )
                model = self._models[key] = LoadedModel(
                    version.model_name,
                    version.version,
                    AdapterRuntime(base.runtime, adapter),
                    version.content_id,
                    key=key,
                    base=base,
                )
                LOADED.labels("lora").inc()
            model.users.add(user)
            return model

    def loaded(self) -> int:
        return len(self._models)

    def models(self) -> list[LoadedModel]:
        """What is loaded now: engines (one per version and engine settings) and the adapters on them."""
        return list(self._models.values())

    async def release(self, model: LoadedModel, user: str) -> None:
        """Drop `user`'s hold; the last one out unloads the version after its requests drained."""
        key = model.key
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
            LOADED.labels(_kind(model)).dec()
            await model.runtime.stop()
            _log.info("unloaded %s v%d", model.model_name, model.version)
        if model.base is not None:
            await self.release(model.base, f"adapter:{key}")

    async def close(self) -> None:
        for model in list(self._models.values()):
            model.unloaded = True
            await model.runtime.stop()
            LOADED.labels(_kind(model)).dec()
        self._models.clear()


def _kind(model: LoadedModel) -> str:
    return "lora" if model.base is not None else model.runtime.kind


def _key(content_id: str, engine: EngineSpec) -> str:
    if engine.is_default():
        return content_id
    return f"{content_id}|{json.dumps(engine.to_json(), sort_keys=True)}"
