"""The pipe between serving and a tensor worker: length-prefixed frames of JSON plus raw tensor bytes.

One frame is `<u32 header length><u64 body length><header JSON><body>`. The
header's "tensors" list names each tensor's dtype and shape; the body holds
their little-endian bytes back to back, in that order. No pickle: the worker
runs an untrusted model, so serving parses what comes back as data, with every
length, count, dtype and shape bounded before anything is allocated.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

PREFIX = struct.Struct("<IQ")
MAX_HEADER_BYTES = 1 << 20
MAX_TENSORS = 64
MAX_DIMS = 16
MAX_NAME = 256

# The only dtypes that cross the pipe, by their numpy names.
WIRE_DTYPES = {
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    "int64": np.dtype("<i8"),
    "int32": np.dtype("<i4"),
    "bool": np.dtype("?"),
}


class WireError(Exception):
    """A frame that breaks the protocol (a worker that misbehaves, or a dead one)."""


def encode(header: Mapping[str, Any], tensors: Mapping[str, np.ndarray] | None = None) -> list[bytes]:
    """A frame as buffers to write in order (tensor bytes are not copied into one blob)."""
    head = dict(header)
    parts: list[bytes] = []
    if tensors is not None:
        head["tensors"] = []
        for name, array in tensors.items():
            array = np.ascontiguousarray(array)
            if array.dtype.byteorder == ">":
                array = array.astype(array.dtype.newbyteorder("<"))
            head["tensors"].append({"name": name, "dtype": array.dtype.name, "shape": list(array.shape)})
            parts.append(array.data.cast("B") if array.size else b"")
    data = json.dumps(head).encode()
    body_len = sum(len(p) for p in parts)
    return [PREFIX.pack(len(data), body_len), data, *parts]


def parse_prefix(prefix: bytes, max_body: int) -> tuple[int, int]:
    header_len, body_len = PREFIX.unpack(prefix)
    if header_len > MAX_HEADER_BYTES:
        raise WireError(f"header of {header_len} bytes is over {MAX_HEADER_BYTES}")
    if body_len > max_body:
        raise WireError(f"body of {body_len} bytes is over {max_body}")
    return header_len, body_len


def parse_header(data: bytes) -> dict[str, Any]:
    try:
        header = json.loads(data)
    except ValueError as exc:
        raise WireError("header is not JSON") from exc
    if not isinstance(header, dict):
        raise WireError("header is not an object")
    return header


def tensors_of(header: Mapping[str, Any], body: bytes) -> dict[str, np.ndarray]:
    """The tensors a frame carries, each checked against its share of the body (views, no copy)."""
    items = header.get("tensors", [])
    if not isinstance(items, list) or len(items) > MAX_TENSORS:
        raise WireError("bad tensor list")
    tensors: dict[str, np.ndarray] = {}
    view, offset = memoryview(body), 0
    for item in items:
        if not isinstance(item, dict):
            raise WireError("bad tensor entry")
        name, dtype_name, shape = item.get("name"), item.get("dtype"), item.get("shape")
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME or name in tensors:
            raise WireError("bad tensor name")
        dtype = WIRE_DTYPES.get(dtype_name) if isinstance(dtype_name, str) else None
        if dtype is None:
            raise WireError(f"dtype {str(dtype_name)[:32]!r} does not cross the pipe")
        if (
            not isinstance(shape, list)
            or len(shape) > MAX_DIMS
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= len(body) for d in shape)
        ):
            raise WireError("bad tensor shape")
        size = math.prod(shape) * dtype.itemsize
        if offset + size > len(body):
            raise WireError("tensors run past the body")
        tensors[name] = np.frombuffer(view[offset : offset + size], dtype=dtype).reshape(shape)
        offset += size
    if offset != len(body):
        raise WireError("body holds bytes no tensor names")
    return tensors
