"""Recall you can see without asking: every index's recall@k measured on a schedule, into the gauge."""

from __future__ import annotations

import asyncio
import logging

from services.common.errors import TesseraError
from services.retrieval.core import RetrievalCore
from services.retrieval.entities import BuildState

_log = logging.getLogger(__name__)


class RecallJob:
    def __init__(self, core: RetrievalCore, interval_s: float, k: int = 10, sample_size: int = 50) -> None:
        self.core = core
        self.interval_s = interval_s
        self.k = k
        self.sample_size = sample_size
        self._stopping = asyncio.Event()

    async def measure_all(self) -> dict[str, float]:
        """recall@k of every built, non-empty index (the trusted internal path: no caller to authorize)."""
        measured: dict[str, float] = {}
        after = ""
        while True:
            page = await self.core.indexes_to_measure(after, 100)
            if not page:
                return measured
            for info in page:
                if info.build_state is not BuildState.READY:
                    continue
                try:
                    report = await self.core.measure_recall_internal(info, self.k, self.sample_size)
                except TesseraError as exc:
                    _log.info("recall of %s not measured: %s", info.spec.name, exc.message)
                    continue
                if report.queries:
                    measured[info.spec.name] = report.recall
            after = page[-1].spec.name

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), self.interval_s)
                return
            except TimeoutError:
                pass
            try:
                await self.measure_all()
            except Exception as exc:  # noqa: BLE001 - a failed round is retried at the next interval
                _log.warning("scheduled recall measurement failed: %s", exc)

    def stop(self) -> None:
        self._stopping.set()
