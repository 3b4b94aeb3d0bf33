"""The gRPC front end: converters -> core -> converters."""

from __future__ import annotations

from tessera.monitoring.v1 import monitoring_pb2 as mpb
from tessera.monitoring.v1 import monitoring_pb2_grpc
from tessera.training.v1 import training_pb2 as pb
from tessera.training.v1 import training_pb2_grpc

from services.common.auth import Principal, bearer, current_principal
from services.common.errors import InvalidArgument, NotFound, PermissionDenied, Unavailable
from services.training import converters as cv
from services.training.core import TrainingCore

SERVICE_NAME = "tessera.training.v1.TrainingService"


class InferenceTableReader:
    """Reads an endpoint's logged requests through monitoring's API, as the caller (monitoring checks SELECT)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._stub = None

    async def __call__(self, principal: Principal, endpoint, start, end, status):
        import grpc

        if self._stub is None:
            self._stub = monitoring_pb2_grpc.MonitoringServiceStub(grpc.aio.insecure_channel(self.address))
        request = mpb.ListInferenceRecordsRequest(endpoint=endpoint, status=status)
        request.start_time.FromDatetime(start)
        request.end_time.FromDatetime(end)
        token = ""
        while True:
            request.page.page_token = token
            request.page.page_size = 1000
            try:
                reply = await self._stub.ListInferenceRecords(request, metadata=bearer(principal.token), timeout=60)
            except grpc.aio.AioRpcError as exc:
                kinds = {grpc.StatusCode.PERMISSION_DENIED: PermissionDenied, grpc.StatusCode.NOT_FOUND: NotFound}
                kind = kinds.get(exc.code())
                if kind:
                    raise kind(f"monitoring: {exc.details()}") from exc
                if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    raise InvalidArgument(f"monitoring: {exc.details()}") from exc
                raise Unavailable(f"monitoring at {self.address} did not answer: {exc.code().name}") from exc
            for record in reply.records:
                yield record
            token = reply.page.next_page_token
            if not token:
                return


class TrainingServicer(training_pb2_grpc.TrainingServiceServicer):
    def __init__(self, core: TrainingCore, inference_table: InferenceTableReader) -> None:
        self.core = core
        self.inference_table = inference_table

    async def CreateDataset(self, request, context):
        return cv.dataset(await self.core.create_dataset(current_principal(), request.full_name, request.description))

    async def UploadDatasetVersion(self, request_iterator, context):
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("item") != "dataset":
            raise InvalidArgument("the first message names the dataset", field="dataset")

        async def chunks():
            async for item in request_iterator:
                if item.WhichOneof("item") != "data":
                    raise InvalidArgument("after the dataset, only data chunks", field="data")
                yield item.data

        return cv.dataset_version(await self.core.upload_version(current_principal(), first.dataset, chunks()))

    async def CreateDatasetVersionFromInferenceTable(self, request, context):
        if not request.HasField("start_time") or not request.HasField("end_time"):
            raise InvalidArgument("start_time and end_time are required", field="start_time")
        version = await self.core.version_from_inference_table(
            current_principal(),
            request.dataset,
            request.endpoint,
            request.start_time.ToDatetime(tzinfo=__import__("datetime").UTC),
            request.end_time.ToDatetime(tzinfo=__import__("datetime").UTC),
            request.status[:64],
            cv.row_format(request.format),
            self.inference_table,
        )
        return cv.dataset_version(version)

    async def DescribeDataset(self, request, context):
        return cv.dataset(await self.core.describe_dataset(current_principal(), request.full_name))

    async def ReadDatasetVersion(self, request, context):
        async for chunk in self.core.read_version(current_principal(), request.dataset, request.version):
            yield pb.DatasetChunk(data=chunk)

    async def SubmitJob(self, request, context):
        return cv.job(await self.core.submit(current_principal(), cv.job_spec(request.spec)))

    async def PreflightJob(self, request, context):
        report, _ = await self.core.preflight(current_principal(), cv.job_spec(request.spec))
        return cv.preflight(report)

    async def GetJob(self, request, context):
        return cv.job(await self.core.get_job(current_principal(), request.job_id))

    async def ListJobs(self, request, context):
        page = await self.core.list_jobs(
            current_principal(), request.register_to, request.page.page_size, request.page.page_token
        )
        return pb.ListJobsResponse(jobs=[cv.job(j) for j in page.items], page={"next_page_token": page.next_token})

    async def CancelJob(self, request, context):
        return cv.job(await self.core.cancel(current_principal(), request.job_id))

    async def StreamJobEvents(self, request, context):
        async for event in self.core.events(current_principal(), request.job_id):
            yield cv.event(event)
