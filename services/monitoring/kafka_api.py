"""Kafka front end: `tessera.payload.logs` and `tessera.eval.results` -> the core; registry events ->
the privilege cache.

(Drift events leave through the shared outbox: see window_evaluation.py.)

Malformed records (undecodable, no request id or endpoint, a field past its
bound) raise InvalidArgument: the shared consumer loop retries the batch record
by record and dead-letters only the bad ones, with the reason. The good ones of that batch are written first,
so the retry finds them already in the table and changes nothing.
"""

from __future__ import annotations

import asyncio

from tessera.events.v1.evaluation_pb2 import EvalResult
from tessera.events.v1.payload_log_pb2 import PayloadLog
from tessera.events.v1.registry_pb2 import RegistryEvent

from services.common.errors import InvalidArgument
from services.common.kafka_consumer import ConsumerLoop, Record
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


class QualitySink:
    """The eval-results batch handler: valid summaries are written (one transaction), then the first
    invalid record's reason is raised; the loop retries record by record and dead-letters only it."""

    def __init__(self, core: MonitoringCore) -> None:
        self.core = core

    async def __call__(self, records: list[Record[EvalResult]]) -> None:
        rows: list[QualityMetric] = []
        problem: InvalidArgument | None = None
        for record in records:
            try:
                rows += quality_rows(record.value)
            except InvalidArgument as exc:
                problem = exc
        await self.core.ingest_quality(rows)
        if problem is not None:
            raise problem


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
