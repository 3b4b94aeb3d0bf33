"""The Open Inference Protocol with the stock tritonclient[grpc] client, and malformed OIP input."""

from __future__ import annotations

import asyncio
import json
import struct
import sys

import grpc
import pytest
from inference import grpc_service_pb2 as oip

from services.common.auth import bearer
from tests.infrastructure import ROOT
from tests.integration.serving.conftest import ALICE, Mesh

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def triton(mesh: Mesh) -> dict:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.serving.tritonclient_calls",
        mesh.address,
        ALICE,
        mesh.llm_endpoint,
        mesh.tabular_endpoint,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode == 0, stderr.decode()[-3000:]
    return json.loads(stdout.decode().strip().splitlines()[-1])


async def test_liveness_readiness_and_metadata(triton: dict, mesh: Mesh) -> None:
    assert triton["live"] is True and triton["ready"] is True and triton["llm_ready"] is True
    assert triton["server"]["name"] == "tessera-serving"
    llm = triton["llm_metadata"]
    assert llm["name"] == mesh.llm_endpoint and llm["versions"] == ["1"] and llm["platform"] == "vllm"
    assert [(i["name"], i["datatype"]) for i in llm["inputs"]] == [("text_input", "BYTES")]
    tensor = triton["tensor_metadata"]
    assert [(i["name"], i["datatype"], i["shape"]) for i in tensor["inputs"]] == [
        ("features", "FP32", ["-1", "4"]),
        ("category", "INT64", ["-1"]),
    ]
    assert [(o["name"], o["datatype"]) for o in tensor["outputs"]] == [("score", "FP32")]


async def test_bytes_infer_returns_generated_text(triton: dict) -> None:
    reply = triton["bytes_infer"]
    assert reply["id"] == "triton-bytes-1"
    assert reply["text"] and 0 < reply["completion_tokens"] <= 12


async def test_fp32_and_int64_tensors_run_through_the_torchscript_model(triton: dict, mesh: Mesh) -> None:
    reply = triton["fp32_infer"]
    # Version 1 of the tabular model: score = sum(features) + category.
    assert reply["version"] == str(mesh.tabular_versions[0])
    assert reply["datatype"] == "FP32"
    assert reply["score"] == [[20.0], [22.0]]


async def test_the_repository_index_lists_both_endpoints_ready(triton: dict, mesh: Mesh) -> None:
    models = {m["name"]: m for m in triton["repository_index"]["models"]}

    assert models[mesh.llm_endpoint]["version"] == "1" and models[mesh.llm_endpoint]["state"] == "READY"
    assert models[mesh.tabular_endpoint]["version"] == str(mesh.tabular_versions[0])
    assert models[mesh.tabular_endpoint]["state"] == "READY"


async def test_model_config_describes_the_tensor_signature(triton: dict, mesh: Mesh) -> None:
    config = triton["tensor_config"]["config"]

    assert (config["name"], config["platform"], config["backend"]) == (
        mesh.tabular_endpoint,
        "pytorch_libtorch",
        "pytorch",
    )
    assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [
        ("features", "TYPE_FP32", ["-1", "4"]),
        ("category", "TYPE_INT64", ["-1"]),
    ]
    assert [(o["name"], o["data_type"]) for o in config["output"]] == [("score", "TYPE_FP32")]


async def test_inference_statistics_count_the_tensor_calls(triton: dict, mesh: Mesh) -> None:
    (stats,) = triton["tensor_statistics"]["model_stats"]

    assert (stats["name"], stats["version"]) == (mesh.tabular_endpoint, str(mesh.tabular_versions[0]))
    assert int(stats["inference_count"]) >= 2  # the two rows scored just before
    assert int(stats["inference_stats"]["success"]["count"]) >= 1
    assert int(stats["inference_stats"]["success"]["ns"]) > 0 and int(stats["last_inference"]) > 0


async def test_streaming_yields_deltas_that_add_up_to_the_unary_text(triton: dict) -> None:
    stream = triton["stream"]
    assert "stream_error" not in triton
    assert len(stream["deltas"]) > 1
    assert stream["finals"] == [False] * (len(stream["finals"]) - 1) + [True]
    assert "".join(stream["deltas"]) == triton["bytes_infer"]["text"]
    assert "does not exist" in triton["stream_missing_error"]


async def test_unknown_endpoint_is_not_found(triton: dict) -> None:
    assert triton["missing"]["status"] == "StatusCode.NOT_FOUND"


def _tensor_request(mesh: Mesh, raw: bytes, shape: list[int], request_id: str) -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name=mesh.tabular_endpoint, id=request_id)
    request.inputs.add(name="features", datatype="FP32", shape=shape)
    request.inputs.add(name="category", datatype="INT64", shape=[shape[0]])
    request.raw_input_contents.extend([raw, struct.pack("<q", 1) * shape[0]])
    return request


@pytest.mark.parametrize(
    ("raw", "shape", "reason"),
    [
        (struct.pack("<3f", 1, 2, 3), [1, 4], "needs 16 bytes"),  # too few bytes for the shape
        (struct.pack("<4f", 1, 2, 3, 4), [2, 2], "must have shape"),  # the model takes [-1, 4]
    ],
    ids=["short-buffer", "wrong-shape"],
)
async def test_malformed_tensors_are_invalid_argument(mesh: Mesh, raw: bytes, shape: list[int], reason: str) -> None:
    request_id = f"malformed-{shape[0]}x{shape[1]}"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mesh.oip_stub().ModelInfer(_tensor_request(mesh, raw, shape, request_id), metadata=bearer(ALICE))

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason in caught.value.details()
    logged = await mesh.payloads.wait_for([request_id])
    assert [r.status for r in logged[request_id]] == ["INVALID_ARGUMENT"]
