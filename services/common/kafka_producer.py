"""A protobuf producer for the mesh: idempotent delivery, trace context, schema headers.

Two ways to send:
- `await producer.send(...)` returns once the broker has acknowledged the record
  (request/response paths, DLQ forwarding: nothing is acknowledged upstream
  before Kafka has it);
- `producer.produce(...)` then `await producer.flush()` for batches, where
  waiting per record would cost throughput; `flush` raises if any record of the
  batch failed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
from collections import Counter as Tally
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import KafkaError, Message, Producer
from google.protobuf.message import Message as ProtoMessage
from opentelemetry.context import Context
from prometheus_client import Counter

from services.common import serialization, telemetry

_log = logging.getLogger(__name__)

PRODUCED = Counter("tessera_kafka_records_produced_total", "Records acknowledged by Kafka", ["topic"])
PRODUCE_ERRORS = Counter("tessera_kafka_produce_errors_total", "Records Kafka did not acknowledge", ["topic"])

RECORD_ID = "tessera-record-id"

DeliveryCallback = Callable[[KafkaError | None, Message], None]


class DeliveryError(Exception):
    """Kafka did not acknowledge a record; `error` says why when one record is concerned."""

    def __init__(self, message: str, error: KafkaError | None = None) -> None:
        super().__init__(message)
        self.error = error


@dataclass(frozen=True)
class Delivered:
    topic: str
    partition: int
    offset: int


def producer_config(bootstrap: str, client_id: str, **overrides: object) -> dict[str, object]:
    """librdkafka settings for every Tessera producer (the benchmark gives raw clients the same)."""
    config: dict[str, object] = {
        "bootstrap.servers": bootstrap,
        "client.id": client_id,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "batch.size": 1_000_000,
        "compression.type": "lz4",
        "message.max.bytes": 16 * 1024 * 1024,
    }
    config.update(overrides)
    return config


class EventProducer:
    """Serializes protobuf messages and tracks every delivery report."""

    def __init__(self, bootstrap: str, client_id: str = "tessera", **config: object) -> None:
        # One delivery callback for the whole producer: a closure per record would
        # cost more than the record's own trip through librdkafka on the batch path.
        self._producer = Producer(producer_config(bootstrap, client_id, on_delivery=self._on_report, **config))
        self._failures: list[str] = []
        self._acked: Tally[str] = Tally()
        self._failed: Tally[str] = Tally()
        # Record ids: a random prefix per producer plus a sequence, unique without a syscall per record.
        self._id_prefix = os.urandom(8).hex() + "-"
        self._sequence = itertools.count()
        self._closed = threading.Event()
        # Delivery reports are served by a poller thread so neither the event
        # loop nor the caller has to call poll().
        self._poller = threading.Thread(target=self._poll_forever, name=f"{client_id}-producer-poll", daemon=True)
        self._poller.start()

    # -- delivery reports ---------------------------------------------------

    def _poll_forever(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.05)
            self._publish_counts()
        self._publish_counts()

    def _on_report(self, err: KafkaError | None, msg: Message, *, awaited: bool = False) -> None:
        if err is None:
            self._acked[msg.topic()] += 1
        else:
            self._failed[msg.topic()] += 1
            # A failed `send` is raised to the caller awaiting it; only queued records surface in `flush`.
            if not awaited:
                self._failures.append(f"{msg.topic()}: {err.str()}")

    def _publish_counts(self) -> None:
        # Prometheus counters lock per update: add the tallies in bulk, off the hot path.
        for tally, metric in ((self._acked, PRODUCED), (self._failed, PRODUCE_ERRORS)):
            for topic in list(tally):
                count = tally.pop(topic, 0)
                if count:
                    metric.labels(topic).inc(count)

    # -- producing ------------------------------------------------------------

    def next_record_id(self) -> str:
        return f"{self._id_prefix}{next(self._sequence):x}"

    @staticmethod
    def headers_for(
        message: ProtoMessage,
        record_id: str,
        content_type: str = serialization.PROTOBUF,
        extra: dict[str, str] | None = None,
        trace_context: Context | None = None,
    ) -> list[tuple[str, bytes]]:
        """`trace_context`: the trace the record belongs to, when it is produced outside it (a
        background writer); the current one otherwise."""
        headers = [
            ("content-type", _CONTENT_TYPES.get(content_type) or content_type.encode()),
            ("schema", _schema_bytes(message)),
            (RECORD_ID, record_id.encode()),
        ]
        telemetry.inject_headers(headers, trace_context)
        if extra:
            headers.extend((k, v.encode()) for k, v in extra.items())
        return headers

    def produce(
        self,
        topic: str,
        message: ProtoMessage,
        *,
        key: str | None = None,
        record_id: str | None = None,
        headers: dict[str, str] | None = None,
        on_delivery: DeliveryCallback | None = None,
        trace_context: Context | None = None,
    ) -> None:
        """Queue one record without waiting; failures surface in `flush()` (and `on_delivery`)."""
        record_headers = self.headers_for(
            message, record_id or self.next_record_id(), extra=headers, trace_context=trace_context
        )
        self.produce_bytes(
            topic, serialization.encode(message), key=key, headers=record_headers, on_delivery=on_delivery
        )

    def produce_bytes(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: str | bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        on_delivery: DeliveryCallback | None = None,
        _awaited: bool = False,
    ) -> None:
        extra: dict[str, DeliveryCallback] = {}
        if on_delivery is not None:

            def report(err: KafkaError | None, msg: Message) -> None:
                self._on_report(err, msg, awaited=_awaited)
                on_delivery(err, msg)

            extra["on_delivery"] = report
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers, **extra)
                return
            except BufferError:
                # The local queue is full: wait for deliveries to drain it rather than drop.
                self._producer.poll(0.05)

    async def send(
        self,
        topic: str,
        message: ProtoMessage,
        *,
        key: str | None = None,
        record_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Delivered:
        """Produce one record and return once Kafka acknowledged it (raises DeliveryError otherwise)."""
        record_headers = self.headers_for(message, record_id or self.next_record_id(), extra=headers)
        return await self.send_bytes(topic, serialization.encode(message), key=key, headers=record_headers)

    async def send_bytes(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: str | bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Delivered:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Delivered] = loop.create_future()

        def resolve(err: KafkaError | None, msg: Message) -> None:
            if err is None:
                outcome: Delivered | DeliveryError = Delivered(msg.topic(), msg.partition(), msg.offset())
            else:
                outcome = DeliveryError(f"{topic}: {err.str()}", err)
            loop.call_soon_threadsafe(_settle, future, outcome)

        self.produce_bytes(topic, value, key=key, headers=headers, on_delivery=resolve, _awaited=True)
        return await future

    # -- flushing -------------------------------------------------------------

    def flush_sync(self, timeout: float = 30.0) -> None:
        remaining = self._producer.flush(timeout)
        if remaining:
            raise DeliveryError(f"{remaining} record(s) not delivered within {timeout:.0f} s")
        if self._failures:
            failures, self._failures = self._failures, []
            raise DeliveryError(f"{len(failures)} record(s) failed, first: {failures[0]}")

    async def flush(self, timeout: float = 30.0) -> None:
        """Wait until every queued record is acknowledged; raise if any failed since the last flush."""
        await asyncio.to_thread(self.flush_sync, timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Deliver what is queued, then release the client (its broker connections and threads)."""
        if self._closed.is_set():
            return
        try:
            self.flush_sync(timeout)
        finally:
            self._closed.set()
            self._poller.join(timeout=1)
            self._producer.close()


_CONTENT_TYPES = {serialization.PROTOBUF: serialization.PROTOBUF.encode(), serialization.JSON: b"application/json"}
_SCHEMAS: dict[type, bytes] = {}


def _schema_bytes(message: ProtoMessage) -> bytes:
    cached = _SCHEMAS.get(type(message))
    if cached is None:
        cached = _SCHEMAS[type(message)] = serialization.schema_name(message).encode()
    return cached


def _settle(future: asyncio.Future, outcome: object) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
