"""EXECUTE checks through the catalog, remembered briefly per caller and model.

Every inference call is checked; asking the registry each time would put a
network round trip on every request, so an answer is reused for a few seconds
(and forgotten at once when the registry announces a grant change).
"""

from __future__ import annotations

import time

from services.common.auth import Principal
from services.common.errors import PermissionDenied
from services.serving.catalog import ModelCatalog


class ExecuteChecker:
    def __init__(self, catalog: ModelCatalog, *, enforce: bool, cache_s: float) -> None:
        self._catalog = catalog
        self._enforce = enforce
        self._cache_s = cache_s
        self._answers: dict[tuple[str, str], tuple[float, PermissionDenied | None]] = {}

    async def check(self, principal: Principal, model_name: str) -> None:
        if not self._enforce:
            return
        key = (principal.name, model_name)
        cached = self._answers.get(key)
        now = time.monotonic()
        if cached is None or cached[0] < now:
            denial: PermissionDenied | None = None
            try:
                await self._catalog.check_execute(principal.name, model_name)
            except PermissionDenied as exc:
                denial = exc
            cached = self._answers[key] = (now + self._cache_s, denial)
        if cached[1] is not None:
            raise PermissionDenied(cached[1].message)

    def forget(self) -> None:
        self._answers.clear()
