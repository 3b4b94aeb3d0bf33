"""One endpoint as it runs in this process: its routes to loaded models, traffic split and admission."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from services.common.errors import FailedPrecondition, ResourceExhausted, Unavailable
from services.serving.entities import (
    FAILED,
    LOADING,
    READY,
    EndpointView,
    ServedModelSpec,
    ServedModelStatus,
    StoredEndpoint,
)
from services.serving.model_pool import LoadedModel


@dataclass
class Route:
    spec: ServedModelSpec
    model: LoadedModel | None = None
    state: str = LOADING
    reason: str = ""

    def status(self) -> ServedModelStatus:
        return ServedModelStatus(
            self.spec,
            self.model.version if self.model else 0,
            self.state,
            self.reason,
            self.model.runtime.kind if self.model else "",
            self.model.base.model_name if self.model and self.model.base else "",
            self.model.base.version if self.model and self.model.base else 0,
        )


_generations = itertools.count(1)


class Deployment:
    def __init__(self, stored: StoredEndpoint, default_concurrency: int) -> None:
        self.stored = stored
        # Who holds the loaded models: unique per deployment, so an update's new routes and
        # the old ones it replaces never release each other's hold on a shared version.
        self.holder = f"{stored.spec.name}#{next(_generations)}"
        self.routes: list[Route] = [Route(spec) for spec in stored.spec.served_models]
        self.limit = stored.spec.max_concurrency or default_concurrency
        self.in_flight = 0
        self._slots = asyncio.Semaphore(self.limit)
        # Serialises changes to the routes (updates, alias moves) of this endpoint.
        self.lock = asyncio.Lock()
        self.loaded = asyncio.Event()
        self.task: asyncio.Task | None = None
        # Set once its models are released: an alias move must not load into a retired deployment.
        self.retired = False

    @property
    def name(self) -> str:
        return self.stored.spec.name

    def state(self) -> tuple[str, str]:
        states = [r.state for r in self.routes]
        if all(s == READY for s in states):
            return READY, ""
        if any(s == LOADING for s in states):
            return LOADING, "loading " + ", ".join(r.spec.model_name for r in self.routes if r.state == LOADING)
        if any(s == READY for s in states):
            return READY, "; ".join(f"{r.spec.model_name}: {r.reason}" for r in self.routes if r.state == FAILED)
        return FAILED, "; ".join(f"{r.spec.model_name}: {r.reason}" for r in self.routes)

    def view(self) -> EndpointView:
        state, reason = self.state()
        return EndpointView(self.stored, state, reason, tuple(r.status() for r in self.routes))

    def pick(self) -> Route:
        """A ready route, by traffic share; a route not ready gives its share to the others."""
        ready = [r for r in self.routes if r.state == READY and r.model is not None]
        if not ready:
            state, reason = self.state()
            if state == FAILED:
                raise FailedPrecondition(f"endpoint {self.name!r} failed to load: {reason}")
            raise Unavailable(f"endpoint {self.name!r} is not ready yet ({reason or state})")
        if len(ready) == 1:
            return ready[0]
        weights = [max(r.spec.traffic_percent, 0) for r in ready]
        if sum(weights) == 0:
            return random.choice(ready)
        return random.choices(ready, weights=weights)[0]

    @contextlib.contextmanager
    def lease(self) -> Iterator[LoadedModel]:
        """Pick a route and lease its model in one step: no await between, so it cannot be unloaded in between."""
        model = self.pick().model
        with model.lease():
            yield model

    def fallbacks(self, served: LoadedModel) -> list[LoadedModel]:
        """The ready fallback-only routes (0% of the traffic), in order: tried when `served` is unavailable."""
        return [
            r.model
            for r in self.routes
            if r.spec.traffic_percent == 0 and r.state == READY and r.model is not None and r.model is not served
        ]

    def kind(self) -> str | None:
        """The runtime kind (LLM or TENSOR) when every loaded model has the same one."""
        kinds = {r.model.runtime.kind for r in self.routes if r.model is not None}
        return kinds.pop() if len(kinds) == 1 else None

    @contextlib.asynccontextmanager
    async def admit(self, *, wait: bool) -> AsyncIterator[None]:
        """Hold one of the endpoint's concurrency slots; without `wait`, fail at once when none is free."""
        if self._slots.locked() and not wait:
            raise ResourceExhausted(
                f"endpoint {self.name!r} is at its concurrency limit ({self.limit} requests in flight)"
            )
        async with self._slots:
            self.in_flight += 1
            try:
                yield
            finally:
                self.in_flight -= 1
