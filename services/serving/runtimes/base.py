"""The interface every runtime implements, and how a model folder picks its runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from services.common.errors import FailedPrecondition
from services.serving.entities import LLM, TENSOR, SamplingSpec, TensorSpec, TextChunk

# A TorchScript model's file, and its optional description of named inputs/outputs.
TORCHSCRIPT_FILES = ("model.pt", "model.torchscript")
SIGNATURE_FILE = "signature.json"


class ModelRuntime(Protocol):
    kind: str  # LLM or TENSOR

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
    """LLM for a Hugging Face folder (config.json), TENSOR for a TorchScript file."""
    if (folder / "config.json").is_file():
        return LLM
    if any((folder / name).is_file() for name in TORCHSCRIPT_FILES):
        return TENSOR
    raise FailedPrecondition(
        f"no servable model in {folder.name}: expected a Hugging Face folder (config.json)"
        f" or a TorchScript file ({', '.join(TORCHSCRIPT_FILES)})"
    )
