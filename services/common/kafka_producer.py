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
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from google.protobuf.message import Message as ProtoMessage
from prometheus_client import Counter

from services.common import serialization, telemetry

_log = logging.getLogger(__name__)

PRODUCED = Counter("tessera_kafka_records_produced_total", "Records acknowledged by Kafka", ["topic"])
PRODUCE_ERRORS = Counter("tessera_kafka_produce_errors_total", "Records Kafka did not acknowledge", ["topic"])

RECORD_ID = "tessera-record-id"


class DeliveryError(Exception):
    """Kafka did not acknowledge a record."""


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
        self._producer = Producer(producer_config(bootstrap, client_id, **config))
        self._failures: list[str] = []
        self._closed = threading.Event()
        # Delivery reports are served by a poller thread so neither the event
        # loop nor the caller has to call poll().
        self._poller = threading.Thread(target=self._poll_forever, name=f"{client_id}-producer-poll", daemon=True)
        self._poller.start()

    def _poll_forever(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.05)

    @staticmethod
    def headers_for(
        message: ProtoMessage,
        record_id: str,
        content_type: str = serialization.PROTOBUF,
        extra: dict[str, str] | None = None,
    ) -> list[tuple[str, bytes]]:
        headers = [
            ("content-type", content_type.encode()),
            ("schema", serialization.schema_name(message).encode()),
            (RECORD_ID, record_id.encode()),
        ]
        telemetry.inject_headers(headers)
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
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    ) -> None:
        """Queue one record without waiting; failures surface in `flush()` (and `on_delivery`)."""
        record_headers = self.headers_for(message, record_id or uuid.uuid4().hex, extra=headers)
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
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    ) -> None:
        def report(err: KafkaError | None, msg: Message) -> None:
            if err is None:
                PRODUCED.labels(topic).inc()
            else:
                PRODUCE_ERRORS.labels(topic).inc()
                self._failures.append(f"{topic}: {err.str()}")
            if on_delivery is not None:
                on_delivery(err, msg)

        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers, on_delivery=report)
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
        record_headers = self.headers_for(message, record_id or uuid.uuid4().hex, extra=headers)
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
                outcome = DeliveryError(f"{topic}: {err.str()}")
            loop.call_soon_threadsafe(_settle, future, outcome)

        self.produce_bytes(topic, value, key=key, headers=headers, on_delivery=resolve)
        return await future

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
        try:
            self.flush_sync(timeout)
        finally:
            self._closed.set()
            self._poller.join(timeout=1)

    @property
    def raw(self) -> Producer:
        return self._producer


def _settle(future: asyncio.Future, outcome: object) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


__all__ = ["EventProducer", "DeliveryError", "Delivered", "producer_config", "RECORD_ID", "KafkaException"]
