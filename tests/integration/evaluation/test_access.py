"""Grants: every evaluation call a principal lacks the privilege for is refused with PERMISSION_DENIED."""

from __future__ import annotations

import grpc
import pytest
from tessera.evaluation.v1 import evaluation_pb2 as pb
from tessera.registry.v1 import registry_pb2 as rpb

from services.common.auth import bearer
from services.fixtures import capitals
from tests.integration.evaluation.stack import ALICE, BOB, CAROL, Stack

pytestmark = pytest.mark.integration


async def refused(call) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED, caught.value.details()
    return caught.value.details()


async def test_runs_need_select_on_the_dataset_and_execute_on_target_and_judge(stack: Stack, unique: str) -> None:
    dataset, version = await stack.dataset(f"guarded_{unique}", capitals.evaluation_rows()[:2])
    spec = stack.spec(dataset, version, ["exact_match"])
    judged = stack.spec(dataset, version, ["exact_match", "safety"], judge_endpoint=stack.dead_endpoint)
    # carol may read the dataset and call the target, not the judge; bob holds nothing.
    await stack.grant(rpb.SECURABLE_TYPE_DATASET, dataset, "carol", [rpb.PRIVILEGE_SELECT])
    await stack.grant(rpb.SECURABLE_TYPE_ENDPOINT, stack.llm_endpoint, "carol", [rpb.PRIVILEGE_EXECUTE])

    assert "SELECT" in await refused(stack.start(spec, BOB))
    assert "EXECUTE" in await refused(stack.start(judged, CAROL))
    run = await stack.wait((await stack.start(spec, ALICE)).eval_run_id)
    assert run.state == pb.RUN_STATE_SUCCEEDED, run.error_message

    # Reading a run: its creator, or SELECT on its dataset (carol); bob neither.
    md_bob, md_carol = bearer(BOB), bearer(CAROL)
    await refused(stack.eval.GetEvalRun(pb.GetEvalRunRequest(eval_run_id=run.eval_run_id), metadata=md_bob))
    await refused(stack.eval.ListEvalResults(pb.ListEvalResultsRequest(eval_run_id=run.eval_run_id), metadata=md_bob))
    await refused(
        stack.eval.CompareRuns(
            pb.CompareRunsRequest(baseline_run_id=run.eval_run_id, candidate_run_id=run.eval_run_id), metadata=md_bob
        )
    )
    await refused(stack.eval.CancelEvalRun(pb.CancelEvalRunRequest(eval_run_id=run.eval_run_id), metadata=md_bob))
    await refused(
        stack.eval.CalibrateJudge(
            pb.CalibrateJudgeRequest(eval_run_id=run.eval_run_id, metric="safety"), metadata=md_bob
        )
    )
    listed = await stack.eval.ListEvalRuns(pb.ListEvalRunsRequest(dataset=dataset), metadata=md_bob)
    assert run.eval_run_id not in {r.eval_run_id for r in listed.runs}
    seen = await stack.eval.GetEvalRun(pb.GetEvalRunRequest(eval_run_id=run.eval_run_id), metadata=md_carol)
    assert seen.eval_run_id == run.eval_run_id
    listed = await stack.eval.ListEvalRuns(pb.ListEvalRunsRequest(dataset=dataset), metadata=md_carol)
    assert run.eval_run_id in {r.eval_run_id for r in listed.runs}
    assert len(await stack.results(run.eval_run_id, CAROL)) == 2
    # Only the creator cancels, even a reader.
    await refused(stack.eval.CancelEvalRun(pb.CancelEvalRunRequest(eval_run_id=run.eval_run_id), metadata=md_carol))


async def test_assessments_and_online_evaluations_need_rights_on_their_endpoints(stack: Stack) -> None:
    label = pb.Assessment(
        kind=pb.ASSESSMENT_KIND_LABEL, endpoint=stack.llm_endpoint, request_id="r-1", verdict=pb.VERDICT_GOOD
    )
    vote = pb.Assessment(
        kind=pb.ASSESSMENT_KIND_PREFERENCE,
        endpoint_a=stack.llm_endpoint,
        endpoint_b=stack.dead_endpoint,
        request_id_a="a",
        request_id_b="b",
        preference=pb.PREFERENCE_A,
    )
    online = pb.OnlineEvaluation(
        endpoint=stack.llm_endpoint, metrics=["safety"], judge_endpoint=stack.llm_endpoint, interval_seconds=60
    )

    # bob may not read the endpoint's logs, so he may not label them; no EXECUTE on both sides: no vote.
    await refused(stack.eval.CreateAssessment(pb.CreateAssessmentRequest(assessment=label), metadata=bearer(BOB)))
    await refused(stack.eval.CreateAssessment(pb.CreateAssessmentRequest(assessment=vote), metadata=bearer(BOB)))
    await refused(
        stack.eval.CreateOnlineEvaluation(
            pb.CreateOnlineEvaluationRequest(online_evaluation=online), metadata=bearer(BOB)
        )
    )
    await refused(
        stack.eval.SaveAssessmentsAsDataset(
            pb.SaveAssessmentsAsDatasetRequest(
                endpoint=stack.llm_endpoint, dataset=f"{stack.catalog}.{stack.schema}.labels_bob"
            ),
            metadata=bearer(BOB),
        )
    )
    made = await stack.eval.CreateAssessment(pb.CreateAssessmentRequest(assessment=label), metadata=bearer(ALICE))
    created = await stack.eval.CreateOnlineEvaluation(
        pb.CreateOnlineEvaluationRequest(online_evaluation=online), metadata=bearer(ALICE)
    )
    try:
        # What bob lists holds none of it.
        listed = await stack.eval.ListAssessments(pb.ListAssessmentsRequest(), metadata=bearer(BOB))
        assert made.assessment_id not in {a.assessment_id for a in listed.assessments}
        schedules = await stack.eval.ListOnlineEvaluations(pb.ListOnlineEvaluationsRequest(), metadata=bearer(BOB))
        assert created.online_evaluation_id not in {o.online_evaluation_id for o in schedules.online_evaluations}
        await refused(
            stack.eval.DeleteOnlineEvaluation(
                pb.DeleteOnlineEvaluationRequest(online_evaluation_id=created.online_evaluation_id),
                metadata=bearer(BOB),
            )
        )
        mine = await stack.eval.ListAssessments(pb.ListAssessmentsRequest(), metadata=bearer(ALICE))
        assert made.assessment_id in {a.assessment_id for a in mine.assessments}
    finally:
        await stack.eval.DeleteOnlineEvaluation(
            pb.DeleteOnlineEvaluationRequest(online_evaluation_id=created.online_evaluation_id), metadata=bearer(ALICE)
        )
