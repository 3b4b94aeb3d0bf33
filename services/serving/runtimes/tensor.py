"""The tensor runtime: a TorchScript model taking FP32/INT64 tensors (tabular and numeric models).

A model folder holds `model.pt` (TorchScript) and optionally `signature.json`
naming its inputs and outputs: {"inputs": [{"name", "datatype", "shape"}], "outputs": [...]}.
Without one, Triton's PyTorch convention applies: INPUT__0..., OUTPUT__0...

A TorchScript file is code from a model author, so it never runs in serving's
process: each loaded model gets a worker process (runtimes/tensor_worker.py)
with a minimal environment (no TESSERA_* settings, no DSN), the model's folder
as its working directory, resource limits and, where the kernel allows,
Landlock confinement to that folder (runtimes/confinement.py). The worker
refuses programs that use operators outside the allowlist
(runtimes/torchscript_policy.py); the model is then FAILED with that reason.

Callers never see what the engine said: a failure is a fixed message and its
status, and the engine's words go to the log. A worker that dies or overruns
its deadline answers UNAVAILABLE or DEADLINE_EXCEEDED and is restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.common.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    TesseraError,
    Unavailable,
)
from services.serving.entities import TENSOR, SamplingSpec, TensorSpec, TextChunk
from services.serving.runtimes import tensor_wire
from services.serving.runtimes.base import SIGNATURE_FILE, TORCHSCRIPT_FILES, RuntimeStatistics

_log = logging.getLogger(__name__)

DTYPES = {"FP32": np.float32, "INT64": np.int64}
MAX_SIGNATURE_BYTES = 64 * 1024
# The most a worker may answer in one frame (outputs of one call).
MAX_REPLY_BYTES = 256 * 1024 * 1024
# Lines of a worker's stderr that reach the log (a model may print without end).
MAX_STDERR_LINES = 200
_SOURCES = Path(__file__).resolve().parents[3]
_BOOT = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); from services.serving.runtimes.tensor_worker import main; main()"
)


@dataclass(frozen=True)
class WorkerLimits:
    memory_bytes: int  # address space a worker may add after its imports (0: no cap)
    threads: int  # torch intra-op threads per worker
    call_timeout_s: float  # one inference, after which the worker is killed and restarted
    start_timeout_s: float  # starting the worker and loading the model


class _WorkerGone(Exception):
    """The worker died, closed its pipe or broke the protocol."""


class _Worker:
    """One running worker process and its pipe."""

    def __init__(self, process: asyncio.subprocess.Process, label: str) -> None:
        self.process = process
        self._stderr = asyncio.create_task(_relay_stderr(process.stderr, label), name=f"stderr-{label}")

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def send(self, header: dict, tensors: Mapping[str, np.ndarray] | None = None) -> None:
        try:
            self.process.stdin.writelines(tensor_wire.encode(header, tensors))
            await self.process.stdin.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise _WorkerGone(f"pipe closed: {exc}") from exc

    async def exchange(self, arrays: Mapping[str, np.ndarray]) -> tuple[dict, dict[str, np.ndarray]]:
        await self.send({"op": "infer"}, arrays)
        return await self.receive()

    async def receive(self) -> tuple[dict, dict[str, np.ndarray]]:
        try:
            prefix = await self.process.stdout.readexactly(tensor_wire.PREFIX.size)
            header_len, body_len = tensor_wire.parse_prefix(prefix, MAX_REPLY_BYTES)
            header = tensor_wire.parse_header(await self.process.stdout.readexactly(header_len))
            body = await self.process.stdout.readexactly(body_len)
            return header, tensor_wire.tensors_of(header, body)
        except asyncio.IncompleteReadError as exc:
            raise _WorkerGone("the worker closed its pipe") from exc
        except tensor_wire.WireError as exc:
            raise _WorkerGone(f"protocol error: {exc}") from exc

    async def stop(self) -> None:
        if not self.alive:
            return
        with contextlib.suppress(Exception):
            self.process.stdin.close()  # the worker ends when its pipe does
        try:
            await asyncio.wait_for(self.process.wait(), 5)
        except TimeoutError:
            self.kill()
            await self.process.wait()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()


class TorchScriptRuntime:
    kind = TENSOR

    def __init__(self, folder: Path, limits: WorkerLimits) -> None:
        self._folder = folder
        self._limits = limits
        self._file = next((n for n in TORCHSCRIPT_FILES if (folder / n).is_file()), None)
        self._worker: _Worker | None = None
        self._inputs: tuple[TensorSpec, ...] = ()
        self._outputs: tuple[TensorSpec, ...] = ()
        self._stopped = False
        # One call at a time per worker; a restart holds it too.
        self._lock = asyncio.Lock()
        self._restarting: asyncio.Task | None = None
        self.statistics = RuntimeStatistics()

    @property
    def folder(self) -> Path:
        return self._folder

    @property
    def worker_pid(self) -> int | None:
        return self._worker.process.pid if self._worker is not None and self._worker.alive else None

    async def start(self) -> None:
        if self._file is None:
            raise FailedPrecondition(f"no TorchScript file in {self._folder.name}")
        self._inputs, self._outputs = _signature(self._folder)
        async with self._lock:
            self._worker = await self._spawn()

    async def stop(self) -> None:
        self._stopped = True
        if self._restarting is not None:
            self._restarting.cancel()
            await asyncio.gather(self._restarting, return_exceptions=True)
        # Not under the lock: a call still running ends with the worker (pipe closed, then killed).
        worker, self._worker = self._worker, None
        if worker is not None:
            await worker.stop()

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
        arrays = {spec.name: self._checked(spec, tensors) for spec in self._inputs}
        unknown = set(tensors) - {spec.name for spec in self._inputs}
        if unknown:
            raise InvalidArgument(f"unknown input(s) {sorted(unknown)}; the model takes {self._input_names()}")
        started = time.perf_counter_ns()
        batch = next((a.shape[0] for a in arrays.values() if a.ndim), 1)
        ok = False
        try:
            async with self._lock:
                result = await self._call(arrays)
            if len(result) != len(self._outputs):
                _log.warning("%s: %d outputs, its signature names %d", self._folder, len(result), len(self._outputs))
                raise TesseraError(
                    f"the model returned {len(result)} outputs; its signature names {len(self._outputs)}"
                )
            ok = True
            return {spec.name: array for spec, array in zip(self._outputs, result.values(), strict=True)}
        finally:
            self.statistics.record(ok, time.perf_counter_ns() - started, batch)

    # -- the worker ------------------------------------------------------------------------

    async def _call(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        worker = self._worker
        if worker is None or not worker.alive:
            if self._stopped:
                raise FailedPrecondition("the model is unloaded")
            try:
                self._worker = worker = await self._spawn()  # died between calls: one more try now
            except FailedPrecondition:
                raise Unavailable("the model's worker is not running; retry later") from None
        try:
            header, outputs = await asyncio.wait_for(worker.exchange(arrays), self._limits.call_timeout_s)
        except TimeoutError:
            _log.warning("%s: no answer in %.0fs; restarting its worker", self._folder, self._limits.call_timeout_s)
            self._lose(worker)
            raise DeadlineExceeded(
                f"the model did not answer within {self._limits.call_timeout_s:.0f}s; it is being restarted"
            ) from None
        except _WorkerGone as exc:
            _log.warning("%s: worker %d lost (%s); restarting it", self._folder, worker.process.pid, exc)
            self._lose(worker)
            raise Unavailable("the model's worker stopped; it is being restarted, retry the call") from None
        if header.get("ok") is True:
            return outputs
        raise _failure(self._folder, header)

    def _lose(self, worker: _Worker) -> None:
        worker.kill()
        self._worker = None
        if not self._stopped and (self._restarting is None or self._restarting.done()):
            self._restarting = asyncio.create_task(self._restart(), name=f"restart-{self._folder.name}")

    async def _restart(self) -> None:
        async with self._lock:
            if self._worker is not None or self._stopped:
                return
            try:
                self._worker = await self._spawn()
            except TesseraError as exc:  # the next call tries again
                _log.warning("%s: restart failed: %s", self._folder, exc.message)

    async def _spawn(self) -> _Worker:
        config = {
            "folder": str(self._folder),
            "file": self._file,
            "threads": self._limits.threads,
            "memory_bytes": self._limits.memory_bytes,
        }
        try:
            process = await self._start_process(config)
        except OSError as exc:
            _log.warning("%s: the worker could not be started: %s", self._folder, exc)
            raise FailedPrecondition("the model's worker could not be started (see the serving log)") from None
        worker = _Worker(process, self._folder.name)
        try:
            header, _ = await asyncio.wait_for(worker.receive(), self._limits.start_timeout_s)
        except (TimeoutError, _WorkerGone, asyncio.CancelledError) as exc:
            worker.kill()
            await process.wait()
            if isinstance(exc, asyncio.CancelledError):
                raise
            _log.warning("%s: the worker did not start (%s, exit %s)", self._folder, exc, process.returncode)
            raise FailedPrecondition("the model's worker did not start (see the serving log)") from None
        if header.get("ready") is True:
            _log.info(
                "%s: worker %d ready (filesystem confinement: %s)",
                self._folder,
                process.pid,
                str(header.get("filesystem"))[:200],
            )
            return worker
        await worker.stop()
        refused = header.get("refused")
        if isinstance(refused, list):
            ops = ", ".join(str(op)[:80] for op in refused[:20])
            raise FailedPrecondition(
                f"the TorchScript program uses operators serving does not run: {ops}"
                " (allowed: tensor math and control flow; nothing that reaches files, the network,"
                " other processes or Python)"
            )
        _log.warning("%s: the model did not load: %s", self._folder, str(header.get("detail"))[:2000])
        raise FailedPrecondition("the TorchScript file could not be loaded (see the serving log)")

    async def _start_process(self, config: dict) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",  # no PYTHONPATH, no user site, and not the model's folder on sys.path
            "-c",
            _BOOT,
            str(_SOURCES),
            json.dumps(config),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=self._folder,
            env=worker_environment(),
            start_new_session=True,
            limit=tensor_wire.MAX_HEADER_BYTES,
        )

    # -- inputs ----------------------------------------------------------------------------

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


def _failure(folder: Path, header: dict) -> TesseraError:
    """The caller's error for a worker's failure report; the engine's words go to the log only."""
    kind = header.get("error")
    _log.info("%s: the model failed (%s): %s", folder, str(kind)[:32], str(header.get("detail", ""))[:2000])
    if kind == "invalid_argument":
        return InvalidArgument("the model could not run on these inputs")
    if kind == "memory":
        return ResourceExhausted("the model ran out of memory on these inputs")
    if kind == "output":
        return TesseraError("the model returned an output serving cannot carry (FP32, FP64, INT64, INT32, BOOL)")
    return TesseraError("the model failed on this request")


async def _relay_stderr(stream: asyncio.StreamReader, label: str) -> None:
    """What a worker writes to stderr (tracebacks, the model's warnings) goes to the log, up to a point."""
    lines = 0
    while True:
        try:
            line = await stream.readline()
        except ValueError:  # a line over the reader's limit: skip it
            continue
        if not line:
            return
        lines += 1
        if lines <= MAX_STDERR_LINES:
            _log.info("worker %s: %s", label, line[:500].decode(errors="replace").rstrip())
        elif lines == MAX_STDERR_LINES + 1:
            _log.info("worker %s: more output not logged", label)


def worker_environment() -> dict[str, str]:
    """Nothing of serving's environment: no TESSERA_* settings, tokens or DSN reach model code.

    One thread at start (the worker confines itself then; it sets torch's threads after).
    """
    return {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "MALLOC_ARENA_MAX": "2",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def _signature(folder: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    path = folder / SIGNATURE_FILE
    if not path.is_file():
        return (TensorSpec("INPUT__0", "FP32", (-1, -1)),), (TensorSpec("OUTPUT__0", "FP32", (-1, -1)),)
    if path.stat().st_size > MAX_SIGNATURE_BYTES:
        raise FailedPrecondition(f"{SIGNATURE_FILE} is over {MAX_SIGNATURE_BYTES} bytes")
    try:
        data = json.loads(path.read_text())
        return _specs(data["inputs"]), _specs(data["outputs"])
    except (ValueError, KeyError, TypeError) as exc:
        raise FailedPrecondition(f"{SIGNATURE_FILE} is not a valid signature: {type(exc).__name__}") from None


def _specs(items: list[dict]) -> tuple[TensorSpec, ...]:
    if not isinstance(items, list) or len(items) > tensor_wire.MAX_TENSORS:
        raise FailedPrecondition(f"{SIGNATURE_FILE}: give at most {tensor_wire.MAX_TENSORS} inputs and outputs")
    out = []
    for item in items:
        name, datatype, shape = item["name"], item["datatype"], tuple(int(d) for d in item["shape"])
        if not isinstance(name, str) or not 0 < len(name) <= tensor_wire.MAX_NAME:
            raise FailedPrecondition(f"{SIGNATURE_FILE}: tensor names are 1-{tensor_wire.MAX_NAME} characters")
        if datatype not in DTYPES:
            raise FailedPrecondition(f"{SIGNATURE_FILE}: datatype {str(datatype)[:16]!r} is not FP32 or INT64")
        if len(shape) > tensor_wire.MAX_DIMS or any(d < -1 for d in shape):
            raise FailedPrecondition(f"{SIGNATURE_FILE}: {name!r} has a bad shape")
        out.append(TensorSpec(name, datatype, shape))
    return tuple(out)
