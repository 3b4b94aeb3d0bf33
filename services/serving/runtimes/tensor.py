"""The tensor runtime: a TorchScript model taking FP32/INT64 tensors (tabular and numeric models).

A model folder holds `model.pt` (TorchScript) and optionally `signature.json`
naming its inputs and outputs: {"inputs": [{"name", "datatype", "shape"}], "outputs": [...]}.
Without one, Triton's PyTorch convention applies: INPUT__0..., OUTPUT__0...
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from services.common.errors import FailedPrecondition, InvalidArgument
from services.serving.entities import TENSOR, SamplingSpec, TensorSpec, TextChunk
from services.serving.runtimes.base import SIGNATURE_FILE, TORCHSCRIPT_FILES

DTYPES = {"FP32": np.float32, "INT64": np.int64}


class TorchScriptRuntime:
    kind = TENSOR

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._model = None
        self._inputs: tuple[TensorSpec, ...] = ()
        self._outputs: tuple[TensorSpec, ...] = ()
        # TorchScript modules are not safe to run from several threads at once; one call at a time.
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        import torch

        path = next((self._folder / n for n in TORCHSCRIPT_FILES if (self._folder / n).is_file()), None)
        if path is None:
            raise FailedPrecondition(f"no TorchScript file in {self._folder}")
        self._model = await asyncio.to_thread(torch.jit.load, str(path), map_location="cpu")
        self._model.eval()
        self._inputs, self._outputs = _signature(self._folder)

    async def stop(self) -> None:
        self._model = None

    def inputs(self) -> Sequence[TensorSpec]:
        return self._inputs

    def outputs(self) -> Sequence[TensorSpec]:
        return self._outputs

    async def generate(
        self, request_id: str, prompt: str | Sequence[Mapping[str, str]], sampling: SamplingSpec
    ) -> AsyncIterator[TextChunk]:
        raise FailedPrecondition("this endpoint serves a tensor model: send named FP32/INT64 tensors")
        yield  # pragma: no cover - makes this an async generator like the LLM's

    async def infer(self, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays = [self._checked(spec, tensors) for spec in self._inputs]
        unknown = set(tensors) - {spec.name for spec in self._inputs}
        if unknown:
            raise InvalidArgument(f"unknown input(s) {sorted(unknown)}; the model takes {self._input_names()}")
        async with self._lock:
            result = await asyncio.to_thread(self._run, arrays)
        if len(result) != len(self._outputs):
            raise FailedPrecondition(
                f"the model returned {len(result)} outputs, its signature names {len(self._outputs)}"
            )
        return {spec.name: array for spec, array in zip(self._outputs, result, strict=True)}

    def _run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        if self._model is None:
            raise FailedPrecondition("the model is unloaded")
        with torch.inference_mode():
            try:
                out = self._model(*(torch.from_numpy(a) for a in arrays))
            except RuntimeError as exc:  # shape mismatches inside the model surface here
                raise InvalidArgument(f"the model rejected the inputs: {str(exc).splitlines()[0]}") from exc
        items = out if isinstance(out, tuple | list) else (out,)
        return [t.detach().cpu().numpy() for t in items]

    def _checked(self, spec: TensorSpec, tensors: Mapping[str, np.ndarray]) -> np.ndarray:
        if spec.name not in tensors:
            raise InvalidArgument(f"missing input {spec.name!r}; the model takes {self._input_names()}")
        array = np.asarray(tensors[spec.name])
        expected = DTYPES[spec.datatype]
        if array.dtype != expected:
            # JSON (Kafka) numbers arrive as floats: whole ones are fine for an INT64 input.
            if expected is np.int64 and array.dtype.kind == "f" and np.all(np.mod(array, 1) == 0):
                array = array.astype(np.int64)
            elif not np.can_cast(array.dtype, expected, casting="same_kind"):
                raise InvalidArgument(f"input {spec.name!r} must be {spec.datatype}, got {array.dtype}")
            array = array.astype(expected)
        if len(array.shape) != len(spec.shape) or any(
            want != -1 and want != got for want, got in zip(spec.shape, array.shape, strict=True)
        ):
            raise InvalidArgument(f"input {spec.name!r} must have shape {list(spec.shape)}, got {list(array.shape)}")
        return np.ascontiguousarray(array)

    def _input_names(self) -> list[str]:
        return [s.name for s in self._inputs]


def _signature(folder: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    path = folder / SIGNATURE_FILE
    if not path.is_file():
        return (TensorSpec("INPUT__0", "FP32", (-1, -1)),), (TensorSpec("OUTPUT__0", "FP32", (-1, -1)),)
    data = json.loads(path.read_text())

    def specs(items: list[dict]) -> tuple[TensorSpec, ...]:
        out = []
        for item in items:
            if item["datatype"] not in DTYPES:
                raise FailedPrecondition(f"{SIGNATURE_FILE}: datatype {item['datatype']} is not FP32 or INT64")
            out.append(TensorSpec(item["name"], item["datatype"], tuple(int(d) for d in item["shape"])))
        return tuple(out)

    return specs(data["inputs"]), specs(data["outputs"])
