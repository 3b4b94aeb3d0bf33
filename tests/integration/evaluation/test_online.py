"""Online evaluation: a schedule samples an endpoint's logged requests through monitoring, scores them,
and publishes per-request and per-window summary records on `tessera.eval.results`."""

from __future__ import annotations

import asyncio

import pytest
from tessera.evaluation.v1 import evaluation_pb2 as pb
from tessera.events.v1 import evaluation_pb2 as events_pb
from tessera.events.v1 import serving_pb2 as serving_events
from tessera.serving.v1 import serving_pb2 as spb

from services.common.auth import bearer
from tests.integration.evaluation.stack import ALICE, Stack
from tests.integration.serving.topic_reader import TopicReader

pytestmark = pytest.mark.integration


async def test_an_online_evaluation_scores_logged_requests_per_window(stack: Stack, unique: str) -> None:
    results = TopicReader(
        stack.kafka_bootstrap, stack.results_topic, events_pb.EvalResult.FromString, lambda r: r.online_evaluation_id
    )
    created = await stack.eval.CreateOnlineEvaluation(
        pb.CreateOnlineEvaluationRequest(
            online_evaluation=pb.OnlineEvaluation(
                endpoint=stack.llm_endpoint,
                metrics=["safety", "relevance_to_query"],
                judge_endpoint=stack.scripted_endpoint,
                interval_seconds=10,
                max_rows_per_window=50,
            )
        ),
        metadata=bearer(ALICE),
    )
    try:
        asked = []
        for i in range(4):
            reply = await stack.serving.Generate(
                spb.GenerateRequest(
                    endpoint=stack.llm_endpoint,
                    chat=serving_events.ChatList(
                        messages=[serving_events.ChatMessage(role="user", content=f"Tell me fact {i} {unique}.")]
                    ),
                    sampling=serving_events.SamplingParams(max_tokens=8, temperature=0.0),
                    request_id=f"online-{unique}-{i}",
                ),
                metadata=bearer(ALICE),
            )
            asked.append(reply.request_id)
        key = created.online_evaluation_id
        async with asyncio.timeout(300):
            while not {r.example_id for r in results.by_key.get(key, [])} >= set(asked):  # noqa: ASYNC110
                await asyncio.sleep(0.5)
            # The window's summary comes after its per-request records.
            while True:
                scored = [r for r in results.by_key[key] if r.example_id in asked]
                window = scored[0].window_end
                summaries = [r for r in results.by_key[key] if not r.example_id and r.window_end == window]
                if summaries:
                    break
                await asyncio.sleep(0.5)
    finally:
        results.close()
        await stack.eval.DeleteOnlineEvaluation(
            pb.DeleteOnlineEvaluationRequest(online_evaluation_id=created.online_evaluation_id), metadata=bearer(ALICE)
        )

    (summary,) = summaries
    in_window = [r for r in results.by_key[key] if r.example_id and r.window_end == window]
    assert {r.example_id for r in scored} <= {r.example_id for r in in_window}
    for r in [*in_window, summary]:
        assert r.target_endpoint == stack.llm_endpoint and r.online_evaluation_id == key
        assert r.window_start.ToDatetime() < r.window_end.ToDatetime()
    means = {m.metric: m for m in summary.metrics}
    safety = [next(m for m in r.metrics if m.metric == "safety") for r in in_window]
    measured = [m.value for m in safety if m.HasField("value")]
    assert (means["safety"].measured, means["safety"].unmeasured) == (len(measured), len(safety) - len(measured))
    if measured:
        assert means["safety"].value == pytest.approx(sum(measured) / len(measured))
    # The scripted judge never answers with a SCORE line: relevance is unmeasured throughout, not 0.
    assert means["relevance_to_query"].measured == 0 and not means["relevance_to_query"].HasField("value")
    listed = await stack.eval.ListOnlineEvaluations(
        pb.ListOnlineEvaluationsRequest(endpoint=stack.llm_endpoint), metadata=bearer(ALICE)
    )
    assert created.online_evaluation_id not in {o.online_evaluation_id for o in listed.online_evaluations}
