"""Judges, repeats and what goes wrong: the tiny Llama as judge (plumbing, parsing, coverage), a dead
judge endpoint, malformed rows and unknown metrics give clear errors and keep partial results."""

from __future__ import annotations

import grpc
import pytest
from tessera.evaluation.v1 import evaluation_pb2 as pb

from services.evaluation.judges import JUDGE_TEMPLATES
from services.fixtures import capitals
from tests.integration.evaluation.stack import ALICE, Stack

pytestmark = pytest.mark.integration


async def test_the_tiny_llama_as_judge_its_unparseable_replies_are_coverage_not_zeros(
    stack: Stack, unique: str
) -> None:
    rows = [{**row, "guidelines": ["Answer in one word."]} for row in capitals.evaluation_rows()[:4]]
    dataset, version = await stack.dataset(f"judged_{unique}", rows)
    spec = stack.spec(
        dataset,
        version,
        ["exact_match", "correctness", "relevance_to_query", "guideline_adherence", "groundedness"],
        judge_endpoint=stack.llm_endpoint,
    )

    run = await stack.wait((await stack.start(spec)).eval_run_id)
    results = await stack.results(run.eval_run_id)

    assert run.state == pb.RUN_STATE_SUCCEEDED, run.error_message
    summaries = {s.metric: s for s in run.metrics}
    for metric in ("correctness", "relevance_to_query", "guideline_adherence"):
        values = [m for r in results for m in r.metrics if m.metric == metric]
        measured = [m for m in values if m.HasField("value")]
        unmeasured = [m for m in values if not m.HasField("value")]
        # Every judge call went through and its reply was kept; what it said decides only coverage.
        assert len(values) == len(rows) and all(m.judge_reply for m in values)
        assert all("has no single" in m.unmeasured_reason for m in unmeasured)
        s = summaries[metric]
        assert (s.measured, s.unmeasured) == (len(measured), len(unmeasured))
        assert s.coverage == pytest.approx(len(measured) / len(rows))
        assert s.prompt_hash == JUDGE_TEMPLATES[metric].content_hash
        assert run.manifest.prompt_hashes[metric] == s.prompt_hash
        if measured:
            # The mean is over measured verdicts only: nonsense replies are not folded in as zeros.
            assert s.interval.estimate == pytest.approx(sum(m.value for m in measured) / len(measured))
        else:
            assert not s.HasField("interval")
    # No retrieved context in these rows: groundedness is unmeasured with the reason, not judged.
    grounded = [m for r in results for m in r.metrics if m.metric == "groundedness"]
    assert all(not m.HasField("value") and "no retrieved context" in m.unmeasured_reason for m in grounded)
    assert summaries["groundedness"].coverage == 0.0
    assert list(run.manifest.judge_models) == [f"{stack.llm_model}/1"]


async def test_repeats_are_separate_calls_with_their_own_request_ids_and_intervals(stack: Stack, unique: str) -> None:
    dataset, version = await stack.dataset(f"repeated_{unique}", capitals.evaluation_rows()[:3])
    spec = stack.spec(dataset, version, ["token_f1"], repeats=3, temperature=1.0)

    run = await stack.wait((await stack.start(spec)).eval_run_id)
    results = await stack.results(run.eval_run_id)

    assert run.state == pb.RUN_STATE_SUCCEEDED, run.error_message
    assert len(results) == 9 and sorted({r.repeat for r in results}) == [0, 1, 2]
    assert len({r.request_id for r in results}) == 9
    (f1,) = run.metrics
    assert len(f1.per_repeat) == 3 and all(i.n == 3 for i in f1.per_repeat)
    assert f1.interval.n == 3  # rows resampled with their repeat means


async def test_a_dead_judge_leaves_judge_metrics_unmeasured_and_keeps_the_rest(stack: Stack, unique: str) -> None:
    dataset, version = await stack.dataset(f"deadjudge_{unique}", capitals.evaluation_rows()[:3])
    spec = stack.spec(dataset, version, ["exact_match", "correctness"], judge_endpoint=stack.dead_endpoint)

    run = await stack.wait((await stack.start(spec)).eval_run_id)
    results = await stack.results(run.eval_run_id)

    assert run.state == pb.RUN_STATE_PARTIAL and "judge calls failed" in run.error_message
    summaries = {s.metric: s for s in run.metrics}
    assert summaries["exact_match"].coverage == 1.0 and summaries["exact_match"].HasField("interval")
    assert summaries["correctness"].coverage == 0.0 and summaries["correctness"].unmeasured == 3
    for r in results:
        judged = next(m for m in r.metrics if m.metric == "correctness")
        assert r.status == "OK" and not judged.HasField("value")
        assert judged.unmeasured_reason.startswith("the judge endpoint failed")


async def test_malformed_rows_are_failed_rows_with_the_reason_and_the_rest_are_scored(
    stack: Stack, unique: str
) -> None:
    rows = [
        capitals.evaluation_rows()[0],
        {"request": {"nothing": "usable"}, "expected_response": "x"},
        {"request": "What is 2 + 2?", "expected_response": 4},
        capitals.evaluation_rows()[1],
    ]
    dataset, version = await stack.dataset(f"malformed_{unique}", rows)
    spec = stack.spec(dataset, version, ["exact_match"])

    run = await stack.wait((await stack.start(spec)).eval_run_id)
    results = {r.example_id: r for r in await stack.results(run.eval_run_id)}

    assert run.state == pb.RUN_STATE_PARTIAL and (run.completed, run.failed) == (4, 2)
    assert results["1"].status == "INVALID_ARGUMENT" and "'request' must be" in results["1"].error_message
    assert results["2"].status == "INVALID_ARGUMENT" and "expected_response" in results["2"].error_message
    assert results["0"].status == results["3"].status == "OK"
    (exact,) = run.metrics
    assert exact.interval.n == 2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"metrics": ["exact_match", "vibes"]}, "unknown metric 'vibes'"),
        ({"metrics": ["correctness"]}, "need a judge_endpoint"),
        ({"repeats": 1000}, "repeats must be"),
        ({"concurrency": 100000}, "concurrency must be"),
        ({"k": 5000}, "k must be"),
        ({"max_tokens": 100000}, "max_tokens"),
        ({"tags": {f"t{i}": "x" for i in range(100)}}, "tags"),
        ({"target_endpoint": "bad name!"}, "target_endpoint"),
        ({"dataset": "not-a-name"}, "dataset"),
        ({"dataset_version": "v1"}, "dataset_version"),
    ],
)
async def test_a_spec_out_of_bounds_is_invalid_argument(stack: Stack, unique: str, change: dict, field: str) -> None:
    spec = stack.spec(f"{stack.catalog}.{stack.schema}.d{unique}", "", ["exact_match"])
    for name, value in change.items():
        if name == "metrics":
            del spec.metrics[:]
            spec.metrics.extend(value)
        elif name == "tags":
            spec.tags.update(value)
        elif name == "max_tokens":
            spec.sampling.max_tokens = value
        else:
            setattr(spec, name, value)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stack.start(spec, ALICE)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in refused.value.details()
