"""Per-served-model engine settings: stored with the endpoint, bounded by the operator, engines keyed by them.

Real registry, serving and vLLM (CPU) on the tiny Llama: two endpoints with equal settings on one
version share one engine, a third with other settings gets its own, and every answer is the same
greedy text as the process-default engine's.
"""

from __future__ import annotations

import uuid

import grpc
import pytest
from tessera.events.v1 import serving_pb2 as events_pb
from tessera.serving.v1 import serving_pb2 as pb

from services.common.auth import bearer
from services.serving.runtimes.llm import LlmRuntime
from tests.integration.serving.conftest import ALICE, Mesh
from tests.integration.serving.support import error_of

pytestmark = pytest.mark.integration

GREEDY = events_pb.SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)


def create(name: str, model: str, engine: pb.EngineSettings) -> pb.CreateEndpointRequest:
    served = pb.ServedModel(model_name=model, version=1, engine=engine)
    return pb.CreateEndpointRequest(name=name, served_models=[served], wait=True)


async def test_equal_settings_share_an_engine_and_different_ones_do_not(mesh: Mesh) -> None:
    u = uuid.uuid4().hex[:8]
    small = pb.EngineSettings(max_model_len=256, kv_cache_mib=32, max_num_seqs=2)
    other = pb.EngineSettings(max_model_len=256, kv_cache_mib=32, max_num_seqs=3, enable_prefix_caching=True)
    endpoints = {f"eng-a-{u}": small, f"eng-b-{u}": small, f"eng-c-{u}": other}
    stub = mesh.serving_stub()
    try:
        for name, engine in endpoints.items():
            created = await stub.CreateEndpoint(
                create(name, mesh.llm_model, engine), metadata=bearer(ALICE), timeout=900
            )
            assert created.state == "READY", created.state_reason
        listed = await stub.GetEndpoint(pb.GetEndpointRequest(name=f"eng-c-{u}"), metadata=bearer(ALICE))
        assert listed.served_models[0].engine == other  # stored with the endpoint

        runtimes = {name: mesh.serving.endpoints.deployment(name).routes[0].model.runtime for name in endpoints}
        default = mesh.serving.endpoints.deployment(mesh.llm_endpoint).routes[0].model.runtime
        assert runtimes[f"eng-a-{u}"] is runtimes[f"eng-b-{u}"]
        assert len({id(r) for r in (*runtimes.values(), default)}) == 3
        assert all(isinstance(r, LlmRuntime) for r in runtimes.values())

        texts = set()
        for name in (*endpoints, mesh.llm_endpoint):
            answer = await stub.Generate(
                pb.GenerateRequest(endpoint=name, prompt="Sort a list.", sampling=GREEDY),
                metadata=bearer(ALICE),
                timeout=600,
            )
            assert (answer.served_model, answer.model_version) == (mesh.llm_model, "1")
            texts.add(answer.text)
        assert len(texts) == 1  # settings change the engine, not the model
    finally:
        for name in endpoints:
            try:
                await stub.DeleteEndpoint(pb.DeleteEndpointRequest(name=name), metadata=bearer(ALICE))
            except grpc.aio.AioRpcError:
                pass


@pytest.mark.parametrize(
    "engine",
    [
        pb.EngineSettings(max_num_seqs=1_000_000),
        pb.EngineSettings(max_model_len=10**9),
        pb.EngineSettings(kv_cache_mib=0),
        pb.EngineSettings(max_loras=1000),
        pb.EngineSettings(max_lora_rank=7),
    ],
)
async def test_engine_settings_beyond_the_operators_bounds_are_invalid(mesh: Mesh, engine: pb.EngineSettings) -> None:
    request = create(f"bounds-{uuid.uuid4().hex[:8]}", mesh.llm_model, engine)

    error = await error_of(mesh.serving_stub().CreateEndpoint(request, metadata=bearer(ALICE)))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "engine." in error.details()


async def test_engine_settings_on_a_tensor_model_fail_its_route(mesh: Mesh) -> None:
    endpoint = f"tab-engine-{uuid.uuid4().hex[:8]}"
    request = pb.CreateEndpointRequest(
        name=endpoint,
        served_models=[
            pb.ServedModel(model_name=mesh.tabular_model, version=1, engine=pb.EngineSettings(max_num_seqs=2))
        ],
        wait=True,
    )

    created = await mesh.serving_stub().CreateEndpoint(request, metadata=bearer(ALICE))
    try:
        assert created.state == "FAILED" and "LLMs only" in created.state_reason
    finally:
        await mesh.serving_stub().DeleteEndpoint(pb.DeleteEndpointRequest(name=endpoint), metadata=bearer(ALICE))
