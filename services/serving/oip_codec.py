"""Open Inference Protocol tensors <-> numpy, and the text and sampling an LLM call carries.

BYTES tensors in `raw_input_contents` use the 4-byte little-endian length prefix
per element; numeric ones are little-endian arrays.

Every bound is checked before any tensor is built (DESIGN: "bounded before any
work is done on it"): the request's size first (one `ByteSize()`), then for
each input its name, its number of dimensions, each dimension and their
product, and for BYTES the element count, before the per-element loop runs.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping

import numpy as np
from inference import grpc_service_pb2 as oip

from services.common.errors import InvalidArgument, ResourceExhausted
from services.serving.entities import SamplingSpec

NUMPY_TYPES = {
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "INT64": np.dtype("<i8"),
    "INT32": np.dtype("<i4"),
    "BOOL": np.dtype("?"),
}
_CONTENTS = {
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "INT64": "int64_contents",
    "INT32": "int_contents",
    "BOOL": "bool_contents",
    "BYTES": "bytes_contents",
}
MAX_INPUTS = 64
MAX_NAME = 256
MAX_DIMS = 16
# BYTES inputs carry prompts and JSON parameters: a handful of elements, each decoded in Python.
MAX_BYTES_ELEMENTS = 1024


def decode_inputs(request: oip.ModelInferRequest, *, max_request_bytes: int) -> dict[str, np.ndarray]:
    size = request.ByteSize()
    if size > max_request_bytes:
        raise ResourceExhausted(f"request of {size} bytes is over the limit of {max_request_bytes} bytes")
    if len(request.inputs) > MAX_INPUTS:
        raise InvalidArgument(f"{len(request.inputs)} inputs; at most {MAX_INPUTS}")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidArgument(f"{len(request.inputs)} inputs but {len(raw)} raw_input_contents")
    tensors: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        name = tensor.name
        if not 0 < len(name) <= MAX_NAME:
            raise InvalidArgument(f"input names are 1-{MAX_NAME} characters")
        if name in tensors:
            raise InvalidArgument(f"input {name!r} given twice")
        shape = tuple(tensor.shape)
        count = _element_count(name, tensor.datatype, shape, max_request_bytes)
        if raw:
            tensors[name] = _from_raw(name, tensor.datatype, shape, count, raw[index])
        else:
            tensors[name] = _from_contents(tensor, shape, count)
    return tensors


def _element_count(name: str, datatype: str, shape: tuple[int, ...], max_elements: int) -> int:
    """The number of elements `shape` holds, refused when it could not fit in the request."""
    if len(shape) > MAX_DIMS:
        raise InvalidArgument(f"input {name!r}: {len(shape)} dimensions; at most {MAX_DIMS}")
    if any(d < 0 for d in shape):
        raise InvalidArgument(f"input {name!r}: shape {list(shape)} has a negative dimension")
    if any(d > max_elements for d in shape) or math.prod(shape) > max_elements:
        raise InvalidArgument(f"input {name!r}: shape {list(shape)} holds more elements than the request can carry")
    count = math.prod(shape)
    if datatype == "BYTES" and count > MAX_BYTES_ELEMENTS:
        raise InvalidArgument(f"input {name!r}: {count} BYTES elements; at most {MAX_BYTES_ELEMENTS}")
    return count


def _from_raw(name: str, datatype: str, shape: tuple[int, ...], count: int, data: bytes) -> np.ndarray:
    if datatype == "BYTES":
        items, offset = [], 0
        while offset < len(data):
            if len(items) == count:
                raise InvalidArgument(f"input {name!r}: shape {list(shape)} needs {count} elements, got more")
            if offset + 4 > len(data):
                raise InvalidArgument(f"input {name!r}: truncated BYTES length prefix")
            (length,) = struct.unpack_from("<I", data, offset)
            offset += 4
            if offset + length > len(data):
                raise InvalidArgument(f"input {name!r}: BYTES element runs past the end of the tensor")
            items.append(bytes(data[offset : offset + length]))
            offset += length
        if len(items) != count:
            raise InvalidArgument(f"input {name!r}: shape {list(shape)} needs {count} elements, got {len(items)}")
        return np.array(items, dtype=object).reshape(shape)
    dtype = NUMPY_TYPES.get(datatype)
    if dtype is None:
        raise InvalidArgument(f"input {name!r}: datatype {datatype[:16]!r} is not supported (FP32, INT64, BYTES...)")
    if len(data) != count * dtype.itemsize:
        raise InvalidArgument(
            f"input {name!r}: shape {list(shape)} of {datatype} needs {count * dtype.itemsize} bytes, got {len(data)}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _from_contents(tensor, shape: tuple[int, ...], count: int) -> np.ndarray:
    field = _CONTENTS.get(tensor.datatype)
    if field is None:
        raise InvalidArgument(f"input {tensor.name!r}: datatype {tensor.datatype[:16]!r} is not supported")
    contents = getattr(tensor.contents, field)
    if len(contents) != count:  # counted before anything is copied
        raise InvalidArgument(f"input {tensor.name!r}: shape {list(shape)} needs {count} values, got {len(contents)}")
    values = list(contents)
    if tensor.datatype == "BYTES":
        return np.array(values, dtype=object).reshape(shape)
    return np.asarray(values, dtype=NUMPY_TYPES[tensor.datatype]).reshape(shape)


def datatype_of(array: np.ndarray) -> str:
    for name, dtype in NUMPY_TYPES.items():
        if array.dtype == dtype:
            return name
    if array.dtype == np.float32:
        return "FP32"
    raise InvalidArgument(f"the model returned a {array.dtype} tensor, which OIP cannot carry here")


def add_output(response: oip.ModelInferResponse, name: str, array: np.ndarray) -> None:
    if array.dtype == object:
        response.outputs.add(name=name, datatype="BYTES", shape=list(array.shape))
        response.raw_output_contents.append(encode_bytes(array.reshape(-1).tolist()))
        return
    datatype = datatype_of(array)
    response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
    response.raw_output_contents.append(np.ascontiguousarray(array, dtype=NUMPY_TYPES[datatype]).tobytes())


def encode_bytes(items: list[bytes | str]) -> bytes:
    out = bytearray()
    for item in items:
        data = item.encode() if isinstance(item, str) else item
        out += struct.pack("<I", len(data)) + data
    return bytes(out)


def is_text_request(tensors: Mapping[str, np.ndarray]) -> bool:
    return any(array.dtype == object for array in tensors.values())


def prompt_of(tensors: Mapping[str, np.ndarray]) -> str:
    text = tensors.get("text_input")
    if text is None:
        names = [n for n, a in tensors.items() if a.dtype == object and n not in ("sampling_parameters",)]
        if len(names) != 1:
            raise InvalidArgument("an LLM takes one BYTES input named 'text_input'")
        text = tensors[names[0]]
    if text.size != 1:
        raise InvalidArgument(f"'text_input' holds one prompt (shape [1]), got {text.size} elements")
    value = text.reshape(-1)[0]
    try:
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)
    except UnicodeDecodeError as exc:
        raise InvalidArgument("'text_input' is not UTF-8") from exc


def sampling_of(request: oip.ModelInferRequest, tensors: Mapping[str, np.ndarray]) -> SamplingSpec:
    """Sampling from request parameters, or a JSON `sampling_parameters` input (Triton vLLM style)."""
    values: dict[str, object] = {}
    for key, param in request.parameters.items():
        which = param.WhichOneof("parameter_choice")
        if which:
            values[key] = getattr(param, which)
    if "sampling_parameters" in tensors:
        raw = tensors["sampling_parameters"].reshape(-1)[0]
        try:
            values.update(json.loads(raw))
        except (ValueError, TypeError) as exc:
            raise InvalidArgument(f"sampling_parameters is not JSON: {exc}") from exc
    try:
        stop = values.get("stop") or ()
        return SamplingSpec(
            temperature=_opt(float, values.get("temperature")),
            top_p=_opt(float, values.get("top_p")),
            max_tokens=_opt(int, values.get("max_tokens")),
            stop=(stop,) if isinstance(stop, str) else tuple(stop),
            seed=_opt(int, values.get("seed")),
            ignore_eos=bool(values.get("ignore_eos", False)),
        )
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"bad sampling parameter: {exc}") from exc


def _opt(kind, value):
    return None if value is None else kind(value)
