"""Kafka front end: `tessera.payload.logs` -> the core; drift events -> `tessera.drift.events`.

Malformed records (undecodable, no request id or endpoint, a field past its
bound) raise InvalidArgument: the shared consumer loop retries the batch record
by record and dead-letters only the bad ones, with the reason. The good ones of that batch are written first,
so the retry finds them already in the table and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import trace
from tessera.events.v1.payload_log_pb2 import PayloadLog
from tessera.events.v1.registry_pb2 import RegistryEvent

from services.common import telemetry
from services.common.errors import InvalidArgument
from services.common.kafka_consumer import ConsumerLoop, Record
from services.common.kafka_producer import EventProducer
from services.common.registry_privileges import RegistryPrivileges
from services.monitoring import converters
from services.monitoring.core import MonitoringCore
from services.monitoring.entities import DriftEventRecord
from services.monitoring.ingest import LogRecord, json_columns, validate


def log_record(record: Record[PayloadLog]) -> LogRecord:
    log = record.value
    if log.HasField("timestamp"):
        event_time = log.timestamp.seconds + log.timestamp.nanos * 1e-9
    else:
        # The broker's timestamp is stable across redeliveries, so the row key stays the same.
        kind, millis = record.raw.timestamp()
        event_time = millis / 1000.0 if kind else float("nan")
    # What was parsed, as protobuf: a record sent as JSON must not land as JSON bytes.
    return LogRecord(log, log.SerializeToString(), event_time)


class PayloadLogSink:
    """The batch handler: valid records are written, then the invalid ones are reported."""

    def __init__(self, core: MonitoringCore) -> None:
        self.core = core

    async def __call__(self, records: list[Record[PayloadLog]]) -> None:
        # Checking and JSON-encoding a batch is CPU work: off the event loop that serves gRPC.
        valid, problem = await asyncio.to_thread(self._prepare, records)
        await self.core.ingest(valid)
        if problem is not None:
            raise problem

    @staticmethod
    def _prepare(records: list[Record[PayloadLog]]) -> tuple[list[LogRecord], InvalidArgument | None]:
        valid: list[LogRecord] = []
        problem: InvalidArgument | None = None
        for record in records:
            candidate = log_record(record)
            try:
                validate(candidate)
                json_columns(candidate)
            except InvalidArgument as exc:
                problem = exc
                continue
            valid.append(candidate)
        return valid, problem


def payload_log_consumer(
    core: MonitoringCore, *, bootstrap: str, topic: str, group_id: str, dlq_producer: EventProducer, batch_size: int
) -> ConsumerLoop[PayloadLog]:
    return ConsumerLoop(
        bootstrap=bootstrap,
        group_id=group_id,
        topics=[topic],
        message_type=PayloadLog,
        handler=PayloadLogSink(core),
        dlq_producer=dlq_producer,
        batch_size=batch_size,
    )


def registry_event_consumer(
    privileges: RegistryPrivileges, *, bootstrap: str, topic: str, group_id: str, dlq_producer: EventProducer
) -> ConsumerLoop[RegistryEvent]:
    """Grants, owners and securables changing in the registry drop the cached privilege answers."""

    async def forget_changed(records: list[Record[RegistryEvent]]) -> None:
        for record in records:
            privileges.on_registry_event(record.value)

    return ConsumerLoop(
        bootstrap=bootstrap,
        group_id=group_id,
        topics=[topic],
        message_type=RegistryEvent,
        handler=forget_changed,
        dlq_producer=dlq_producer,
        **{"auto.offset.reset": "latest"},
    )


class DriftEventPublisher:
    """Publishes the core's drift events, keyed by endpoint so one endpoint's events stay ordered.

    When spans are exported, each event is sent in a span linked to the traces of the requests
    its window was computed from (`window_traces`), so a drift alarm leads back to them."""

    def __init__(
        self,
        producer: EventProducer,
        topic: str,
        *,
        window_traces: Callable[[str, float, float, int], Awaitable[list[str]]] | None = None,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self._window_traces = window_traces
        self._tracer = trace.get_tracer("tessera.monitoring")

    async def __call__(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            with await self._span(event):
                self.producer.produce(
                    self.topic,
                    converters.drift_event(DriftEventRecord.from_json(event)),
                    key=event["endpoint"],
                    record_id=event["event_id"],
                )
        await self.producer.flush()

    async def _span(self, event: dict[str, Any]) -> contextlib.AbstractContextManager:
        if not telemetry.exporting():
            return contextlib.nullcontext()
        trace_ids: list[str] = []
        if self._window_traces is not None:
            trace_ids = await self._window_traces(
                event["endpoint"], event["window_start"], event["window_end"], telemetry.MAX_LINKS
            )
        return self._tracer.start_as_current_span(
            "drift event",
            kind=trace.SpanKind.PRODUCER,
            links=telemetry.link_to_traces(trace_ids),
            attributes={
                "tessera.monitor_id": event["monitor_id"],
                "tessera.endpoint": event["endpoint"],
                "tessera.drift.kind": event["kind"],
                "tessera.drift.feature": event["feature"],
                "tessera.window.traces": len(trace_ids),
            },
        )
