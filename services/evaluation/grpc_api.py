"""The gRPC front end: converters -> core -> converters (privileges: see core.py)."""

from __future__ import annotations

from datetime import UTC

from tessera.evaluation.v1 import evaluation_pb2 as pb
from tessera.evaluation.v1 import evaluation_pb2_grpc

from services.common.auth import current_principal
from services.common.errors import InvalidArgument
from services.evaluation import converters as cv
from services.evaluation.core import EvaluationCore

SERVICE_NAME = "tessera.evaluation.v1.EvaluationService"


class EvaluationServicer(evaluation_pb2_grpc.EvaluationServiceServicer):
    def __init__(self, core: EvaluationCore) -> None:
        self.core = core

    async def StartEvalRun(self, request, context):
        if not request.HasField("spec"):
            raise InvalidArgument("spec is required", field="spec")
        return cv.run(await self.core.start_run(current_principal(), cv.run_spec(request.spec)))

    async def GetEvalRun(self, request, context):
        return cv.run(await self.core.get_run(current_principal(), request.eval_run_id))

    async def ListEvalRuns(self, request, context):
        page = await self.core.list_runs(
            current_principal(),
            request.dataset,
            request.target_endpoint,
            request.page.page_size,
            request.page.page_token,
        )
        return pb.ListEvalRunsResponse(runs=[cv.run(r) for r in page.items], page={"next_page_token": page.next_token})

    async def CancelEvalRun(self, request, context):
        return cv.run(await self.core.cancel_run(current_principal(), request.eval_run_id))

    async def ListEvalResults(self, request, context):
        page = await self.core.list_results(
            current_principal(), request.eval_run_id, request.page.page_size, request.page.page_token
        )
        return pb.ListEvalResultsResponse(
            results=[cv.result(r) for r in page.items], page={"next_page_token": page.next_token}
        )

    async def CompareRuns(self, request, context):
        differences = await self.core.compare_runs(
            current_principal(), request.baseline_run_id, request.candidate_run_id, request.confidence
        )
        return cv.comparison(request.baseline_run_id, request.candidate_run_id, differences)

    async def CreateAssessment(self, request, context):
        return cv.assessment(
            await self.core.create_assessment(current_principal(), cv.assessment_entity(request.assessment))
        )

    async def ListAssessments(self, request, context):
        page = await self.core.list_assessments(
            current_principal(),
            cv.assessment_kind(request.kind),
            request.endpoint,
            request.page.page_size,
            request.page.page_token,
        )
        return pb.ListAssessmentsResponse(
            assessments=[cv.assessment(a) for a in page.items], page={"next_page_token": page.next_token}
        )

    async def SaveAssessmentsAsDataset(self, request, context):
        since = request.since.ToDatetime(tzinfo=UTC) if request.HasField("since") else None
        dataset, version, rows = await self.core.save_assessments_as_dataset(
            current_principal(), request.endpoint, request.dataset, since
        )
        return pb.SaveAssessmentsAsDatasetResponse(dataset=dataset, version=version, row_count=rows)

    async def CalibrateJudge(self, request, context):
        return cv.calibration(
            await self.core.calibrate_judge(
                current_principal(), request.eval_run_id, request.metric, request.label_column
            )
        )

    async def CreateOnlineEvaluation(self, request, context):
        return cv.online(
            await self.core.create_online(current_principal(), cv.online_entity(request.online_evaluation))
        )

    async def ListOnlineEvaluations(self, request, context):
        page = await self.core.list_online(
            current_principal(), request.endpoint, request.page.page_size, request.page.page_token
        )
        return pb.ListOnlineEvaluationsResponse(
            online_evaluations=[cv.online(o) for o in page.items], page={"next_page_token": page.next_token}
        )

    async def DeleteOnlineEvaluation(self, request, context):
        await self.core.delete_online(current_principal(), request.online_evaluation_id)
        return pb.DeleteOnlineEvaluationResponse()
