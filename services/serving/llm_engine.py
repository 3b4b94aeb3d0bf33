"""One vLLM engine for one model folder: the only code in serving that touches vLLM.

The gRPC and Kafka front ends call `VllmEngine.generate` with plain Python types
and get plain chunks back. vLLM itself is imported on `start()`, so importing
this module stays cheap for code and tests that never start an engine.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vllm.v1.engine.async_llm import AsyncLLM

# Nothing is fetched from a hub or reported anywhere: models are local folders.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}

ChatMessage = Mapping[str, str]  # {"role": "user", "content": "..."}


class InvalidRequest(ValueError):
    """The request cannot be served as asked (bad sampling values, prompt too long...)."""


class EngineUnavailable(RuntimeError):
    """The engine is not started, is stopping, or has died."""


@dataclass(frozen=True, slots=True)
class EngineSettings:
    # On CPU, vLLM reads gpu_memory_utilization as a share of *host* memory (0.9 by
    # default); an explicit KV cache size keeps it small and skips the warm-up pass.
    kv_cache_bytes: int = 256 * 2**20
    max_model_len: int | None = None  # None: the model's own limit
    max_num_seqs: int = 32
    dtype: str = "auto"  # the checkpoint's dtype; bfloat16 and float32 both run on CPU
    enforce_eager: bool = True  # torch.compile costs minutes at start on a small CPU
    seed: int = 0
    # GPU engines (the CUDA vllm build): GPUs per engine, the share of GPU memory it takes (the KV
    # cache then fills what is left, so kv_cache_bytes is not passed), prefix caching, quantization.
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float | None = None
    enable_prefix_caching: bool | None = None  # None: vLLM's default
    quantization: str | None = None  # "awq", "gptq", "fp8"...; None: as the checkpoint says
    # LoRA adapters served on this engine (peft folders over its model): how many at once, their
    # largest rank. 0: no adapters (vLLM then builds no LoRA layers).
    max_loras: int = 0
    max_lora_rank: int = 16


@dataclass(frozen=True, slots=True)
class Adapter:
    """A peft LoRA adapter folder over this engine's model; `adapter_id` is unique per adapter content."""

    name: str
    adapter_id: int
    folder: str


@dataclass(frozen=True, slots=True)
class Sampling:
    temperature: float = 1.0  # 0 is greedy
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False  # generate exactly max_tokens (benchmarks)
    logprobs: int | None = None  # alternatives per generated token (0: the sampled token's only)
    prompt_logprobs: int | None = None  # alternatives per prompt token
    json_schema: str | None = None  # guided decoding: the answer is valid under this JSON schema
    json_object: bool = False  # guided decoding: the answer is a JSON object


@dataclass(frozen=True, slots=True)
class GenerationChunk:
    text: str  # new text since the previous chunk (the whole text when not streaming)
    token_ids: tuple[int, ...]  # new token ids since the previous chunk
    prompt_tokens: int
    completion_tokens: int  # generated so far, this chunk included
    finished: bool
    finish_reason: str | None = None  # "stop", "length" or "abort" on the last chunk
    # (token text, log probability or None, ((alternative, log probability), ...)) per new token / prompt token
    logprobs: tuple[tuple[str, float | None, tuple[tuple[str, float], ...]], ...] = ()
    prompt_logprobs: tuple[tuple[str, float | None, tuple[tuple[str, float], ...]], ...] | None = None


class VllmEngine:
    """Owns vLLM's async engine (V1 AsyncLLM) for one model folder."""

    def __init__(self, model_dir: str | Path, settings: EngineSettings | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.settings = settings or EngineSettings()
        self._engine: AsyncLLM | None = None
        self._tokenizer: Any = None
        self._start_lock = asyncio.Lock()

    @property
    def running(self) -> bool:
        return self._engine is not None and not self._engine.errored

    async def start(self) -> None:
        """Start the engine (its core and worker processes); returns when it can serve."""
        async with self._start_lock:
            if self._engine is not None:
                return
            if not (self.model_dir / "config.json").is_file():
                raise FileNotFoundError(f"no Hugging Face model in {self.model_dir}")
            for key, value in OFFLINE_ENV.items():
                os.environ.setdefault(key, value)
            # Importing vLLM and starting its processes takes seconds: keep the loop serving.
            # The thread sets the attribute rather than returning the engine, so no finished
            # future keeps the engine alive after stop() (its __del__ would run at exit).
            await asyncio.to_thread(self._launch)
            self._tokenizer = self._engine.get_tokenizer()

    async def stop(self) -> None:
        """Stop the engine; requests still running end with EngineUnavailable."""
        engine, self._engine = self._engine, None
        if engine is not None:
            await asyncio.to_thread(engine.shutdown)

    def apply_chat_template(self, messages: Sequence[ChatMessage]) -> str:
        """The prompt text the model's own chat template makes of these messages."""
        tokenizer = self._require_tokenizer()
        if not getattr(tokenizer, "chat_template", None):
            raise InvalidRequest(f"the model in {self.model_dir} has no chat template")
        return tokenizer.apply_chat_template(
            [dict(message) for message in messages], tokenize=False, add_generation_prompt=True
        )

    def tokenize(self, prompt: str | Sequence[ChatMessage]) -> list[int]:
        """Prompt token ids, the way vLLM's own completions and chat servers make them."""
        tokenizer = self._require_tokenizer()
        if isinstance(prompt, str):
            return tokenizer.encode(prompt, add_special_tokens=True)
        # The chat template writes the special tokens (BOS...) itself.
        return tokenizer.encode(self.apply_chat_template(prompt), add_special_tokens=False)

    async def generate(
        self,
        request_id: str,
        prompt: str | Sequence[ChatMessage],
        sampling: Sampling | None = None,
        *,
        stream: bool = True,
        adapter: Adapter | None = None,
    ) -> AsyncIterator[GenerationChunk]:
        """Generate for a text prompt or chat messages (through `adapter` when given); the last chunk has finished=True.

        Closing the iterator early (or cancelling its task) aborts the request in the engine.
        """
        engine = self._require_engine()
        sampling = sampling or Sampling()
        token_ids = self.tokenize(prompt)
        params = self._sampling_params(sampling, stream)
        lora = self._lora_request(adapter)
        completion_tokens = 0
        first = True
        try:
            async for output in engine.generate(_token_input(token_ids), params, request_id, lora_request=lora):
                completion = output.outputs[0]
                # Streamed outputs carry only the new tokens; a final-only output carries all.
                completion_tokens = len(completion.token_ids) + (completion_tokens if stream else 0)
                prompt_ids = output.prompt_token_ids or token_ids
                yield GenerationChunk(
                    text=completion.text,
                    token_ids=tuple(completion.token_ids),
                    prompt_tokens=len(prompt_ids),
                    completion_tokens=completion_tokens,
                    finished=output.finished,
                    finish_reason=completion.finish_reason if output.finished else None,
                    logprobs=self._logprobs(completion.token_ids, completion.logprobs)
                    if sampling.logprobs is not None
                    else (),
                    prompt_logprobs=self._logprobs(prompt_ids, output.prompt_logprobs)
                    if first and sampling.prompt_logprobs is not None
                    else None,
                )
                first = False
        except Exception as error:
            translated = _translate(error)
            if translated is error:
                raise
            raise translated from error

    def _lora_request(self, adapter: Adapter | None):
        if adapter is None:
            return None
        if not self.settings.max_loras:
            raise InvalidRequest(f"the engine for {self.model_dir} serves no LoRA adapters (max_loras is 0)")
        from vllm.lora.request import LoRARequest

        return LoRARequest(adapter.name, adapter.adapter_id, adapter.folder)

    def _logprobs(self, token_ids: Sequence[int], per_position: Any) -> tuple:
        """vLLM's per-position {token id: Logprob} as (token, logprob, alternatives by likelihood)."""
        if per_position is None:
            return ()
        result = []
        for position, token_id in enumerate(token_ids):
            entries = per_position[position] if position < len(per_position) else None
            if not entries:  # the first prompt token: nothing precedes it
                result.append((self._decode(token_id), None, ()))
                continue
            chosen = entries.get(token_id)
            ranked = sorted(
                ((lp.rank, self._token_text(tid, lp), lp.logprob) for tid, lp in entries.items() if lp.rank),
                key=lambda entry: entry[0],
            )
            result.append(
                (
                    self._token_text(token_id, chosen) if chosen else self._decode(token_id),
                    chosen.logprob if chosen else None,
                    tuple((text, logprob) for _rank, text, logprob in ranked),
                )
            )
        return tuple(result)

    def _token_text(self, token_id: int, logprob: Any) -> str:
        decoded = getattr(logprob, "decoded_token", None)
        return decoded if decoded is not None else self._decode(token_id)

    def _decode(self, token_id: int) -> str:
        return self._tokenizer.decode([token_id])

    async def abort(self, request_id: str) -> None:
        """Stop a running request; its iterator ends with finish_reason "abort"."""
        if self._engine is not None:
            await self._engine.abort(request_id)

    def _launch(self) -> None:
        from vllm.config import StructuredOutputsConfig
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        s = self.settings
        memory = (
            {"gpu_memory_utilization": s.gpu_memory_utilization}
            if s.gpu_memory_utilization
            else {"kv_cache_memory_bytes": s.kv_cache_bytes}
        )
        optional = {"enable_prefix_caching": s.enable_prefix_caching, "quantization": s.quantization}
        lora = {"enable_lora": True, "max_loras": s.max_loras, "max_lora_rank": s.max_lora_rank} if s.max_loras else {}
        args = AsyncEngineArgs(
            model=str(self.model_dir),
            dtype=s.dtype,
            max_model_len=s.max_model_len,
            max_num_seqs=s.max_num_seqs,
            enforce_eager=s.enforce_eager,
            seed=s.seed,
            tensor_parallel_size=s.tensor_parallel_size,
            # Guided JSON is compact (xgrammar, vLLM's default backend): a model free to add whitespace may
            # never close the object. Engine-wide in vLLM: its grammar backends ignore the per-request flag.
            structured_outputs_config=StructuredOutputsConfig(backend="xgrammar", disable_any_whitespace=True),
            **memory,
            **lora,
            **{k: v for k, v in optional.items() if v is not None},
        )
        self._engine = AsyncLLM.from_engine_args(args)
        _confine_engine_cores(self._engine)

    def _sampling_params(self, sampling: Sampling, stream: bool):
        from vllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams

        try:
            structured = None
            if sampling.json_schema is not None or sampling.json_object:
                structured = StructuredOutputsParams(
                    json=sampling.json_schema, json_object=True if sampling.json_object else None
                )
            return SamplingParams(
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=sampling.max_tokens,
                stop=list(sampling.stop) or None,
                seed=sampling.seed,
                ignore_eos=sampling.ignore_eos,
                logprobs=sampling.logprobs,
                prompt_logprobs=sampling.prompt_logprobs,
                structured_outputs=structured,
                output_kind=RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY,
            )
        except Exception as error:
            raise InvalidRequest(str(error)) from error

    def _require_engine(self) -> AsyncLLM:
        if self._engine is None:
            raise EngineUnavailable(f"the engine for {self.model_dir} is not started")
        if self._engine.errored:
            raise EngineUnavailable(f"the engine for {self.model_dir} has died")
        return self._engine

    def _require_tokenizer(self) -> Any:
        self._require_engine()
        return self._tokenizer


def _confine_engine_cores(engine: Any) -> None:
    """Keep vLLM's engine-core process on the cores its CPU worker is bound to.

    On CPU, vLLM binds the worker process to its cores (VLLM_CPU_OMP_THREADS_BIND)
    but leaves the engine-core process (scheduler, output thread) free to run
    anywhere. While a request runs, both busy-poll each other with sched_yield, so
    on a small machine they take every core, and processes that must wake up for
    each streamed message (this server's gRPC threads, and above all the gRPC
    clients in other processes) wait for the CPU, up to the whole generation:
    the first token then arrives with the last. The engine core only works while
    the worker waits for it, so sharing the worker's cores costs it little and
    leaves the other cores to everyone else. A no-op where the worker is not bound.
    """
    manager = getattr(getattr(engine.engine_core, "resources", None), "engine_manager", None)
    for process in getattr(manager, "processes", None) or ():
        try:
            cores = set().union(*(os.sched_getaffinity(pid) for pid in _children(process.pid)))
            if cores and cores < os.sched_getaffinity(process.pid):
                # Affinity is per thread: set it on every thread, later ones inherit it.
                for tid in os.listdir(f"/proc/{process.pid}/task"):
                    os.sched_setaffinity(int(tid), cores)
        except (OSError, AttributeError):  # not Linux, or the process is gone: leave it as it is
            continue


def _children(pid: int) -> list[int]:
    children: list[int] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as listing:
            children.extend(int(child) for child in listing.read().split())
    return children


def _token_input(token_ids: list[int]) -> Mapping[str, Any]:
    """Already-tokenized input, which vLLM takes without re-rendering the prompt."""
    try:
        from vllm.inputs.engine import tokens_input
    except ImportError:  # vLLM releases before rendered engine inputs
        return {"prompt_token_ids": token_ids}
    return tokens_input(token_ids)


def _translate(error: Exception) -> Exception:
    from vllm.exceptions import VLLMClientError, VLLMServerError

    if isinstance(error, InvalidRequest | EngineUnavailable):
        return error
    if isinstance(error, VLLMClientError | ValueError):
        return InvalidRequest(str(error))
    if isinstance(error, VLLMServerError):
        return EngineUnavailable(str(error) or type(error).__name__)
    return error
