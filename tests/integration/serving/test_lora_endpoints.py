"""LoRA adapter versions behind endpoints, on their base version's engine, and per-endpoint engine settings.

Real registry, real serving, real vLLM (CPU) on the tiny Llama. Two adapter versions (peft folders
tagged `tessera.base_model`) behind two endpoints with equal engine settings share ONE engine of
the base version, separate from the base's own endpoint (default settings, so another engine);
each endpoint's greedy text equals transformers + peft with its adapter. The engine allows one
adapter per batch (max_loras=1), so answering both shows vLLM swapping adapters in (LRU).
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from pathlib import Path

import grpc
import pytest
from tessera.events.v1 import serving_pb2 as events_pb
from tessera.registry.v1 import registry_pb2 as rpb
from tessera.serving.v1 import serving_pb2 as pb

from services.common.auth import bearer
from services.fixtures.tiny_llama import build_tiny_llama
from services.serving.entities import BASE_MODEL_TAG
from services.serving.runtimes.llm import AdapterRuntime, LlmRuntime
from tests.integration.serving.conftest import ADMIN, ALICE, BOB, Mesh
from tests.integration.serving.support import error_of
from tests.polling import eventually

peft = pytest.importorskip("peft")

pytestmark = pytest.mark.integration

PROMPT = "Return a sorted list of the items."
TOKENS = 8
# Small engine for the adapters' base (and equal on both adapter endpoints, so they share it).
ENGINE = pb.EngineSettings(max_model_len=512, kv_cache_mib=64, max_num_seqs=4, max_loras=1, max_lora_rank=8)


def build_adapter(base: Path, out: Path, *, seed: int, rank: int = 8) -> Path:
    """A LoRA adapter with random (not zero) B, so it changes the output; `seed` makes each one differ."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32)
    config = peft.LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        init_lora_weights=False,
    )
    peft.get_peft_model(model, config).save_pretrained(out)
    return out


def peft_greedy(base: Path, adapter: Path) -> tuple[str, float]:
    """transformers + peft greedy text, and the smallest log-probability gap between the chosen token and
    the runner-up: the engine computes in another precision, so only a clear choice is comparable."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(
            ids,
            max_new_tokens=TOKENS,
            min_new_tokens=TOKENS,
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True,
        )
    gaps = [torch.topk(torch.log_softmax(score[0], -1), 2).values for score in out.scores]
    text = tokenizer.decode(out.sequences[0, ids.shape[1] :], skip_special_tokens=True)
    return text, min(float(top[0] - top[1]) for top in gaps)


async def register_adapter(mesh: Mesh, name: str, folder: Path, base: str) -> None:
    version = await mesh.registry.register(name, folder)
    await mesh.registry.stub.UpdateModelVersion(
        rpb.UpdateModelVersionRequest(model_name=name, version=version, set_tags={BASE_MODEL_TAG: base}),
        metadata=bearer(ADMIN),
    )


async def greedy(mesh: Mesh, endpoint: str, request_id: str) -> pb.GenerateResponse:
    return await mesh.serving_stub().Generate(
        pb.GenerateRequest(
            endpoint=endpoint,
            prompt=PROMPT,
            request_id=request_id,
            sampling=events_pb.SamplingParams(temperature=0.0, max_tokens=TOKENS, ignore_eos=True),
        ),
        metadata=bearer(ALICE),
        timeout=600,
    )


def create(name: str, model: str, engine: pb.EngineSettings | None = ENGINE) -> pb.CreateEndpointRequest:
    served = pb.ServedModel(model_name=model, version=1)
    if engine is not None:
        served.engine.CopyFrom(engine)
    return pb.CreateEndpointRequest(name=name, served_models=[served], wait=True)


async def test_two_adapter_endpoints_share_one_base_engine_and_answer_as_peft(mesh: Mesh) -> None:
    u = uuid.uuid4().hex[:8]
    schema = mesh.llm_model.rsplit(".", 1)[0]
    base_folder = build_tiny_llama()
    work = Path(tempfile.mkdtemp(prefix="lora-endpoints-"))
    adapters = {
        f"{schema}.lora_a_{u}": build_adapter(base_folder, work / "a", seed=13),
        f"{schema}.lora_b_{u}": build_adapter(base_folder, work / "b", seed=17),
    }
    for name, folder in adapters.items():
        await register_adapter(mesh, name, folder, f"{mesh.llm_model}/1")
        await mesh.registry.grant(rpb.SECURABLE_TYPE_REGISTERED_MODEL, name, "alice", [rpb.PRIVILEGE_EXECUTE])
    expected = {}
    for name, folder in adapters.items():
        expected[name], gap = await asyncio.to_thread(peft_greedy, base_folder, folder)
        assert gap > 0.02, f"{name}: a near-tie in peft's greedy path ({gap:.4f}); pick another seed"
    assert len(set(expected.values())) == 2  # each adapter matters, differently

    stub = mesh.serving_stub()
    endpoints = {name: f"lora-{name.rsplit('_', 2)[-2]}-{u}" for name in adapters}
    try:
        for name, endpoint in endpoints.items():
            created = await stub.CreateEndpoint(create(endpoint, name), metadata=bearer(ALICE), timeout=900)
            assert created.state == "READY", created.state_reason
            ((status,),) = [created.status]
            assert (status.runtime, status.base_model, status.base_version) == ("llm", mesh.llm_model, 1)
            assert created.served_models[0].engine == ENGINE  # stored with the endpoint

        # One engine of the base for both adapters, not the base endpoint's (default settings) one.
        models = {name: mesh.serving.endpoints.deployment(e).routes[0].model for name, e in endpoints.items()}
        a, b = models.values()
        assert isinstance(a.runtime, AdapterRuntime) and isinstance(b.runtime, AdapterRuntime)
        assert a.base is b.base and isinstance(a.base.runtime, LlmRuntime)
        assert a.runtime.adapter.adapter_id != b.runtime.adapter.adapter_id
        plain = mesh.serving.endpoints.deployment(mesh.llm_endpoint).routes[0].model
        assert plain.runtime is not a.base.runtime
        engines = [m for m in mesh.serving.endpoints.loaded() if isinstance(m.runtime, LlmRuntime)]
        assert sorted(m.key == a.base.key for m in engines).count(True) == 1

        # Alternating, twice: with one adapter per batch, vLLM swaps them in and out.
        answers = {}
        for round_ in range(2):
            for name, endpoint in endpoints.items():
                answers[name, round_] = await greedy(mesh, endpoint, f"lora-{u}-{endpoint}-{round_}")
        for (name, _round), answer in answers.items():
            assert answer.text == expected[name], name
            assert (answer.served_model, answer.model_version) == (name, "1")

        logged = await mesh.payloads.wait_for([a.request_id for a in answers.values()], timeout=120)
        for (name, _round), answer in answers.items():
            (record,) = logged[answer.request_id]
            assert (record.served_model, record.model_version) == (name, "1")
    finally:
        for endpoint in endpoints.values():
            try:
                await stub.DeleteEndpoint(pb.DeleteEndpointRequest(name=endpoint), metadata=bearer(ALICE))
            except grpc.aio.AioRpcError:
                pass
    # The last adapter out unloads the base engine it held (the base endpoint's own engine stays).
    for _ in range(600):
        if not any(isinstance(m.runtime, LlmRuntime) and m.key == a.base.key for m in mesh.serving.endpoints.loaded()):
            break
        await asyncio.sleep(0.5)
    else:
        pytest.fail("the adapters' base engine was not unloaded")
    assert plain in mesh.serving.endpoints.loaded()


async def test_an_adapter_over_the_engines_rank_fails_to_load_with_the_reason(mesh: Mesh) -> None:
    u = uuid.uuid4().hex[:8]
    name = f"{mesh.llm_model.rsplit('.', 1)[0]}.lora_big_{u}"
    folder = build_adapter(build_tiny_llama(), Path(tempfile.mkdtemp(prefix="lora-big-")) / "a", seed=3, rank=32)
    await register_adapter(mesh, name, folder, f"{mesh.llm_model}/1")
    await mesh.registry.grant(rpb.SECURABLE_TYPE_REGISTERED_MODEL, name, "alice", [rpb.PRIVILEGE_EXECUTE])
    stub = mesh.serving_stub()
    endpoint = f"lora-big-{u}"

    created = await stub.CreateEndpoint(create(endpoint, name), metadata=bearer(ALICE), timeout=600)
    try:
        assert created.state == "FAILED"
        assert "rank 32" in created.state_reason and "max_lora_rank 8" in created.state_reason
        error = await error_of(greedy(mesh, endpoint, f"big-{u}"))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        await stub.DeleteEndpoint(pb.DeleteEndpointRequest(name=endpoint), metadata=bearer(ALICE))


async def test_execute_on_the_adapter_and_on_its_base_is_needed(mesh: Mesh) -> None:
    u = uuid.uuid4().hex[:8]
    name = f"{mesh.llm_model.rsplit('.', 1)[0]}.lora_acl_{u}"
    folder = build_adapter(build_tiny_llama(), Path(tempfile.mkdtemp(prefix="lora-acl-")) / "a", seed=7)
    await register_adapter(mesh, name, folder, f"{mesh.llm_model}/1")
    stub = mesh.serving_stub()

    # bob holds EXECUTE on nothing: not on the adapter.
    error = await error_of(stub.CreateEndpoint(create(f"acl1-{u}", name), metadata=bearer(BOB)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    # On the adapter but not on its base: still refused, the adapter's weights run under the base's.
    await mesh.registry.grant(rpb.SECURABLE_TYPE_REGISTERED_MODEL, name, "bob", [rpb.PRIVILEGE_EXECUTE])

    async def refused_for_the_base() -> grpc.aio.AioRpcError | None:
        # The earlier refusal is cached until the registry's grant event reaches serving.
        error = await error_of(stub.CreateEndpoint(create(f"acl2-{u}", name), metadata=bearer(BOB)))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        return error if mesh.llm_model in error.details() else None

    assert await eventually(refused_for_the_base, timeout=60), "bob was not refused for lacking EXECUTE on the base"


async def test_an_alias_is_not_followed_onto_an_adapter_whose_base_the_endpoints_creator_may_not_use(
    mesh: Mesh,
) -> None:
    u = uuid.uuid4().hex[:8]
    schema = mesh.llm_model.rsplit(".", 1)[0]
    adapter, other_base = f"{schema}.lora_moved_{u}", f"{schema}.other_base_{u}"
    work = Path(tempfile.mkdtemp(prefix="lora-moved-"))
    await register_adapter(mesh, adapter, build_adapter(build_tiny_llama(), work / "a", seed=11), f"{mesh.llm_model}/1")
    await mesh.registry.set_alias(adapter, "champion", 1)
    for model in (adapter, mesh.llm_model):
        await mesh.registry.grant(rpb.SECURABLE_TYPE_REGISTERED_MODEL, model, "bob", [rpb.PRIVILEGE_EXECUTE])
    served = pb.ServedModel(model_name=adapter, alias="champion", engine=ENGINE)
    request = pb.CreateEndpointRequest(name=f"moved-{u}", served_models=[served], wait=True)
    stub = mesh.serving_stub()

    async def created() -> bool:  # once the grant events reached serving (an earlier refusal may be cached)
        try:
            return (await stub.CreateEndpoint(request, metadata=bearer(BOB), timeout=900)).state == "READY"
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error.details()
            return False

    assert await eventually(created, timeout=120)
    # Version 2 of the adapter sits on another base, which bob may not use; the alias moves there.
    await mesh.registry.register(other_base, build_tiny_llama())
    version = await mesh.registry.register(
        adapter, build_adapter(build_tiny_llama(), work / "b", seed=12), new_model=False
    )
    await mesh.registry.stub.UpdateModelVersion(
        rpb.UpdateModelVersionRequest(
            model_name=adapter, version=version, set_tags={BASE_MODEL_TAG: f"{other_base}/1"}
        ),
        metadata=bearer(ADMIN),
    )
    await mesh.registry.set_alias(adapter, "champion", version)

    async def refused() -> pb.ServedModelStatus | None:
        endpoint = await stub.GetEndpoint(pb.GetEndpointRequest(name=request.name), metadata=bearer(BOB))
        (status,) = endpoint.status
        return status if "not followed" in status.state_reason else None

    status = await eventually(refused, timeout=60)
    assert status, "the alias move was not refused"
    assert (status.version, status.state) == (1, "READY") and other_base in status.state_reason
    assert "EXECUTE" in status.state_reason
    answer = await stub.Generate(
        pb.GenerateRequest(
            endpoint=request.name,
            prompt=PROMPT,
            sampling=events_pb.SamplingParams(temperature=0.0, max_tokens=2, ignore_eos=True),
        ),
        metadata=bearer(BOB),
        timeout=600,
    )
    assert answer.model_version == "1"  # still the version on the base bob may use
