"""Payload logging: one record per request on `tessera.payload.logs`, off the request path.

The request path only appends a plain record to a bounded queue (never blocks,
never raises); a background task turns records into protobuf and produces them
in batches. A full queue, or a record Kafka refuses, counts in
`tessera_serving_payload_logs_dropped_total` instead of failing a request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from google.protobuf import struct_pb2
from prometheus_client import Counter
from tessera.events.v1 import payload_log_pb2

from services.common.kafka_producer import EventProducer

_log = logging.getLogger(__name__)

DROPPED = Counter(
    "tessera_serving_payload_logs_dropped_total", "Payload-log records lost (queue full or not delivered)"
)
QUEUED = Counter("tessera_serving_payload_logs_total", "Payload-log records queued", ["status"])


@dataclass
class PayloadRecord:
    request_id: str
    endpoint: str
    source: str
    status: str
    timestamp: datetime
    inputs: Mapping[str, Any]
    outputs: Mapping[str, Any] = field(default_factory=dict)
    served_model: str = ""
    model_version: int = 0
    error_message: str = ""
    latency_ms: float = 0.0
    time_to_first_token_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    trace_id: str = ""
    principal: str = ""
    finish_reason: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    cost_usd: float | None = None  # None: the served model has no price ("unpriced", never $0)

    def to_proto(self) -> payload_log_pb2.PayloadLog:
        message = payload_log_pb2.PayloadLog(
            request_id=self.request_id,
            endpoint=self.endpoint,
            served_model=self.served_model,
            model_version=str(self.model_version) if self.model_version else "",
            source=self.source,
            status=self.status,
            error_message=self.error_message,
            latency_ms=self.latency_ms,
            time_to_first_token_ms=self.time_to_first_token_ms,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            trace_id=self.trace_id,
            labels=dict(self.labels),
            principal=self.principal,
            finish_reason=self.finish_reason,
            inputs=_struct(self.inputs),
            outputs=_struct(self.outputs),
        )
        message.timestamp.FromDatetime(self.timestamp)
        if self.cost_usd is not None:
            message.cost_usd = self.cost_usd
        return message


def _struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    try:
        result.update(dict(values))
    except (TypeError, ValueError) as exc:  # a value Struct cannot hold: keep the record, say why
        result.update({"unloggable": str(exc)})
    return result


class PayloadLogWriter:
    def __init__(self, producer: EventProducer, topic: str, *, queue_size: int, batch_size: int) -> None:
        self._producer = producer
        self._topic = topic
        self._queue: asyncio.Queue[PayloadRecord] = asyncio.Queue(queue_size)
        self._batch_size = batch_size
        self._task: asyncio.Task | None = None

    def submit(self, record: PayloadRecord) -> None:
        """Queue a record; never blocks or raises (a full queue counts a drop)."""
        try:
            self._queue.put_nowait(record)
            QUEUED.labels(record.status).inc()
        except asyncio.QueueFull:
            DROPPED.inc()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="payload-log-writer")

    async def stop(self) -> None:
        """Write what is queued, then wait for Kafka to acknowledge it."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._write(self._drain([]))
        try:
            await self._producer.flush()
        except Exception as exc:  # noqa: BLE001 - counted by the delivery reports
            _log.warning("payload logs not all delivered at stop: %s", exc)

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            self._write(self._drain(batch))
            # Give request handlers the loop between batches.
            await asyncio.sleep(0)

    def _drain(self, batch: list[PayloadRecord]) -> list[PayloadRecord]:
        while len(batch) < self._batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        return batch

    def _write(self, batch: list[PayloadRecord]) -> None:
        for record in batch:
            try:
                self._producer.produce(
                    self._topic,
                    record.to_proto(),
                    key=record.endpoint or None,
                    record_id=record.request_id,
                    on_delivery=_count_failure,
                )
            except Exception:  # noqa: BLE001 - logging never fails a request nor stops the writer
                DROPPED.inc()
                _log.exception("payload log for %s not produced", record.request_id)

    @property
    def pending(self) -> int:
        return self._queue.qsize()


def _count_failure(err, _msg) -> None:
    if err is not None:
        DROPPED.inc()
