"""Helpers shared by the serving integration tests: tabular requests, expected errors, a second replica."""

from __future__ import annotations

import contextlib
import struct
import uuid
from collections.abc import AsyncIterator, Awaitable

import grpc
import pytest
from inference import grpc_service_pb2 as oip

from services.serving.app import ServingApp
from tests.integration.serving.conftest import Mesh


def tabular_request(endpoint: str, request_id: str = "", ones: float = 1.0) -> oip.ModelInferRequest:
    """features = [ones]*4, category 0: v1 of the test model answers 4*ones, v2 twice that."""
    request = oip.ModelInferRequest(model_name=endpoint, id=request_id or f"t-{uuid.uuid4().hex[:8]}")
    request.inputs.add(name="features", datatype="FP32", shape=[1, 4])
    request.inputs.add(name="category", datatype="INT64", shape=[1])
    request.raw_input_contents.extend([struct.pack("<4f", ones, ones, ones, ones), struct.pack("<q", 0)])
    return request


def score_of(response: oip.ModelInferResponse) -> float:
    (score,) = struct.unpack("<f", response.raw_output_contents[0])
    return score


async def error_of(call: Awaitable) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


@contextlib.asynccontextmanager
async def replica(mesh: Mesh) -> AsyncIterator[ServingApp]:
    """A second serving replica on the same schema, registry topic and cache, following registry events."""
    settings = mesh.serving.settings
    app = ServingApp(
        type(settings)(**{**settings.__dict__, "grpc_port": 0, "serving_run_request_consumer": False}),
        serve_metrics=False,
    )
    await app.start()
    try:
        yield app
    finally:
        await app.stop()
