"""EXECUTE checks through the catalog, remembered briefly per caller and model.

Every inference call is checked; asking the registry each time would put a
network round trip on every request, so an answer is reused for a few seconds
(and forgotten at once when the registry announces a grant change). Concurrent
calls share one question to the registry, and an expired "allowed" keeps
serving while a fresh answer is fetched in the background, so a burst of
traffic never waits on the registry all at once.
"""

from __future__ import annotations

import asyncio
import logging
import time

from services.common.auth import Principal
from services.common.errors import PermissionDenied, TesseraError
from services.serving.catalog import ModelCatalog

_log = logging.getLogger(__name__)


class ExecuteChecker:
    def __init__(self, catalog: ModelCatalog, *, enforce: bool, cache_s: float) -> None:
        self._catalog = catalog
        self._enforce = enforce
        self._cache_s = cache_s
        # (principal, model) -> (expires at, the denial or None when allowed)
        self._answers: dict[tuple[str, str], tuple[float, PermissionDenied | None]] = {}
        self._asking: dict[tuple[str, str], asyncio.Task] = {}

    async def check(self, principal: Principal, model_name: str) -> None:
        if not self._enforce:
            return
        key = (principal.name, model_name)
        cached = self._answers.get(key)
        if cached is not None and cached[0] < time.monotonic():
            if cached[1] is None:
                self._ask(key)  # refresh in the background; the caller is still allowed meanwhile
            else:
                cached = None
        if cached is None:
            cached = await asyncio.shield(self._ask(key))
        if cached[1] is not None:
            raise PermissionDenied(cached[1].message)

    def _ask(self, key: tuple[str, str]) -> asyncio.Task:
        task = self._asking.get(key)
        if task is None:
            task = self._asking[key] = asyncio.create_task(self._question(key))
            task.add_done_callback(lambda _t: self._asking.pop(key, None))
        return task

    async def _question(self, key: tuple[str, str]) -> tuple[float, PermissionDenied | None]:
        denial: PermissionDenied | None = None
        try:
            await self._catalog.check_execute(*key)
        except PermissionDenied as exc:
            denial = exc
        except TesseraError:
            self._answers.pop(key, None)  # unknown: ask again next time rather than keep a stale answer
            raise
        answer = self._answers[key] = (time.monotonic() + self._cache_s, denial)
        return answer

    def forget(self) -> None:
        self._answers.clear()
