"""Kafka front end: `tessera.payload.logs` and `tessera.eval.results` -> the core; registry events ->
the privilege cache.

(Drift events leave through the shared outbox: see window_evaluation.py.)

Malformed records (undecodable, no request id or endpoint, a field past its
bound) are dead-lettered with their reason: undecodable ones by the shared
consumer loop, the others by the sinks below, which write a batch's good records
and then name the bad ones (`RejectedRecords`), so one bad record costs one DLQ
copy, not a retry of its whole batch.
"""

from __future__ import annotations

import asyncio

from tessera.events.v1.evaluation_pb2 import EvalResult
from tessera.events.v1.payload_log_pb2 import PayloadLog
from tessera.events.v1.registry_pb2 import RegistryEvent

from services.common.errors import InvalidArgument
from services.common.kafka_consumer import ConsumerLoop, Record, RejectedRecords
from services.common.kafka_producer import EventProducer
from services.common.registry_privileges import RegistryPrivileges
from services.monitoring.core import MonitoringCore
from services.monitoring.entities import QualityMetric
from services.monitoring.ingest import LogRecord, json_columns, validate
from services.monitoring.quality import quality_rows


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
    """The batch handler: valid records are written, then the invalid ones are named for the DLQ."""

    def __init__(self, core: MonitoringCore) -> None:
        self.core = core

    async def __call__(self, records: list[Record[PayloadLog]]) -> None:
        # Checking and JSON-encoding a batch is CPU work: off the event loop that serves gRPC.
        valid, rejected = await asyncio.to_thread(self._prepare, records)
        await self.core.ingest(valid)
        if rejected:
            raise RejectedRecords(rejected)

    @staticmethod
    def _prepare(
        records: list[Record[PayloadLog]],
    ) -> tuple[list[LogRecord], list[tuple[Record[PayloadLog], InvalidArgument]]]:
        valid: list[LogRecord] = []
        rejected: list[tuple[Record[PayloadLog], InvalidArgument]] = []
        for record in records:
            candidate = log_record(record)
            try:
                validate(candidate)
                json_columns(candidate)
            except InvalidArgument as exc:
                rejected.append((record, exc))
                continue
            valid.append(candidate)
        return valid, rejected


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


class QualitySink:
    """The eval-results batch handler: valid summaries are written (one transaction), then the
    invalid records are named for the DLQ, each with its reason."""

    def __init__(self, core: MonitoringCore) -> None:
        self.core = core

    async def __call__(self, records: list[Record[EvalResult]]) -> None:
        rows: list[QualityMetric] = []
        rejected: list[tuple[Record[EvalResult], InvalidArgument]] = []
        for record in records:
            try:
                rows += quality_rows(record.value)
            except InvalidArgument as exc:
                rejected.append((record, exc))
        await self.core.ingest_quality(rows)
        if rejected:
            raise RejectedRecords(rejected)


def quality_consumer(
    core: MonitoringCore, *, bootstrap: str, topic: str, group_id: str, dlq_producer: EventProducer
) -> ConsumerLoop[EvalResult]:
    return ConsumerLoop(
        bootstrap=bootstrap,
        group_id=group_id,
        topics=[topic],
        message_type=EvalResult,
        handler=QualitySink(core),
        dlq_producer=dlq_producer,
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
