"""gRPC front end: `tessera.monitoring.v1.MonitoringService` -> MonitoringCore."""

from __future__ import annotations

from tessera.events.v1.payload_log_pb2 import PayloadLog
from tessera.monitoring.v1 import monitoring_pb2 as pb
from tessera.monitoring.v1 import monitoring_pb2_grpc

from services.common.errors import InvalidArgument
from services.monitoring import converters
from services.monitoring.core import MonitoringCore
from services.monitoring.ingest import reference_profiles
from services.monitoring.entities import (
    DEFAULT_MIN_WINDOW_COUNT,
    DEFAULT_RESOLVE_RATIO,
    DEFAULT_SIGNIFICANCE,
    build_monitor,
    resolve_features,
)

SERVICE_NAME = "tessera.monitoring.v1.MonitoringService"


class MonitoringServicer(monitoring_pb2_grpc.MonitoringServiceServicer):
    def __init__(self, core: MonitoringCore) -> None:
        self.core = core

    async def ListInferenceRecords(
        self, request: pb.ListInferenceRecordsRequest, context
    ) -> pb.ListInferenceRecordsResponse:
        records, token = await self.core.list_records(
            request.endpoint,
            converters.seconds(request.start_time, request.HasField("start_time")),
            converters.seconds(request.end_time, request.HasField("end_time")),
            request.status,
            request.page.page_size,
            request.page.page_token,
        )
        response = pb.ListInferenceRecordsResponse(records=[PayloadLog.FromString(r) for r in records])
        response.page.next_page_token = token
        return response

    async def CreateMonitor(self, request: pb.CreateMonitorRequest, context) -> pb.Monitor:
        wire = request.monitor
        features = converters.feature_requests(wire)
        reference = None
        if wire.baseline.WhichOneof("source") == "reference":
            given = wire.baseline.reference
            reference = {(p.slice, p.feature): converters.profile_from_proto(p) for p in given.profiles}
            raw = {v.feature: (list(v.numbers), list(v.categories)) for v in given.values}
            reference.update(reference_profiles(resolve_features(features), raw))
            if not reference:
                raise InvalidArgument("the reference baseline has no profiles and no values", field="baseline")
        spec = build_monitor(
            monitor_id=wire.monitor_id or self.core.new_monitor_id(wire.endpoint),
            endpoint=wire.endpoint,
            features=features,
            window_seconds=wire.window_seconds or 3600,
            slices=list(wire.slices),
            baseline_range=converters.baseline_range(wire),
            reference=reference,
            thresholds=dict(wire.thresholds.values) if wire.thresholds.values else None,
            resolve_ratio=wire.thresholds.resolve_ratio or DEFAULT_RESOLVE_RATIO,
            min_window_count=wire.thresholds.min_window_count or DEFAULT_MIN_WINDOW_COUNT,
            alert_on_previous_window=wire.alert_on_previous_window,
            significance=wire.thresholds.significance or DEFAULT_SIGNIFICANCE,
            created_at=converters.now(),
        )
        await self.core.create_monitor(spec, reference)
        return converters.monitor_to_proto(spec)

    async def GetMonitor(self, request: pb.GetMonitorRequest, context) -> pb.Monitor:
        return converters.monitor_to_proto(await self.core.fetch_monitor(request.monitor_id))

    async def ListMonitors(self, request: pb.ListMonitorsRequest, context) -> pb.ListMonitorsResponse:
        monitors = await self.core.list_monitors(request.endpoint)
        return pb.ListMonitorsResponse(monitors=[converters.monitor_to_proto(m) for m in monitors])

    async def DeleteMonitor(self, request: pb.DeleteMonitorRequest, context) -> pb.DeleteMonitorResponse:
        await self.core.delete_monitor(request.monitor_id)
        return pb.DeleteMonitorResponse()

    async def GetProfiles(self, request: pb.GetProfilesRequest, context) -> pb.GetProfilesResponse:
        spec = await self.core.fetch_monitor(request.monitor_id)
        rows = await self.core.profiles(
            request.monitor_id,
            converters.seconds(request.start_time, request.HasField("start_time")),
            converters.seconds(request.end_time, request.HasField("end_time")),
            request.feature,
            request.slice,
            request.merge,
        )
        return pb.GetProfilesResponse(
            profiles=[converters.profile_to_proto(f, s, p, w, spec.window_seconds) for w, s, f, p in rows]
        )

    async def ListDriftMetrics(self, request: pb.ListDriftMetricsRequest, context) -> pb.ListDriftMetricsResponse:
        rows = await self.core.drift_metrics(
            request.monitor_id,
            converters.seconds(request.start_time, request.HasField("start_time")),
            converters.seconds(request.end_time, request.HasField("end_time")),
            request.feature,
            request.statistic,
        )
        return pb.ListDriftMetricsResponse(metrics=[converters.drift_metric(r) for r in rows])

    async def ListDriftEvents(self, request: pb.ListDriftEventsRequest, context) -> pb.ListDriftEventsResponse:
        events = await self.core.drift_events(request.monitor_id)
        return pb.ListDriftEventsResponse(events=[converters.drift_event(e) for e in events])
