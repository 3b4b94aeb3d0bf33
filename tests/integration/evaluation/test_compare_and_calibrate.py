"""CompareRuns pairs two runs row by row; judge calibration arithmetic against human labels
(a dataset column, and reviewers' LABEL assessments on the run's requests)."""

from __future__ import annotations

import grpc
import pytest
from sklearn.metrics import cohen_kappa_score, confusion_matrix
from tessera.evaluation.v1 import evaluation_pb2 as pb

from services.common.auth import bearer
from services.evaluation import statistics
from services.fixtures import capitals
from tests.integration.evaluation.stack import ALICE, Stack

pytestmark = pytest.mark.integration


def values(results, metric: str) -> dict[str, float | None]:
    out = {}
    for r in results:
        m = next(m for m in r.metrics if m.metric == metric)
        out[r.example_id] = m.value if m.HasField("value") else None
    return out


async def test_compare_runs_pairs_rows_and_refuses_other_dataset_versions(stack: Stack, unique: str) -> None:
    rows = capitals.evaluation_rows()
    dataset, version = await stack.dataset(f"compared_{unique}", rows)
    short = stack.spec(dataset, version, ["exact_match", "token_f1"], max_tokens=4)
    long = stack.spec(dataset, version, ["exact_match", "token_f1"], max_tokens=16)
    a = await stack.wait((await stack.start(short)).eval_run_id)
    b = await stack.wait((await stack.start(long)).eval_run_id)

    reply = await stack.eval.CompareRuns(
        pb.CompareRunsRequest(baseline_run_id=a.eval_run_id, candidate_run_id=b.eval_run_id), metadata=bearer(ALICE)
    )

    differences = {d.metric: d for d in reply.differences}
    a_f1, b_f1 = (
        values(await stack.results(a.eval_run_id), "token_f1"),
        values(await stack.results(b.eval_run_id), "token_f1"),
    )
    expected = statistics.compare_runs(a_f1, b_f1, seed=a.spec.seed)
    f1 = differences["token_f1"]
    assert f1.test == "paired_t" and f1.paired == len(rows) and f1.unpaired == 0
    assert f1.difference.estimate == pytest.approx(expected.difference.estimate)
    assert (f1.difference.low, f1.difference.high) == pytest.approx((expected.difference.low, expected.difference.high))
    assert f1.minimum_detectable_difference == pytest.approx(expected.minimum_detectable_difference)
    assert list(f1.row_differences) == pytest.approx([b_f1[str(i)] - a_f1[str(i)] for i in range(len(rows))])
    assert differences["exact_match"].test == "mcnemar_mid_p"

    # A run over another version of the dataset cannot be paired with these.
    other_dataset, other_version = await stack.dataset(f"compared_other_{unique}", rows[:3])
    c = await stack.wait((await stack.start(stack.spec(other_dataset, other_version, ["exact_match"]))).eval_run_id)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stack.eval.CompareRuns(
            pb.CompareRunsRequest(baseline_run_id=a.eval_run_id, candidate_run_id=c.eval_run_id), metadata=bearer(ALICE)
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "dataset" in refused.value.details()


def expected_calibration(pairs: list[tuple[bool, bool | None]]) -> tuple[list[int], float, float]:
    measured = [(h, j) for h, j in pairs if j is not None]
    human, judge = [h for h, _ in measured], [j for _, j in measured]
    matrix = confusion_matrix(human, judge, labels=[False, True])
    agreement = sum(h == j for h, j in measured) / len(measured)
    return [int(x) for x in matrix.ravel()], agreement, cohen_kappa_score(human, judge)


async def test_judge_calibration_against_a_label_column_and_against_assessments(stack: Stack, unique: str) -> None:
    rows = [
        {**row, "human_correct": i % 3 != 0}
        for i, row in enumerate(capitals.evaluation_rows() + capitals.evaluation_rows())
    ]
    dataset, version = await stack.dataset(f"calibrated_{unique}", rows)
    spec = stack.spec(
        dataset, version, ["correctness"], judge_endpoint=stack.scripted_endpoint, human_label_column="human_correct"
    )

    run = await stack.wait((await stack.start(spec)).eval_run_id)
    results = await stack.results(run.eval_run_id)

    assert run.state == pb.RUN_STATE_SUCCEEDED, run.error_message
    verdicts = values(results, "correctness")
    for r in results:
        judged = r.metrics[0]
        # The verdicts are the scripted judge's, parsed; a reply without one is unmeasured.
        said = scripted_verdict_of(judged.judge_reply)
        assert (judged.value if judged.HasField("value") else None) == said
    pairs = [(rows[int(k)]["human_correct"], None if v is None else bool(v)) for k, v in verdicts.items()]
    counts, agreement, kappa = expected_calibration(pairs)
    (calibration,) = run.calibrations
    assert list(calibration.confusion.counts) == counts
    assert calibration.n == sum(counts) and calibration.agreement == pytest.approx(agreement)
    assert calibration.cohen_kappa == pytest.approx(kappa)
    assert calibration.judge_model == "external.scripted.judge/1"

    # The same through CalibrateJudge, and from reviewers' labels on the run's requests instead.
    again = await stack.eval.CalibrateJudge(
        pb.CalibrateJudgeRequest(eval_run_id=run.eval_run_id, metric="correctness", label_column="human_correct"),
        metadata=bearer(ALICE),
    )
    assert list(again.confusion.counts) == counts
    labels = {}
    for r in results[:10]:
        good = int(r.example_id) % 2 == 0
        labels[r.example_id] = good
        await stack.eval.CreateAssessment(
            pb.CreateAssessmentRequest(
                assessment=pb.Assessment(
                    kind=pb.ASSESSMENT_KIND_LABEL,
                    endpoint=stack.llm_endpoint,
                    request_id=r.request_id,
                    verdict=pb.VERDICT_GOOD if good else pb.VERDICT_BAD,
                )
            ),
            metadata=bearer(ALICE),
        )
    reviewed = await stack.eval.CalibrateJudge(
        pb.CalibrateJudgeRequest(eval_run_id=run.eval_run_id, metric="correctness"), metadata=bearer(ALICE)
    )
    counts, agreement, kappa = expected_calibration(
        [(labels[k], None if verdicts[k] is None else bool(verdicts[k])) for k in labels]
    )
    assert list(reviewed.confusion.counts) == counts and reviewed.agreement == pytest.approx(agreement)
    assert reviewed.cohen_kappa == pytest.approx(kappa)
    stored = await stack.eval.GetEvalRun(pb.GetEvalRunRequest(eval_run_id=run.eval_run_id), metadata=bearer(ALICE))
    assert len(stored.calibrations) == 2  # the column's and the assessments', kept with the run


def scripted_verdict_of(reply: str) -> float | None:
    return {"VERDICT: PASS": 1.0, "VERDICT: FAIL": 0.0}.get(reply.strip())
