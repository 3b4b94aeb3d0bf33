"""The interface every runtime implements, and how a model folder picks its runtime."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from services.common.errors import FailedPrecondition
from services.serving.entities import AGENT, EMBEDDING, LLM, TENSOR, SamplingSpec, TensorSpec, TextChunk

# A TorchScript model's file, and its optional description of named inputs/outputs.
TORCHSCRIPT_FILES = ("model.pt", "model.torchscript")
# An agent's spec (services/serving/agents.py).
AGENT_FILE = "agent.json"
SIGNATURE_FILE = "signature.json"
# What marks a sentence-transformers folder (checked before config.json, which it also has).
SENTENCE_TRANSFORMERS_FILES = ("modules.json", "config_sentence_transformers.json")


@dataclass
class RuntimeStatistics:
    """What one loaded model version did since it loaded (OIP ModelStatistics)."""

    inference_count: int = 0  # inferences, a batch of n counting n
    execution_count: int = 0  # calls into the engine
    success_count: int = 0
    success_ns: int = 0
    fail_count: int = 0
    fail_ns: int = 0
    last_inference_ms: int = 0  # since the epoch; 0: none yet

    def record(self, ok: bool, duration_ns: int, batch: int = 1) -> None:
        self.execution_count += 1
        self.last_inference_ms = int(time.time() * 1000)
        if ok:
            self.inference_count += max(1, batch)
            self.success_count += 1
            self.success_ns += duration_ns
        else:
            self.fail_count += 1
            self.fail_ns += duration_ns


class ModelRuntime(Protocol):
    kind: str  # LLM or TENSOR
    statistics: RuntimeStatistics

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def inputs(self) -> Sequence[TensorSpec]: ...

    def outputs(self) -> Sequence[TensorSpec]: ...

    def generate(
        self, request_id: str, prompt: str | Sequence[Mapping[str, str]], sampling: SamplingSpec
    ) -> AsyncIterator[TextChunk]:
        """LLMs: stream text; the last chunk has finished=True. served_model/version are left empty."""

    async def infer(self, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Tensor models: named inputs in, named outputs out."""


RuntimeFactory = Callable[[Path], ModelRuntime]


def detect_runtime(folder: Path) -> str:
    """AGENT for an agent spec, EMBEDDING for a sentence-transformers folder, LLM for a Hugging Face
    folder (config.json), TENSOR for a TorchScript file."""
    if (folder / AGENT_FILE).is_file():
        return AGENT
    if any((folder / name).is_file() for name in SENTENCE_TRANSFORMERS_FILES):
        return EMBEDDING
    if (folder / "config.json").is_file():
        return LLM
    if any((folder / name).is_file() for name in TORCHSCRIPT_FILES):
        return TENSOR
    raise FailedPrecondition(
        f"no servable model in {folder.name}: expected a Hugging Face folder (config.json),"
        f" an agent spec ({AGENT_FILE}) or a TorchScript file ({', '.join(TORCHSCRIPT_FILES)})"
    )
