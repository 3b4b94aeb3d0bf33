"""Usage, prices, limits and budgets: enforced at admission across two replicas, settled by what calls used."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import openai
import pytest
from prometheus_client import REGISTRY
from tessera.registry.v1 import registry_pb2 as rpb
from tessera.serving.v1 import serving_pb2 as pb

from services.common.auth import bearer
from tests.integration.serving.conftest import ADMIN, ALICE, BOB, LLM_PRICES, Mesh
from tests.integration.serving.support import error_of, replica, tabular_request

pytestmark = pytest.mark.integration

PROMPT = "Sort."


def sdk(port: int, token: str = ALICE) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=token, max_retries=0)


async def new_endpoint(mesh: Mesh, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    await mesh.serving_stub().CreateEndpoint(
        pb.CreateEndpointRequest(
            name=name, served_models=[pb.ServedModel(model_name=mesh.llm_model, version=1)], wait=True
        ),
        metadata=bearer(ALICE),
    )
    return name


async def set_limit(mesh: Mesh, endpoint: str, metric: str, period: str, limit: float, principal: str = "") -> None:
    await mesh.serving_stub().SetUsageLimit(
        pb.SetUsageLimitRequest(
            limit=pb.UsageLimit(endpoint=endpoint, principal=principal, metric=metric, period=period, limit=limit)
        ),
        metadata=bearer(ALICE),
    )


async def test_a_budget_shared_by_32_callers_on_two_replicas_is_never_overspent(mesh: Mesh) -> None:
    name = await new_endpoint(mesh, "budget")
    budget = 400  # tokens a day: each call reserves its prompt bound and 16 tokens, and uses less
    await set_limit(mesh, name, "tokens", "day", budget)
    async with replica(mesh) as second:
        await second.endpoints.apply(name)
        await asyncio.wait_for(second.endpoints.deployment(name).loaded.wait(), 600)
        ports = [mesh.serving.http_port, second.http_port]

        async def call(i: int):
            try:
                return await sdk(ports[i % 2]).completions.create(
                    model=name, prompt=PROMPT, max_tokens=16, temperature=1.0, seed=i
                )
            except openai.RateLimitError as refused:
                return refused

        outcomes = await asyncio.gather(*(call(i) for i in range(32)))
        await mesh.serving.usage.drained()
        await second.usage.drained()

    served = [o for o in outcomes if not isinstance(o, openai.RateLimitError)]
    refused = [o for o in outcomes if isinstance(o, openai.RateLimitError)]
    used = sum(o.usage.total_tokens for o in served)
    assert served and refused
    assert used <= budget
    assert all(r.status_code == 429 and int(r.response.headers["retry-after"]) >= 1 for r in refused)
    assert "tokens limit of 400 per day" in refused[0].message
    rows = await mesh.serving_stub().GetUsage(pb.GetUsageRequest(endpoint=name), metadata=bearer(ALICE))
    assert sum(r.prompt_tokens + r.completion_tokens for r in rows.rows) == used
    assert sum(r.requests for r in rows.rows) == len(served)


async def test_requests_per_minute_for_each_caller_is_429_with_retry_after(mesh: Mesh) -> None:
    name = await new_endpoint(mesh, "rpm")
    await set_limit(mesh, name, "requests", "minute", 2, principal="*")
    client = sdk(mesh.serving.http_port)

    for _ in range(2):
        await client.completions.create(model=name, prompt=PROMPT, max_tokens=2)
    with pytest.raises(openai.RateLimitError) as refused:
        await client.completions.create(model=name, prompt=PROMPT, max_tokens=2)
    grpc_refused = await error_of(
        mesh.serving_stub().Generate(pb.GenerateRequest(endpoint=name, prompt=PROMPT), metadata=bearer(ALICE))
    )

    assert 1 <= int(refused.value.response.headers["retry-after"]) <= 60
    assert grpc_refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_cost_budget_refuses_a_call_that_alone_would_pass_it(mesh: Mesh) -> None:
    name = await new_endpoint(mesh, "cost")
    await set_limit(mesh, name, "cost_usd", "month", 0.00001)

    with pytest.raises(openai.RateLimitError) as refused:
        await sdk(mesh.serving.http_port).completions.create(model=name, prompt=PROMPT, max_tokens=64)

    assert "cost_usd limit" in refused.value.message


async def test_streamed_and_unary_usage_and_cost_match_and_reach_the_payload_log(mesh: Mesh) -> None:
    client = sdk(mesh.serving.http_port)
    greedy = {"temperature": 0.0, "max_tokens": 16, "seed": 1}

    unary = await client.completions.create(model=mesh.llm_endpoint, prompt=PROMPT, **greedy)
    stream = await client.completions.create(
        model=mesh.llm_endpoint, prompt=PROMPT, stream=True, stream_options={"include_usage": True}, **greedy
    )
    chunks = [c async for c in stream]
    tabular_id = f"unpriced-{uuid.uuid4().hex[:8]}"
    await mesh.oip_stub().ModelInfer(tabular_request(mesh.tabular_endpoint, tabular_id), metadata=bearer(ALICE))

    assert chunks[-1].usage == unary.usage
    logged = await mesh.payloads.wait_for([unary.id, chunks[0].id, tabular_id])
    expected = (unary.usage.prompt_tokens * LLM_PRICES[0] + unary.usage.completion_tokens * LLM_PRICES[1]) / 1e6
    for request_id in (unary.id, chunks[0].id):
        record = logged[request_id][0]
        assert record.HasField("cost_usd") and record.cost_usd == pytest.approx(expected)
    assert not logged[tabular_id][0].HasField("cost_usd")  # unpriced, not $0
    # The dashboard's counters, per endpoint and principal.
    assert REGISTRY.get_sample_value(
        "tessera_serving_usage_cost_usd_total", {"endpoint": mesh.llm_endpoint, "principal": "alice"}
    ) == pytest.approx(
        REGISTRY.get_sample_value(
            "tessera_serving_usage_tokens_total",
            {"endpoint": mesh.llm_endpoint, "principal": "alice", "kind": "prompt"},
        )
        * LLM_PRICES[0]
        / 1e6
        + REGISTRY.get_sample_value(
            "tessera_serving_usage_tokens_total",
            {"endpoint": mesh.llm_endpoint, "principal": "alice", "kind": "completion"},
        )
        * LLM_PRICES[1]
        / 1e6
    )
    assert (
        REGISTRY.get_sample_value(
            "tessera_serving_usage_unpriced_requests_total", {"endpoint": mesh.tabular_endpoint, "principal": "alice"}
        )
        >= 1
    )


async def test_usage_is_yours_or_needs_select_on_the_endpoint(mesh: Mesh) -> None:
    await sdk(mesh.serving.http_port).completions.create(model=mesh.llm_endpoint, prompt=PROMPT, max_tokens=2)
    await mesh.serving.usage.drained()
    stub = mesh.serving_stub()

    mine = await stub.GetUsage(pb.GetUsageRequest(), metadata=bearer(ALICE))
    others = await error_of(stub.GetUsage(pb.GetUsageRequest(endpoint=mesh.llm_endpoint), metadata=bearer(BOB)))
    anyones = await error_of(stub.GetUsage(pb.GetUsageRequest(principal="alice"), metadata=bearer(BOB)))
    limits = await error_of(
        stub.SetUsageLimit(
            pb.SetUsageLimitRequest(
                limit=pb.UsageLimit(endpoint=mesh.llm_endpoint, metric="tokens", period="day", limit=1)
            ),
            metadata=bearer(BOB),
        )
    )

    rows = [r for r in mine.rows if r.endpoint == mesh.llm_endpoint and r.served_model == mesh.llm_model]
    assert rows and rows[0].principal == "alice" and rows[0].cost_usd > 0 and rows[0].unpriced_requests == 0
    assert others.code() == anyones.code() == limits.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_principals_budget_across_every_endpoint_holds_for_calls_on_two_endpoints(mesh: Mesh) -> None:
    """bob's tokens per day across every endpoint: 32 concurrent calls split over two endpoints never pass it."""
    names = [await new_endpoint(mesh, "span-a"), await new_endpoint(mesh, "span-b")]
    for name in names:
        await mesh.registry.grant(rpb.SECURABLE_TYPE_ENDPOINT, name, "bob", [rpb.PRIVILEGE_EXECUTE])
    budget = 400
    spanning = pb.UsageLimit(principal="bob", metric="tokens", period="day", limit=budget, every_endpoint=True)
    await mesh.serving_stub().SetUsageLimit(pb.SetUsageLimitRequest(limit=spanning), metadata=bearer(ADMIN))
    try:
        bob = sdk(mesh.serving.http_port, BOB)

        async def call(i: int):
            try:
                return await bob.completions.create(
                    model=names[i % 2], prompt=PROMPT, max_tokens=16, temperature=1.0, seed=i
                )
            except openai.RateLimitError as refused:
                return refused

        # One call on each endpoint first (both draw on the budget), then 32 at once on both.
        outcomes = [await call(0), await call(1)]
        outcomes += await asyncio.gather(*(call(i) for i in range(2, 34)))
        await mesh.serving.usage.drained()
        # alice is not under bob's limit, on the same endpoints.
        alice = await sdk(mesh.serving.http_port).completions.create(model=names[0], prompt=PROMPT, max_tokens=2)
    finally:
        await mesh.serving_stub().SetUsageLimit(
            pb.SetUsageLimitRequest(limit=spanning, remove=True), metadata=bearer(ADMIN)
        )

    served = [o for o in outcomes if not isinstance(o, openai.RateLimitError)]
    refused = [o for o in outcomes if isinstance(o, openai.RateLimitError)]
    assert served and refused and alice.usage.total_tokens > 0
    assert {o.model for o in outcomes[:2]} == set(names)  # both endpoints drew on the one budget
    assert sum(o.usage.total_tokens for o in served) <= budget
    assert "across every endpoint for bob" in refused[0].message
    rows = await mesh.serving_stub().GetUsage(pb.GetUsageRequest(principal="bob"), metadata=bearer(BOB))
    assert sum(r.prompt_tokens + r.completion_tokens for r in rows.rows if r.endpoint in names) <= budget


async def test_limits_across_every_endpoint_need_a_usage_administrator(mesh: Mesh) -> None:
    stub = mesh.serving_stub()
    spanning = pb.UsageLimit(principal="*", metric="requests", period="minute", limit=1000, every_endpoint=True)

    denied = await error_of(stub.SetUsageLimit(pb.SetUsageLimitRequest(limit=spanning), metadata=bearer(ALICE)))
    both = pb.UsageLimit(endpoint=mesh.llm_endpoint, metric="requests", period="minute", limit=1, every_endpoint=True)
    ambiguous = await error_of(stub.SetUsageLimit(pb.SetUsageLimitRequest(limit=both), metadata=bearer(ADMIN)))
    neither = await error_of(stub.ListUsageLimits(pb.ListUsageLimitsRequest(), metadata=bearer(ADMIN)))
    await stub.SetUsageLimit(pb.SetUsageLimitRequest(limit=spanning), metadata=bearer(ADMIN))
    try:
        seen_by_admin = await stub.ListUsageLimits(
            pb.ListUsageLimitsRequest(every_endpoint=True), metadata=bearer(ADMIN)
        )
        seen_by_bob = await stub.ListUsageLimits(pb.ListUsageLimitsRequest(every_endpoint=True), metadata=bearer(BOB))
    finally:
        await stub.SetUsageLimit(pb.SetUsageLimitRequest(limit=spanning, remove=True), metadata=bearer(ADMIN))

    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    assert ambiguous.code() == neither.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert spanning in seen_by_admin.limits and spanning in seen_by_bob.limits  # "*" applies to bob too
