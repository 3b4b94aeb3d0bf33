"""gRPC front end: `tessera.monitoring.v1.MonitoringService` -> MonitoringCore (convert, call, convert)."""

from __future__ import annotations

from tessera.monitoring.v1 import monitoring_pb2 as pb
from tessera.monitoring.v1 import monitoring_pb2_grpc

from services.common.auth import current_principal
from services.monitoring import converters
from services.monitoring.core import MonitoringCore

SERVICE_NAME = "tessera.monitoring.v1.MonitoringService"


class MonitoringServicer(monitoring_pb2_grpc.MonitoringServiceServicer):
    def __init__(self, core: MonitoringCore) -> None:
        self.core = core

    async def ListInferenceRecords(
        self, request: pb.ListInferenceRecordsRequest, context
    ) -> pb.ListInferenceRecordsResponse:
        page = await self.core.list_records(
            current_principal(),
            request.endpoint,
            converters.seconds(request.start_time, request.HasField("start_time")),
            converters.seconds(request.end_time, request.HasField("end_time")),
            request.status,
            request.page.page_size,
            request.page.page_token,
        )
        response = pb.ListInferenceRecordsResponse(records=page.items)
        response.page.next_page_token = page.next_token
        return response

    async def CreateMonitor(self, request: pb.CreateMonitorRequest, context) -> pb.Monitor:
        spec = await self.core.create_monitor(current_principal(), converters.monitor_request(request.monitor))
        return converters.monitor_to_proto(spec)

    async def GetMonitor(self, request: pb.GetMonitorRequest, context) -> pb.Monitor:
        return converters.monitor_to_proto(await self.core.read_monitor(current_principal(), request.monitor_id))

    async def ListMonitors(self, request: pb.ListMonitorsRequest, context) -> pb.ListMonitorsResponse:
        monitors = await self.core.list_monitors(current_principal(), request.endpoint)
        return pb.ListMonitorsResponse(monitors=[converters.monitor_to_proto(m) for m in monitors])

    async def DeleteMonitor(self, request: pb.DeleteMonitorRequest, context) -> pb.DeleteMonitorResponse:
        await self.core.delete_monitor(current_principal(), request.monitor_id)
        return pb.DeleteMonitorResponse()

    async def GetProfiles(self, request: pb.GetProfilesRequest, context) -> pb.GetProfilesResponse:
        rows = await self.core.profiles(
            current_principal(),
            request.monitor_id,
            converters.seconds(request.start_time, request.HasField("start_time")),
            converters.seconds(request.end_time, request.HasField("end_time")),
            request.feature,
            request.slice,
            request.merge,
        )
        return pb.GetProfilesResponse(profiles=[converters.profile_to_proto(row) for row in rows])

    async def ListDriftMetrics(self, request: pb.ListDriftMetricsRequest, context) -> pb.ListDriftMetricsResponse:
        rows = await self.core.drift_metrics(
            current_principal(),
            request.monitor_id,
            converters.seconds(request.start_time, request.HasField("start_time")),
            converters.seconds(request.end_time, request.HasField("end_time")),
            request.feature,
            request.statistic,
        )
        return pb.ListDriftMetricsResponse(metrics=[converters.drift_metric(r) for r in rows])

    async def ListDriftEvents(self, request: pb.ListDriftEventsRequest, context) -> pb.ListDriftEventsResponse:
        events = await self.core.drift_events(current_principal(), request.monitor_id)
        return pb.ListDriftEventsResponse(events=[converters.drift_event(e) for e in events])

    async def ListQualityMetrics(self, request: pb.ListQualityMetricsRequest, context) -> pb.ListQualityMetricsResponse:
        page = await self.core.list_quality_metrics(
            current_principal(),
            request.endpoint,
            request.metric,
            converters.seconds(request.start_time, request.HasField("start_time")),
            converters.seconds(request.end_time, request.HasField("end_time")),
            request.page.page_size,
            request.page.page_token,
        )
        response = pb.ListQualityMetricsResponse(metrics=[converters.quality_metric(r) for r in page.items])
        response.page.next_page_token = page.next_token
        return response
