"""Open Inference Protocol tensors: raw and typed contents, BYTES length prefixes, sampling parameters."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from inference import grpc_service_pb2 as oip

from services.common.errors import InvalidArgument, ResourceExhausted
from services.serving import oip_codec

pytestmark = pytest.mark.unit

LIMIT = 64 * 1024


def _request(*inputs: tuple[str, str, list[int]], raw: list[bytes] | None = None) -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name="ep")
    for name, datatype, shape in inputs:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
    request.raw_input_contents.extend(raw or [])
    return request


def test_raw_bytes_and_fp32_inputs_decode() -> None:
    request = _request(
        ("text_input", "BYTES", [1]),
        ("x", "FP32", [2]),
        raw=[oip_codec.encode_bytes(["héllo"]), struct.pack("<2f", 1.5, 2)],
    )
    tensors = oip_codec.decode_inputs(request, max_request_bytes=LIMIT)
    assert oip_codec.prompt_of(tensors) == "héllo"
    assert tensors["x"].tolist() == [1.5, 2.0] and tensors["x"].dtype == np.float32


def test_typed_contents_decode() -> None:
    request = _request(("ids", "INT64", [1, 3]))
    request.inputs[0].contents.int64_contents.extend([1, 2, 3])
    assert oip_codec.decode_inputs(request, max_request_bytes=LIMIT)["ids"].tolist() == [[1, 2, 3]]


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (_request(("x", "FP32", [4]), raw=[b"\0" * 12]), "needs 16 bytes"),
        (_request(("t", "BYTES", [1]), raw=[struct.pack("<I", 10) + b"abc"]), "runs past the end"),
        (_request(("t", "BYTES", [2]), raw=[oip_codec.encode_bytes(["a"])]), "needs 2 elements"),
        (_request(("x", "FP16", [1]), raw=[b"\0\0"]), "not supported"),
        (_request(("x", "FP32", [1]), ("y", "FP32", [1]), raw=[b"\0" * 4]), "raw_input_contents"),
        (_request(("x", "FP32", [-1]), raw=[b""]), "negative"),
    ],
    ids=["short-fp32", "truncated-bytes", "too-few-elements", "fp16", "raw-count", "negative-shape"],
)
def test_malformed_tensors_are_invalid_arguments(request_: oip.ModelInferRequest, reason: str) -> None:
    with pytest.raises(InvalidArgument, match=reason):
        oip_codec.decode_inputs(request_, max_request_bytes=LIMIT)


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        # 2**62 * 4 wraps to 0 in int64: counted in Python integers, it is refused instead of matching b"".
        (_request(("x", "FP32", [2**62, 4]), raw=[b""]), "more elements than the request can carry"),
        (_request(("x", "FP32", [LIMIT + 1, 0]), raw=[b""]), "more elements than the request can carry"),
        (_request(("x", "FP32", [1] * 17), raw=[b"\0" * 4]), "at most 16"),
        (_request(("t", "BYTES", [2000]), raw=[oip_codec.encode_bytes(["a"] * 2000)]), "at most 1024"),
        (_request(("t", "BYTES", [1]), raw=[oip_codec.encode_bytes(["a", "b"])]), "got more"),
        (_request(*[(f"x{i}", "FP32", [1]) for i in range(65)]), "at most 64"),
        (_request(("", "FP32", [1]), raw=[b"\0" * 4]), "input names"),
    ],
    ids=["int64-wrap", "huge-dim", "too-many-dims", "bytes-count", "extra-bytes", "too-many-inputs", "no-name"],
)
def test_bounds_are_checked_before_any_tensor_is_built(request_: oip.ModelInferRequest, reason: str) -> None:
    with pytest.raises(InvalidArgument, match=reason):
        oip_codec.decode_inputs(request_, max_request_bytes=LIMIT)


def test_a_request_over_the_size_limit_is_refused_before_decoding() -> None:
    request = _request(("x", "FP32", [LIMIT // 4 + 1]), raw=[b"\0" * (LIMIT + 4)])
    with pytest.raises(ResourceExhausted, match=f"over the limit of {LIMIT} bytes"):
        oip_codec.decode_inputs(request, max_request_bytes=LIMIT)


def test_sampling_comes_from_parameters_and_a_json_input() -> None:
    request = _request(("text_input", "BYTES", [1]), ("sampling_parameters", "BYTES", [1]))
    request.parameters["max_tokens"].int64_param = 7
    request.parameters["temperature"].double_param = 0.5
    tensors = {
        "text_input": np.array([b"hi"], dtype=object),
        "sampling_parameters": np.array([b'{"top_p": 0.9, "stop": "END"}'], dtype=object),
    }
    sampling = oip_codec.sampling_of(request, tensors)
    assert (sampling.max_tokens, sampling.temperature, sampling.top_p, sampling.stop) == (7, 0.5, 0.9, ("END",))


def test_outputs_round_trip_as_raw_contents() -> None:
    response = oip.ModelInferResponse()
    oip_codec.add_output(response, "score", np.array([[1.0], [2.0]], dtype=np.float32))
    oip_codec.add_output(response, "text_output", np.array([b"ok"], dtype=object))
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("score", "FP32", [2, 1]),
        ("text_output", "BYTES", [1]),
    ]
    assert np.frombuffer(response.raw_output_contents[0], "<f4").tolist() == [1.0, 2.0]
    assert response.raw_output_contents[1] == struct.pack("<I", 2) + b"ok"
