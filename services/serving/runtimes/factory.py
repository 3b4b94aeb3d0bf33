"""Build the runtime a model folder needs."""

from __future__ import annotations

from pathlib import Path

from services.common.errors import FailedPrecondition
from services.serving.agents import AgentServices
from services.serving.entities import AGENT, EMBEDDING, LLM
from services.serving.llm_engine import EngineSettings
from services.serving.runtimes.base import ModelRuntime, detect_runtime
from services.serving.settings import ServingSettings


def runtime_factory(settings: ServingSettings, agents: AgentServices | None = None):
    engine_settings = EngineSettings(
        kv_cache_bytes=settings.serving_kv_cache_mib * 2**20,
        max_model_len=settings.serving_max_model_len,
        max_num_seqs=settings.serving_max_num_seqs,
        tensor_parallel_size=settings.serving_tensor_parallel_size,
        gpu_memory_utilization=settings.serving_gpu_memory_utilization,
        enable_prefix_caching=settings.serving_enable_prefix_caching,
        quantization=settings.serving_quantization or None,
    )

    def build(folder: Path) -> ModelRuntime:
        kind = detect_runtime(folder)
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

            return LlmRuntime(folder, engine_settings, settings.serving_default_max_tokens)
        from services.serving.runtimes.tensor import TorchScriptRuntime

        return TorchScriptRuntime(folder, worker_limits(settings))

    return build


def worker_limits(settings: ServingSettings):
    from services.serving.runtimes.tensor import WorkerLimits

    return WorkerLimits(
        memory_bytes=settings.serving_tensor_memory_mib * 2**20,
        threads=settings.serving_tensor_threads,
        call_timeout_s=settings.serving_tensor_call_timeout_s,
        start_timeout_s=settings.serving_tensor_start_timeout_s,
    )
