"""Build the runtime a model folder needs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from services.common.errors import FailedPrecondition
from services.serving.agents import AgentServices
from services.serving.entities import AGENT, EMBEDDING, LLM, EngineSpec
from services.serving.llm_engine import EngineSettings
from services.serving.runtimes.base import ModelRuntime, detect_runtime
from services.serving.settings import ServingSettings


def runtime_factory(settings: ServingSettings, agents: AgentServices | None = None):
    defaults = EngineSettings(
        kv_cache_bytes=settings.serving_kv_cache_mib * 2**20,
        max_model_len=settings.serving_max_model_len,
        max_num_seqs=settings.serving_max_num_seqs,
        tensor_parallel_size=settings.serving_tensor_parallel_size,
        gpu_memory_utilization=settings.serving_gpu_memory_utilization,
        enable_prefix_caching=settings.serving_enable_prefix_caching,
        quantization=settings.serving_quantization or None,
    )

    def build(folder: Path, engine: EngineSpec | None = None) -> ModelRuntime:
        kind = detect_runtime(folder)
        if engine is not None and not engine.is_default() and kind != LLM:
            raise FailedPrecondition(f"engine settings apply to LLMs only; {folder.name} is a {kind} model")
        if kind == AGENT:
            from services.serving.runtimes.agent import AgentRuntime

            if agents is None:
                raise FailedPrecondition("this serving process runs no agents")
            return AgentRuntime(folder, agents)
        if kind == EMBEDDING:
            from services.serving.runtimes.embedding import EmbeddingRuntime

            return EmbeddingRuntime(folder)
        if kind == LLM:
            from services.serving.runtimes.llm import LlmRuntime

            return LlmRuntime(folder, engine_settings(defaults, engine, settings), settings.serving_default_max_tokens)
        from services.serving.runtimes.tensor import TorchScriptRuntime

        return TorchScriptRuntime(folder, worker_limits(settings))

    return build


def engine_settings(defaults: EngineSettings, engine: EngineSpec | None, settings: ServingSettings) -> EngineSettings:
    """The operator's engine settings with a served model's own ones over them (already within bounds)."""
    if engine is None or engine.is_default():
        return defaults
    wants_lora = engine.max_loras is not None or engine.max_lora_rank is not None
    return dataclasses.replace(
        defaults,
        kv_cache_bytes=engine.kv_cache_mib * 2**20 if engine.kv_cache_mib else defaults.kv_cache_bytes,
        max_model_len=engine.max_model_len or defaults.max_model_len,
        max_num_seqs=engine.max_num_seqs or defaults.max_num_seqs,
        enable_prefix_caching=defaults.enable_prefix_caching
        if engine.enable_prefix_caching is None
        else engine.enable_prefix_caching,
        max_loras=(engine.max_loras or settings.serving_max_loras) if wants_lora else 0,
        max_lora_rank=engine.max_lora_rank or settings.serving_max_lora_rank,
    )


def worker_limits(settings: ServingSettings):
    from services.serving.runtimes.tensor import WorkerLimits

    return WorkerLimits(
        memory_bytes=settings.serving_tensor_memory_mib * 2**20,
        threads=settings.serving_tensor_threads,
        call_timeout_s=settings.serving_tensor_call_timeout_s,
        start_timeout_s=settings.serving_tensor_start_timeout_s,
    )
