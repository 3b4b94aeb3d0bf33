"""The tensor worker: one process per loaded TorchScript model, started by runtimes/tensor.py.

It imports torch, confines itself (runtimes/confinement.py), loads the model, refuses it if it uses operators outside the allowlist
(runtimes/torchscript_policy.py), then answers inference frames on its pipe
(runtimes/tensor_wire.py) one at a time until serving closes the pipe. What the
engine says about a failure goes back as `detail`, for serving's log only.

Started as `python -I -c <boot> CONFIG_JSON` with a minimal environment and the
model's folder as its working directory (see tensor.py).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, BinaryIO

from services.serving.runtimes import tensor_wire
from services.serving.runtimes.confinement import confine

MAX_DETAIL = 2000
# What serving may send in one frame: it validated the request already; this only bounds a broken parent.
MAX_REQUEST_BODY = 1 << 30


def main() -> None:
    config = json.loads(sys.argv[1])
    folder = Path(config["folder"])
    # The pipe to serving is fd 0 and a private copy of fd 1; whatever the model prints goes nowhere.
    out = open(os.dup(1), "wb")  # noqa: SIM115 - lives as long as the process
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    import torch

    from services.serving.runtimes.torchscript_policy import outward_aten_operators, refused_operators

    outward = outward_aten_operators()
    filesystem = confine(folder, int(config["memory_bytes"]))
    torch.set_num_threads(max(1, int(config["threads"])))  # starts threads: after confinement, which they inherit
    if os.getppid() == 1:
        return  # serving went away before we could ask to die with it
    source = open(0, "rb", buffering=0, closefd=False)  # noqa: SIM115

    try:
        model, functions = _load(torch, folder / config["file"])
    except Exception as exc:  # noqa: BLE001 - any failure to load is reported, not raised
        _send(out, {"error": "load", "detail": _detail(exc)})
        return
    refused = refused_operators(functions, outward)
    if refused:
        _send(out, {"refused": refused})
        return
    _send(out, {"ready": True, "filesystem": filesystem})
    while (frame := _receive(source)) is not None:
        header, body = frame
        if header.get("op") != "infer":
            return
        reply, outputs = _infer(torch, model, header, body)
        _send(out, reply, outputs)


def _load(torch, path: Path):
    # torch.jit.load's own steps, keeping the compilation unit: it holds every function to check.
    unit = torch._C.CompilationUnit()
    module = torch._C.import_ir_module(unit, str(path), torch.device("cpu"), {}, False)
    model = torch.jit._recursive.wrap_cpp_module(module)
    model.eval()
    return model, unit.get_functions()


def _infer(torch, model, header: dict[str, Any], body: bytearray):
    try:
        arrays = list(tensor_wire.tensors_of(header, body).values())
        with torch.inference_mode():
            out = model(*(torch.from_numpy(a) for a in arrays))
        items = out if isinstance(out, tuple | list) else (out,)
        outputs = {}
        for index, item in enumerate(items):
            if not isinstance(item, torch.Tensor):
                return {"error": "output", "message": f"output {index} is a {type(item).__name__}, not a tensor"}, None
            array = item.detach().cpu().contiguous().numpy()
            if array.dtype.name not in tensor_wire.WIRE_DTYPES:
                return {"error": "output", "message": f"output {index} is a {array.dtype.name} tensor"}, None
            outputs[str(index)] = array
        return {"ok": True}, outputs
    except MemoryError as exc:
        return {"error": "memory", "detail": _detail(exc)}, None
    except (RuntimeError, torch.jit.Error) as exc:  # the model refused the inputs, or raised itself
        kind = "memory" if "allocate" in str(exc) else "invalid_argument"
        return {"error": kind, "detail": _detail(exc)}, None
    except Exception as exc:  # noqa: BLE001 - reported to serving, which answers INTERNAL
        return {"error": "internal", "detail": _detail(exc)}, None


def _receive(source: BinaryIO) -> tuple[dict[str, Any], bytearray] | None:
    prefix = _read(source, tensor_wire.PREFIX.size)
    if prefix is None:
        return None
    header_len, body_len = tensor_wire.parse_prefix(bytes(prefix), MAX_REQUEST_BODY)
    header, body = _read(source, header_len), _read(source, body_len)
    if header is None or body is None:
        return None
    return tensor_wire.parse_header(bytes(header)), body  # a writable body: models may work in place


def _read(source: BinaryIO, size: int) -> bytearray | None:
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        n = source.readinto(view[got:])
        if not n:
            return None
        got += n
    return buffer


def _send(out: BinaryIO, header: dict[str, Any], tensors: dict | None = None) -> None:
    out.writelines(tensor_wire.encode(header, tensors))
    out.flush()


def _detail(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:MAX_DETAIL]


if __name__ == "__main__":
    main()
