"""An agent as the evaluation's target: retrieval metrics rank the documents it cited, and the
groundedness judge reads the passages it retrieved (not the row's context, which these rows lack)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import json_format
from tessera.evaluation.v1 import evaluation_pb2 as pb
from tessera.monitoring.v1 import monitoring_pb2 as mpb
from tessera.monitoring.v1 import monitoring_pb2_grpc
from tessera.registry.v1 import registry_pb2 as rpb
from tessera.retrieval.v1 import retrieval_pb2_grpc

from services.common.auth import bearer
from services.evaluation import metrics
from services.fixtures.agents import (
    RUNBOOKS,
    agent_spec,
    create_agent_endpoint,
    create_corpus_index,
    register_agent,
    retrieval_for_agents,
)
from tests.integration.evaluation.stack import ALICE, SERVICE, TOKENS, Stack

pytestmark = pytest.mark.integration

K = 3
ROWS = [
    {"request": "How do I roll back a model?", "expected_retrieved_context": [{"doc_id": "runbook-rollback"}]},
    {"request": "What does error TSR-403 mean?", "expected_retrieved_context": ["runbook-tokens"]},
    {"request": "Consumer lag keeps growing", "expected_retrieved_context": ["runbook-kafka-lag"]},
]


@pytest.fixture(scope="module")
async def agent_endpoint(stack: Stack, pg_dsn: str, kafka_bootstrap: str):
    """Retrieval (in-process) with the runbooks, an agent version over it and the tiny Llama, its endpoint."""
    u = uuid.uuid4().hex[:8]
    async with retrieval_for_agents(
        stack.serving_app.agents,
        pg_dsn=pg_dsn,
        kafka_bootstrap=kafka_bootstrap,
        auth_tokens=TOKENS,
        service_token=SERVICE,
        registry_address=stack.registry_address,
        registry_events_topic=stack.registry_topic,
    ) as (_, channel):
        docs = f"{stack.catalog}.docs_{u}"
        await stack.registry.CreateSchema(
            rpb.CreateSchemaRequest(catalog_name=stack.catalog, name=f"docs_{u}"), metadata=stack.admin.md
        )
        await stack.grant(rpb.SECURABLE_TYPE_SCHEMA, docs, "alice", [rpb.PRIVILEGE_USE_SCHEMA, rpb.PRIVILEGE_MODIFY])
        index = f"{docs}.runbooks"
        await create_corpus_index(retrieval_pb2_grpc.RetrievalServiceStub(channel), ALICE, index, RUNBOOKS)
        model = f"{stack.catalog}.{stack.schema}.agent_{u}"
        version = await register_agent(stack.admin, model, agent_spec(stack.llm_endpoint, index, k=K))
        await stack.grant(rpb.SECURABLE_TYPE_REGISTERED_MODEL, model, "alice", [rpb.PRIVILEGE_EXECUTE])
        endpoint = f"agent-{u}"
        created = await create_agent_endpoint(stack.serving, ALICE, endpoint, model, version)
        assert created.state == "READY", created.state_reason
        yield endpoint


def strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [text for item in items for text in strings(item)]


async def judge_prompts(stack: Stack, endpoint: str, since: datetime) -> list[str]:
    """The prompts the judge endpoint was sent, from its inference table (waits for the payload logs)."""
    channel = grpc.aio.insecure_channel(stack.monitoring_address)
    stub = monitoring_pb2_grpc.MonitoringServiceStub(channel)
    request = mpb.ListInferenceRecordsRequest(endpoint=endpoint, page={"page_size": 1000})
    request.start_time.FromDatetime(since)
    request.end_time.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    try:
        async with asyncio.timeout(120):
            while True:
                reply = await stub.ListInferenceRecords(request, metadata=bearer(ALICE))
                prompts = ["\n".join(strings(json_format.MessageToDict(r.inputs))) for r in reply.records]
                if len(prompts) >= len(ROWS):
                    return prompts
                await asyncio.sleep(1)
    finally:
        await channel.close()


async def test_an_agent_target_is_scored_on_what_it_retrieved(stack: Stack, agent_endpoint: str, unique: str) -> None:
    since = datetime.now(UTC) - timedelta(seconds=5)
    dataset, version = await stack.dataset(f"agentrows_{unique}", ROWS)
    spec = stack.spec(
        dataset,
        version,
        ["recall_at_k", "mrr", "groundedness"],
        target_endpoint=agent_endpoint,
        judge_endpoint=stack.scripted_endpoint,
        k=K,
    )

    run = await stack.wait((await stack.start(spec)).eval_run_id)
    results = await stack.results(run.eval_run_id)

    assert run.state == pb.RUN_STATE_SUCCEEDED, run.error_message
    assert len(results) == len(ROWS)
    for r in results:
        row = ROWS[int(r.example_id)]
        relevant = [x if isinstance(x, str) else x["doc_id"] for x in row["expected_retrieved_context"]]
        # The agent's citations are the retrieved ids the metrics rank, and they equal the functions on them.
        assert 0 < len(r.retrieved_ids) <= K and set(r.retrieved_ids) <= set(RUNBOOKS)
        scores = {m.metric: m for m in r.metrics}
        assert scores["recall_at_k"].value == pytest.approx(metrics.recall_at_k(list(r.retrieved_ids), relevant, K))
        assert scores["mrr"].value == pytest.approx(metrics.reciprocal_rank(list(r.retrieved_ids), relevant, K))
        # The rows carry no context: groundedness was judged on the agent's passages, never "no retrieved context".
        grounded = scores["groundedness"]
        assert grounded.judge_reply, grounded.unmeasured_reason
    # Each question's own runbook was retrieved (hybrid search over six distinct documents).
    recall = next(s for s in run.metrics if s.metric == "recall_at_k")
    assert recall.interval.estimate == pytest.approx(1.0)
    prompts = await judge_prompts(stack, stack.scripted_endpoint, since)
    for doc_id in {i for r in results for i in r.retrieved_ids}:
        assert any(RUNBOOKS[doc_id] in p for p in prompts), f"the judge never saw {doc_id}'s text"
