"""The pipe to a tensor worker: what serving accepts back from a worker that may be hostile."""

from __future__ import annotations

import json

import numpy as np
import pytest

from services.serving.runtimes import tensor_wire

pytestmark = pytest.mark.unit


def _frame(header: dict, body: bytes) -> tuple[dict, bytes]:
    return tensor_wire.parse_header(json.dumps(header).encode()), body


def test_tensors_round_trip_through_a_frame() -> None:
    tensors = {"0": np.array([[1.5, 2.0]], dtype=np.float32), "1": np.array([7], dtype=np.int64)}
    prefix, header, *parts = tensor_wire.encode({"ok": True}, tensors)
    header_len, body_len = tensor_wire.parse_prefix(prefix, 1 << 20)
    decoded = tensor_wire.tensors_of(tensor_wire.parse_header(header), b"".join(bytes(p) for p in parts))

    assert (header_len, body_len) == (len(header), 2 * 4 + 8)
    assert {k: (v.dtype, v.tolist()) for k, v in decoded.items()} == {
        "0": (np.dtype("float32"), [[1.5, 2.0]]),
        "1": (np.dtype("int64"), [7]),
    }


def test_a_frame_over_its_bounds_is_refused_before_it_is_read() -> None:
    with pytest.raises(tensor_wire.WireError, match="body"):
        tensor_wire.parse_prefix(tensor_wire.PREFIX.pack(10, 1 << 40), 1 << 20)
    with pytest.raises(tensor_wire.WireError, match="header"):
        tensor_wire.parse_prefix(tensor_wire.PREFIX.pack(1 << 30, 0), 1 << 20)


@pytest.mark.parametrize(
    ("entry", "body", "reason"),
    [
        ({"name": "0", "dtype": "object", "shape": [1]}, b"\0" * 8, "does not cross"),
        ({"name": "0", "dtype": "float32", "shape": [2**62, 4]}, b"", "shape"),
        ({"name": "0", "dtype": "float32", "shape": [4]}, b"\0" * 8, "past the body"),
        ({"name": "0", "dtype": "float32", "shape": [1]}, b"\0" * 8, "no tensor names"),
        ({"name": "", "dtype": "float32", "shape": [1]}, b"\0" * 4, "name"),
        ({"name": "0", "dtype": "float32", "shape": [True]}, b"\0" * 4, "shape"),
    ],
    ids=["dtype", "huge-shape", "short-body", "extra-bytes", "no-name", "bool-dim"],
)
def test_a_malformed_reply_is_a_protocol_error(entry: dict, body: bytes, reason: str) -> None:
    header, body = _frame({"tensors": [entry]}, body)
    with pytest.raises(tensor_wire.WireError, match=reason):
        tensor_wire.tensors_of(header, body)
