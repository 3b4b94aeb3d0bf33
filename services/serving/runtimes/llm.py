"""The LLM runtime: one vLLM engine (services/serving/llm_engine.py) per loaded model version."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from services.common.errors import FailedPrecondition, InvalidArgument, Unavailable
from services.serving.entities import LLM, SamplingSpec, TensorSpec, TextChunk
from services.serving.llm_engine import EngineSettings, EngineUnavailable, InvalidRequest, Sampling, VllmEngine

TEXT_INPUT = TensorSpec("text_input", "BYTES", (1,))
TEXT_OUTPUT = TensorSpec("text_output", "BYTES", (1,))


class LlmRuntime:
    kind = LLM

    def __init__(self, folder: Path, settings: EngineSettings, default_max_tokens: int) -> None:
        self._engine = VllmEngine(folder, settings)
        self._default_max_tokens = default_max_tokens

    async def start(self) -> None:
        await self._engine.start()
        # As vLLM's own server does after start-up: move the (large) heap built so far out of
        # the collector's reach, so that a full collection cannot stall token streaming.
        gc.collect()
        gc.freeze()

    async def stop(self) -> None:
        await self._engine.stop()

    def inputs(self) -> Sequence[TensorSpec]:
        return (TEXT_INPUT,)

    def outputs(self) -> Sequence[TensorSpec]:
        return (TEXT_OUTPUT,)

    async def generate(
        self, request_id: str, prompt: str | Sequence[Mapping[str, str]], sampling: SamplingSpec
    ) -> AsyncIterator[TextChunk]:
        engine_sampling = Sampling(
            temperature=1.0 if sampling.temperature is None else sampling.temperature,
            top_p=1.0 if sampling.top_p is None else sampling.top_p,
            max_tokens=sampling.max_tokens or self._default_max_tokens,
            stop=sampling.stop,
            seed=sampling.seed,
            ignore_eos=sampling.ignore_eos,
        )
        try:
            async for chunk in self._engine.generate(request_id, prompt, engine_sampling):
                yield TextChunk(
                    chunk.text,
                    chunk.prompt_tokens,
                    chunk.completion_tokens,
                    chunk.finished,
                    chunk.finish_reason,
                    "",
                    0,
                )
        except InvalidRequest as exc:
            raise InvalidArgument(str(exc)) from exc
        except EngineUnavailable as exc:
            raise Unavailable(str(exc)) from exc

    async def infer(self, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise FailedPrecondition("this endpoint serves an LLM: send a text prompt (BYTES 'text_input')")
