"""Payload logging: one record per request on `tessera.payload.logs`; nothing accepted is lost.

Design: write-ahead spool, then Kafka. The request path only appends the plain
record to an in-memory queue (never blocks, never raises, converts nothing).
One writer thread, off the event loop, owns everything else:

1. it turns queued records into protobuf (tensors capped, see `to_proto`) and
   appends them to the spool (`payload_spool.py`), one fsync per batch;
2. it produces durable records from the spool, in spool order, on a producer
   of its own, keeping a bounded window in flight so librdkafka's buffer never
   fills (and if it does, only this thread waits);
3. a record leaves the spool only when Kafka acknowledged it. A delivery that
   fails (a broker outage past `message.timeout.ms`, any retriable error) is
   produced again from the spool after a backoff, for as long as it takes.

Why spool first rather than spool as overflow: a record in librdkafka's memory
dies with the process, and an outage can keep thousands there for minutes;
written ahead, a record is on disk within one writer iteration of its request
(milliseconds), whatever Kafka does. What a crash (SIGKILL, power loss) can
still lose is that last iteration's records; a clean stop loses nothing:
`stop()` writes the whole queue to the spool, delivers what Kafka takes within
the grace period and leaves the rest on disk, where the next process on the same
spool folder adopts and replays it, oldest first. Records may reach Kafka twice
(delivered, but the acknowledgement lost to a restart); the inference table is
idempotent on `request_id`.

When full: `check_capacity()` raises UNAVAILABLE once the spool holds
`spool_max_bytes` or the queue `queue_size` records, and front ends call it
before accepting a request. A request refused that way was never accepted, so
no log is owed; a request already accepted is always logged (the bound is soft
by the requests in flight). The backlog is exported as gauges.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from google.protobuf import struct_pb2
from opentelemetry import context as otel_context
from prometheus_client import Counter, Gauge
from tessera.events.v1 import payload_log_pb2

from services.common import serialization, telemetry
from services.common.errors import Unavailable
from services.common.kafka_producer import RECORD_ID, producer_config
from services.serving.payload_spool import PayloadSpool, SpooledRecord, encode_frame

_log = logging.getLogger(__name__)

DROPPED = Counter(
    "tessera_serving_payload_logs_dropped_total", "Payload-log records Kafka refuses for good (never retriable)"
)
QUEUED = Counter("tessera_serving_payload_logs_total", "Payload-log records queued", ["status"])
DELIVERED = Counter("tessera_serving_payload_logs_delivered_total", "Payload-log records acknowledged by Kafka")
REDELIVERIES = Counter(
    "tessera_serving_payload_logs_redeliveries_total", "Payload-log deliveries that failed and were produced again"
)
REFUSED = Counter(
    "tessera_serving_payload_log_refusals_total", "Requests refused because the payload-log backlog is full"
)
BACKLOG_RECORDS = Gauge(
    "tessera_serving_payload_backlog_records", "Payload-log records not yet acknowledged by Kafka (queue + spool)"
)
BACKLOG_BYTES = Gauge(
    "tessera_serving_payload_backlog_bytes",
    "Bytes of payload-log records not yet acknowledged by Kafka (queue + spool)",
)
SPOOL_BYTES = Gauge("tessera_serving_payload_spool_bytes", "Disk used by the payload-log spool")

_HEADERS = (
    ("content-type", serialization.PROTOBUF.encode()),
    ("schema", payload_log_pb2.PayloadLog.DESCRIPTOR.full_name.encode()),
)
# Kafka's verdicts that no retry changes: the record itself is refused.
_PERMANENT = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_MSG,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.INVALID_RECORD,
        KafkaError.RECORD_LIST_TOO_LARGE,
    }
)
# About what one number costs inside a Struct (a double value plus framing).
_STRUCT_BYTES_PER_NUMBER = 11


@dataclass
class PayloadRecord:
    request_id: str
    endpoint: str
    source: str
    status: str
    timestamp: datetime
    # Plain values; tensors may stay numpy arrays: the writer converts them off the event loop.
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
    # The request's trace, captured where the record is made: the writer task produces it later.
    trace_context: Any = field(default_factory=otel_context.get_current, repr=False, compare=False)
    cost_usd: float | None = None  # None: the served model has no price ("unpriced", never $0)

    def to_proto(self, max_bytes: int = 1024 * 1024) -> payload_log_pb2.PayloadLog:
        """The record as logged; inputs and outputs that would make it over `max_bytes` are summarised."""
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
        )
        message.timestamp.FromDatetime(self.timestamp)
        budget = max(max_bytes - message.ByteSize(), 0)
        message.inputs.CopyFrom(_struct(self.inputs, budget // 2))
        message.outputs.CopyFrom(_struct(self.outputs, budget - message.inputs.ByteSize()))
        if self.cost_usd is not None:
            message.cost_usd = self.cost_usd
        return message

    def approx_bytes(self) -> int:
        """A cheap estimate of what the record holds in memory (for the queue's bound)."""
        return 256 + sum(_approx(v) for v in self.inputs.values()) + sum(_approx(v) for v in self.outputs.values())


def _approx(value: Any) -> int:
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, list | tuple):
        return 16 * len(value)
    return 16


def _struct(values: Mapping[str, Any], max_bytes: int) -> struct_pb2.Struct:
    """A Struct of `values`; a tensor too large for `max_bytes` is logged as its shape, never converted."""
    plain: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, np.ndarray):
            if value.size * _STRUCT_BYTES_PER_NUMBER > max_bytes:
                plain[name] = {"dtype": str(value.dtype), "shape": list(value.shape), "omitted": "over the size limit"}
                continue
            value = value.tolist()
        plain[name] = value
    result = struct_pb2.Struct()
    try:
        result.update(plain)
    except (TypeError, ValueError) as exc:  # a value Struct cannot hold: keep the record, say why
        result.Clear()
        result.update({"unloggable": str(exc)})
    if result.ByteSize() > max_bytes:
        result.Clear()
        result.update({"omitted": f"{len(plain)} value(s) over the payload log's size limit"})
    return result


class PayloadLogWriter:
    """The payload-log pipeline: in-memory queue -> spool (fsync) -> Kafka (acknowledged) -> deleted."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        spool_dir: Path,
        *,
        queue_size: int = 10_000,
        batch_size: int = 500,
        spool_max_bytes: int = 1024**3,
        max_record_bytes: int = 1024 * 1024,
        message_timeout_ms: int = 60_000,
        segment_bytes: int = 8 * 1024 * 1024,
        stop_grace_s: float = 10.0,
        max_in_flight: int = 10_000,
        max_in_flight_bytes: int = 64 * 1024 * 1024,
        client_id: str = "serving-payload-logs",
        **producer_overrides: object,
    ) -> None:
        self.topic = topic
        self._spool = PayloadSpool(spool_dir, topic, segment_bytes=segment_bytes)
        self._queue: collections.deque[PayloadRecord] = collections.deque()
        self._queue_size = queue_size
        # What queued records may hold in memory (tensors included) before requests are refused.
        self._queue_bytes = max(256 * 1024 * 1024, 4 * max_record_bytes)
        self._batch_size = batch_size
        self._spool_max_bytes = spool_max_bytes
        self._max_record_bytes = max_record_bytes
        self._stop_grace_s = stop_grace_s
        self._max_in_flight = max_in_flight
        self._max_in_flight_bytes = max_in_flight_bytes
        self._producer_config = producer_config(
            bootstrap,
            client_id,
            **{
                # Duplicates are absorbed downstream; without idempotence an expired batch never
                # puts the producer in a fatal state.
                "enable.idempotence": False,
                "acks": "all",
                "message.timeout.ms": message_timeout_ms,
                "queue.buffering.max.messages": max(2 * max_in_flight, 10),
                "queue.buffering.max.kbytes": max(2 * max_in_flight_bytes // 1024, 1024),
                **producer_overrides,
            },
        )
        self._producer: Producer | None = None
        # Counters written by one side only (submitted: the loop; taken, durable: the writer thread).
        self._submitted = self._submitted_bytes = 0
        self._taken = self._taken_bytes = 0
        self._durable = 0
        self._spool_bytes = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._opened: asyncio.Future[int] | None = None
        # Writer-thread state.
        self._unwritten: list[tuple[int, bytes]] = []
        self._retry: collections.deque[tuple[int, int, int]] = collections.deque()
        self._in_flight = self._in_flight_bytes = 0
        self._backlog_records = 0
        self._backoff_s = 0.0
        self._retry_after = 0.0

    # -- the request path (event loop) -------------------------------------

    def submit(self, record: PayloadRecord) -> None:
        """Queue a record; never blocks or raises, and converts nothing."""
        if self._thread is None or not self._thread.is_alive():
            DROPPED.inc()
            _log.error("payload log for %s arrived while the writer is not running", record.request_id)
            return
        self._queue.append(record)
        self._submitted += 1
        self._submitted_bytes += record.approx_bytes()
        QUEUED.labels(record.status).inc()

    def check_capacity(self) -> None:
        """Raise UNAVAILABLE when the backlog is full: call it before accepting a request."""
        pending, pending_bytes = self._submitted - self._taken, self._submitted_bytes - self._taken_bytes
        if pending >= self._queue_size or pending_bytes >= self._queue_bytes:
            REFUSED.inc()
            raise Unavailable(f"the payload log is behind by {pending} record(s); retry later")
        if self._spool_bytes >= self._spool_max_bytes:
            REFUSED.inc()
            raise Unavailable(
                f"the payload-log spool is full ({self._spool_bytes} bytes waiting for Kafka); retry later"
            )

    async def wait_durable(self) -> None:
        """Return once every record submitted so far is in the spool (fsync'd)."""
        target = self._submitted
        if self._durable >= target:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        await future

    @property
    def pending(self) -> int:
        """Records not yet acknowledged by Kafka: still queued, or in the spool."""
        return self._submitted - self._taken + self._backlog_records

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Open the spool (adopting what earlier processes left) and start the writer thread."""
        self._loop = asyncio.get_running_loop()
        self._opened = self._loop.create_future()
        self._producer = Producer(self._producer_config)
        self._thread = threading.Thread(target=self._run, name="payload-log-writer", daemon=True)
        self._thread.start()
        adopted = await self._opened
        if adopted:
            _log.info("replaying %d payload-log record(s) left by a previous process", adopted)

    async def stop(self) -> None:
        """Spool everything queued, deliver what Kafka takes within the grace period, keep the rest on disk."""
        if self._thread is None:
            return
        self._stopping.set()
        await asyncio.to_thread(self._thread.join)
        self._wake_waiters()

    # -- the writer thread -----------------------------------------------------

    def _run(self) -> None:
        try:
            adopted = self._spool.open()
        except BaseException as exc:
            self._loop.call_soon_threadsafe(_settle_future, self._opened, exc)
            raise
        self._loop.call_soon_threadsafe(_settle_future, self._opened, adopted)
        deadline = None
        while True:
            try:
                busy = self._write_batch()
                busy = self._produce_window() or busy
                self._producer.poll(0 if busy else 0.02)
            except Exception:  # noqa: BLE001 - the writer must outlive any one failure (disk full, a bug)
                _log.exception("payload-log writer iteration failed; retrying")
                time.sleep(0.5)
            self._publish_backlog()
            if self._stopping.is_set():
                if deadline is None:
                    deadline = time.monotonic() + self._stop_grace_s
                caught_up = not self._queue and not self._unwritten
                if caught_up and (self._backlog_records == 0 or time.monotonic() >= deadline):
                    break
        self._close()

    def _write_batch(self) -> bool:
        """Convert up to one batch of queued records and append them to the spool; True if any."""
        while self._queue and len(self._unwritten) < self._batch_size:
            record = self._queue.popleft()
            self._unwritten.append((record.approx_bytes(), self._frame(record)))
        if not self._unwritten:
            return False
        self._spool.append([frame for _, frame in self._unwritten])
        self._taken += len(self._unwritten)
        self._taken_bytes += sum(size for size, _ in self._unwritten)
        self._durable = self._taken
        self._unwritten = []
        if self._waiters:
            self._loop.call_soon_threadsafe(self._wake_waiters)
        return True

    def _frame(self, record: PayloadRecord) -> bytes:
        try:
            value = record.to_proto(self._max_record_bytes).SerializeToString()
        except Exception as exc:  # noqa: BLE001 - a record that will not convert is still logged, bare
            _log.exception("payload log for %s: inputs/outputs not convertible", record.request_id)
            bare = PayloadRecord(**{**record.__dict__, "inputs": {"unloggable": str(exc)[:200]}, "outputs": {}})
            value = bare.to_proto(self._max_record_bytes).SerializeToString()
        traceparent = _traceparent(record.trace_context).encode()
        return encode_frame(record.endpoint.encode()[:1024], record.request_id.encode(), value, traceparent)

    def _produce_window(self) -> bool:
        """Produce spooled records while the in-flight window has room; True if any was produced."""
        produced = False
        while self._in_flight < self._max_in_flight and self._in_flight_bytes < self._max_in_flight_bytes:
            if self._retry:
                if time.monotonic() < self._retry_after:
                    break  # earlier records first: wait for the backoff rather than overtake them
                segment, offset, _ = self._retry[0]
                record = self._spool.reread(segment, offset)
                if record is None:
                    self._retry.popleft()
                    continue
                from_retry = True
            else:
                record = self._spool.next_record()
                if record is None:
                    break
                from_retry = False
            if not self._produce(record, from_retry):
                break
            produced = True
        return produced

    def _produce(self, record: SpooledRecord, from_retry: bool) -> bool:
        try:
            self._producer.produce(
                record.topic,
                value=record.value,
                key=record.key or None,
                headers=[*_HEADERS, (RECORD_ID, record.record_id)]
                + ([(telemetry.TRACEPARENT, record.traceparent)] if record.traceparent else []),
                on_delivery=functools.partial(self._on_delivery, record.segment, record.offset, record.size),
            )
        except BufferError:
            # librdkafka's buffer is full: keep the record for the next turn (only this thread waits).
            if not from_retry:
                self._retry.appendleft((record.segment, record.offset, record.size))
            return False
        except KafkaException as exc:
            if from_retry:
                self._retry.popleft()
            self._give_up(record.segment, record.size, str(exc))
            return True
        if from_retry:
            self._retry.popleft()
        self._in_flight += 1
        self._in_flight_bytes += record.size
        return True

    def _on_delivery(self, segment: int, offset: int, size: int, err: KafkaError | None, _msg: Message) -> None:
        self._in_flight -= 1
        self._in_flight_bytes -= size
        if err is None:
            DELIVERED.inc()
            self._backoff_s = 0.0
            self._spool.settle(segment, size)
        elif err.code() in _PERMANENT:
            self._give_up(segment, size, err.str())
        else:
            REDELIVERIES.inc()
            self._retry.append((segment, offset, size))
            self._backoff_s = min(max(self._backoff_s * 2, 0.5), 10.0)
            self._retry_after = time.monotonic() + self._backoff_s

    def _give_up(self, segment: int, size: int, reason: str) -> None:
        DROPPED.inc()
        _log.error("payload log record refused by Kafka for good, dropped: %s", reason)
        self._spool.settle(segment, size)

    def _publish_backlog(self) -> None:
        self._backlog_records = self._spool.unsettled_records
        self._spool_bytes = self._spool.disk_bytes
        queued = self._submitted - self._taken
        BACKLOG_RECORDS.set(queued + self._backlog_records)
        BACKLOG_BYTES.set(self._submitted_bytes - self._taken_bytes + self._spool.unsettled_bytes)
        SPOOL_BYTES.set(self._spool_bytes)

    def _close(self) -> None:
        left = self._spool.unsettled_records
        if self._in_flight:
            # Still in librdkafka after the grace period: the spool keeps them for the next process.
            self._producer.purge()
            self._producer.poll(0)
        self._producer.flush(0)
        self._producer.close()
        self._spool.close(keep=left > 0)
        if left:
            _log.warning("payload logs: %d record(s) left in the spool at %s for the next start", left, self._spool.dir)

    # -- loop-side wake-ups ------------------------------------------------------

    def _wake_waiters(self) -> None:
        durable, done = self._durable, self._thread is not None and not self._thread.is_alive()
        keep = []
        for target, future in self._waiters:
            if future.done():
                continue
            if durable >= target or done:
                future.set_result(None)
            else:
                keep.append((target, future))
        self._waiters = keep


def _settle_future(future: asyncio.Future, outcome: object) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _traceparent(context: Any) -> str:
    """The traceparent of the request's trace, captured when its record was made ("" for none)."""
    token = otel_context.attach(context)
    try:
        return telemetry.current_traceparent()
    finally:
        otel_context.detach(token)
