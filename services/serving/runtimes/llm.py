"""The LLM runtime: one vLLM engine (services/serving/llm_engine.py) per loaded model version."""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from services.common.errors import FailedPrecondition, InvalidArgument, Unavailable
from services.serving.entities import LLM, SamplingSpec, TensorSpec, TextChunk, TokenLogprob
from services.serving.llm_engine import Adapter, EngineSettings, EngineUnavailable, InvalidRequest, Sampling, VllmEngine
from services.serving.runtimes.base import RuntimeStatistics

_log = logging.getLogger(__name__)

TEXT_INPUT = TensorSpec("text_input", "BYTES", (1,))
TEXT_OUTPUT = TensorSpec("text_output", "BYTES", (1,))


class LlmRuntime:
    kind = LLM

    def __init__(self, folder: Path, settings: EngineSettings, default_max_tokens: int) -> None:
        self._folder = folder
        self._engine = VllmEngine(folder, settings)
        self._default_max_tokens = default_max_tokens
        self.statistics = RuntimeStatistics()

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

    @property
    def max_lora_rank(self) -> int:
        """The largest adapter rank this engine takes; 0 when it serves no adapters."""
        settings = self._engine.settings
        return settings.max_lora_rank if settings.max_loras else 0

    async def generate(
        self,
        request_id: str,
        prompt: str | Sequence[Mapping[str, str]],
        sampling: SamplingSpec,
        *,
        adapter: Adapter | None = None,
    ) -> AsyncIterator[TextChunk]:
        engine_sampling = Sampling(
            temperature=1.0 if sampling.temperature is None else sampling.temperature,
            top_p=1.0 if sampling.top_p is None else sampling.top_p,
            max_tokens=sampling.max_tokens or self._default_max_tokens,
            stop=sampling.stop,
            seed=sampling.seed,
            ignore_eos=sampling.ignore_eos,
            logprobs=sampling.logprobs,
            prompt_logprobs=sampling.prompt_logprobs,
            json_schema=sampling.json_schema,
            json_object=sampling.json_object,
        )
        started, ok = time.perf_counter_ns(), False
        try:
            async for chunk in self._engine.generate(request_id, prompt, engine_sampling, adapter=adapter):
                yield TextChunk(
                    chunk.text,
                    chunk.prompt_tokens,
                    chunk.completion_tokens,
                    chunk.finished,
                    chunk.finish_reason,
                    "",
                    0,
                    tuple(TokenLogprob(*entry) for entry in chunk.logprobs),
                    None
                    if chunk.prompt_logprobs is None
                    else tuple(TokenLogprob(*entry) for entry in chunk.prompt_logprobs),
                )
            ok = True
        except InvalidRequest as exc:  # the engine's words (paths, sizes) go to the log, not the caller
            _log.info("%s: request %s refused: %s", self._folder.name, request_id, exc)
            raise InvalidArgument(
                "the model refused the request: the prompt or the sampling parameters are outside what it accepts"
            ) from None
        except EngineUnavailable as exc:
            _log.warning("%s: engine unavailable: %s", self._folder.name, exc)
            raise Unavailable("the model's engine is not available; retry later") from None
        finally:
            self.statistics.record(ok, time.perf_counter_ns() - started)

    async def infer(self, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise FailedPrecondition("this endpoint serves an LLM: send a text prompt (BYTES 'text_input')")


class AdapterRuntime:
    """A LoRA adapter version served on its base version's engine: every request runs with the adapter.

    It owns no engine: starting and stopping it are no-ops, and the model pool keeps the base
    engine loaded while any adapter on it is.
    """

    kind = LLM

    def __init__(self, base: LlmRuntime, adapter: Adapter) -> None:
        self.base = base
        self.adapter = adapter
        self.statistics = RuntimeStatistics()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def inputs(self) -> Sequence[TensorSpec]:
        return self.base.inputs()

    def outputs(self) -> Sequence[TensorSpec]:
        return self.base.outputs()

    async def generate(
        self, request_id: str, prompt: str | Sequence[Mapping[str, str]], sampling: SamplingSpec
    ) -> AsyncIterator[TextChunk]:
        started, ok = time.perf_counter_ns(), False
        try:
            async for chunk in self.base.generate(request_id, prompt, sampling, adapter=self.adapter):
                yield chunk
            ok = True
        finally:
            self.statistics.record(ok, time.perf_counter_ns() - started)

    async def infer(self, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return await self.base.infer(tensors)


def adapter_rank(folder: Path) -> int:
    """The rank of the peft LoRA adapter in `folder` (FAILED_PRECONDITION when it is not one)."""
    config = folder / "adapter_config.json"
    if not config.is_file():
        raise FailedPrecondition(f"{folder.name} is tagged as a LoRA adapter but has no adapter_config.json")
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        raise FailedPrecondition(f"adapter_config.json is not JSON: {exc}") from None
    if not isinstance(data, dict) or str(data.get("peft_type", "LORA")).upper() != "LORA":
        raise FailedPrecondition("adapter_config.json is not a LoRA adapter (peft_type LORA)")
    rank = data.get("r")
    if not isinstance(rank, int) or rank < 1:
        raise FailedPrecondition("adapter_config.json has no positive rank `r`")
    if not any((folder / name).is_file() for name in ("adapter_model.safetensors", "adapter_model.bin")):
        raise FailedPrecondition("the adapter has no weights (adapter_model.safetensors or adapter_model.bin)")
    return rank
