"""The agent runtime: an `agent.json` folder served like a model, answered by services/serving/agents.py."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from services.common.auth import Principal
from services.common.errors import FailedPrecondition
from services.serving.agents import AgentServices, answer, load_spec
from services.serving.entities import AGENT, SamplingSpec, TensorSpec, TextChunk
from services.serving.runtimes.base import RuntimeStatistics

TEXT_INPUT = TensorSpec("text_input", "BYTES", (1,))
TEXT_OUTPUT = TensorSpec("text_output", "BYTES", (1,))


class AgentRuntime:
    kind = AGENT

    def __init__(self, folder: Path, services: AgentServices) -> None:
        # Validated here, when the version loads: a bad spec fails the route with its reason.
        self.spec = load_spec(folder)
        self._services = services
        self._version: tuple[str, int] = (folder.name, 0)
        self.statistics = RuntimeStatistics()

    def assign_version(self, model_name: str, version: int) -> None:
        """Which registered version this is (the pool knows; the folder is named by content id)."""
        self._version = (model_name, version)

    async def start(self) -> None:
        self._services.lineage.record_later(
            ("VECTOR_INDEX", self.spec.index), ("MODEL_VERSION", f"{self._version[0]}/{self._version[1]}")
        )

    async def stop(self) -> None:
        return None

    def inputs(self) -> Sequence[TensorSpec]:
        return (TEXT_INPUT,)

    def outputs(self) -> Sequence[TensorSpec]:
        return (TEXT_OUTPUT,)

    async def generate(
        self, request_id: str, prompt: str | Sequence[Mapping[str, str]], sampling: SamplingSpec
    ) -> AsyncIterator[TextChunk]:
        raise FailedPrecondition("an agent answers for a caller: call it through an endpoint")
        yield  # pragma: no cover - makes this an async generator like the others

    async def answer(
        self,
        request_id: str,
        prompt: str | Sequence[Mapping[str, str]],
        sampling: SamplingSpec,
        principal: Principal,
        *,
        wait: bool,
    ) -> AsyncIterator[TextChunk]:
        started, ok = time.perf_counter_ns(), False
        try:
            async for chunk in answer(
                self._services, self.spec, self._version, request_id, prompt, sampling, principal, wait=wait
            ):
                yield chunk
            ok = True
        finally:
            self.statistics.record(ok, time.perf_counter_ns() - started)

    async def infer(self, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise FailedPrecondition("this endpoint serves an agent: send a text question (BYTES 'text_input')")
