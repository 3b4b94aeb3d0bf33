"""Human assessments: labels on logged requests, blind votes, and labels saved as an evaluation dataset."""

from __future__ import annotations

import json

import grpc
import pytest
from tessera.evaluation.v1 import evaluation_pb2 as pb
from tessera.training.v1 import training_pb2 as tpb

from services.common.auth import bearer
from services.fixtures import capitals
from tests.integration.evaluation.stack import ALICE, Stack

pytestmark = pytest.mark.integration


async def test_labels_become_a_new_evaluation_dataset_version(stack: Stack, unique: str) -> None:
    # Requests in the endpoint's inference table: an eval run's rows are logged requests too.
    dataset, version = await stack.dataset(f"labelsource_{unique}", capitals.evaluation_rows()[:3])
    run = await stack.wait((await stack.start(stack.spec(dataset, version, ["exact_match"]))).eval_run_id)
    results = await stack.results(run.eval_run_id)
    labels = [
        pb.Assessment(
            kind=pb.ASSESSMENT_KIND_LABEL,
            endpoint=stack.llm_endpoint,
            request_id=results[0].request_id,
            verdict=pb.VERDICT_BAD,
            expected_response=capitals.COUNTRIES[int(results[0].example_id)][1],
            guideline="Answer with the capital only.",
        ),
        pb.Assessment(
            kind=pb.ASSESSMENT_KIND_LABEL,
            endpoint=stack.llm_endpoint,
            request_id=results[1].request_id,
            verdict=pb.VERDICT_GOOD,
        ),
    ]
    for label in labels:
        made = await stack.eval.CreateAssessment(pb.CreateAssessmentRequest(assessment=label), metadata=bearer(ALICE))
        assert made.created_by == "alice" and made.assessment_id
    vote = await stack.eval.CreateAssessment(
        pb.CreateAssessmentRequest(
            assessment=pb.Assessment(
                kind=pb.ASSESSMENT_KIND_PREFERENCE,
                prompt="What is the capital of Zorvania?",
                endpoint_a=stack.llm_endpoint,
                endpoint_b=stack.scripted_endpoint,
                request_id_a=results[0].request_id,
                request_id_b="other",
                sides_swapped=True,
                preference=pb.PREFERENCE_B,
            )
        ),
        metadata=bearer(ALICE),
    )
    listed = await stack.eval.ListAssessments(
        pb.ListAssessmentsRequest(kind=pb.ASSESSMENT_KIND_PREFERENCE, endpoint=stack.scripted_endpoint),
        metadata=bearer(ALICE),
    )
    assert [a.assessment_id for a in listed.assessments] == [vote.assessment_id]
    assert listed.assessments[0].sides_swapped and listed.assessments[0].preference == pb.PREFERENCE_B

    target = f"{stack.catalog}.{stack.schema}.labeled_{unique}"
    saved = await stack.eval.SaveAssessmentsAsDataset(
        pb.SaveAssessmentsAsDatasetRequest(endpoint=stack.llm_endpoint, dataset=target), metadata=bearer(ALICE)
    )

    assert saved.dataset == target and saved.row_count >= 2
    data = b"".join(
        [
            c.data
            async for c in stack.training.ReadDatasetVersion(
                tpb.ReadDatasetVersionRequest(dataset=target, version=saved.version), metadata=bearer(ALICE)
            )
        ]
    )
    rows = {row["request_id"]: row for row in map(json.loads, data.splitlines())}
    bad, good = rows[results[0].request_id], rows[results[1].request_id]
    assert (
        bad["request"]["messages"][-1]["content"] == capitals.evaluation_rows()[int(results[0].example_id)]["request"]
    )
    assert bad["expected_response"] == labels[0].expected_response and bad["human_label"] is False
    assert bad["guidelines"] == ["Answer with the capital only."]
    assert good["expected_response"] == results[1].response and good["human_label"] is True


async def test_a_label_needs_a_verdict_or_an_expected_answer(stack: Stack) -> None:
    empty = pb.Assessment(kind=pb.ASSESSMENT_KIND_LABEL, endpoint=stack.llm_endpoint, request_id="r")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stack.eval.CreateAssessment(pb.CreateAssessmentRequest(assessment=empty), metadata=bearer(ALICE))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
