"""The consumer loop every Tessera service runs.

- Offsets are committed only after the handler finished the batch, so a crash
  between processing and commit redelivers (sinks are idempotent, see
  `processed_records.py`): at-least-once, never lost.
- A record that cannot be decoded, or that the handler rejects, goes to
  `<topic>.dlq` with the reason in headers; the loop moves on.
- A failing batch is retried record by record, so one poison record does not
  take its neighbours to the DLQ.
- Transient failures (database or broker unavailable) are retried with backoff
  and never dead-lettered.
- `stop()` finishes the batch in hand, commits it and leaves the group.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage
from opentelemetry.context import Context
from prometheus_client import Counter, Gauge

from services.common import serialization, telemetry, topics
from services.common.errors import DeadlineExceeded, InvalidArgument, TesseraError, Unavailable
from services.common.kafka_producer import RECORD_ID, EventProducer

_log = logging.getLogger(__name__)

M = TypeVar("M", bound=ProtoMessage)

CONSUMED = Counter(
    "tessera_kafka_records_consumed_total", "Records handled (processed or dead-lettered)", ["topic", "group"]
)
DEAD_LETTERED = Counter("tessera_kafka_dlq_records_total", "Records sent to a dead-letter topic", ["topic", "group"])
RETRIES = Counter("tessera_kafka_batch_retries_total", "Batches retried after a transient failure", ["group"])
LAG = Gauge("tessera_kafka_consumer_lag", "Records behind the end of the partition", ["topic", "partition", "group"])

_PROTOBUF = serialization.PROTOBUF.encode()
ERROR_HEADER = "tessera-error"
ERROR_CODE_HEADER = "tessera-error-code"


class RetriableError(Exception):
    """Raise from a handler to have the batch retried later instead of dead-lettered."""


def is_retriable(exc: BaseException) -> bool:
    if isinstance(exc, RetriableError | Unavailable | DeadlineExceeded | ConnectionError | TimeoutError):
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a core dependency
        return False
    return isinstance(
        exc, psycopg.OperationalError | psycopg.errors.SerializationFailure | psycopg.errors.DeadlockDetected
    )


class Record(Generic[M]):
    """A decoded record and where it came from. Headers, key and trace context
    are read from the raw message on demand: most handlers need only the value."""

    __slots__ = ("topic", "partition", "offset", "value", "record_id", "raw")

    def __init__(self, topic: str, partition: int, offset: int, value: M, record_id: str, raw: Message) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.value = value
        self.record_id = record_id
        self.raw = raw

    @property
    def key(self) -> str | None:
        key = self.raw.key()
        return key.decode("utf-8", "replace") if key is not None else None

    @property
    def headers(self) -> dict[str, str]:
        return {k: (v.decode("utf-8", "replace") if v is not None else "") for k, v in (self.raw.headers() or [])}

    @property
    def timestamp_ms(self) -> int:
        return self.raw.timestamp()[1]

    @property
    def context(self) -> Context:
        """The producer's trace context."""
        return telemetry.extract_context(self.raw.headers())

    def __repr__(self) -> str:
        return f"Record({self.topic}[{self.partition}]@{self.offset} id={self.record_id!r} value={self.value!r})"


# Next offset to commit per (topic, partition).
Offsets = dict[tuple[str, int], int]

BatchHandler = Callable[[list[Record[M]]], Awaitable[None]]


def consumer_config(bootstrap: str, group_id: str, **overrides: object) -> dict[str, object]:
    config: dict[str, object] = {
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        "session.timeout.ms": 10_000,
        "max.poll.interval.ms": 300_000,
        "fetch.max.bytes": 64 * 1024 * 1024,
    }
    config.update(overrides)
    return config


class ConsumerLoop(Generic[M]):
    """Consume `topics` as `group_id`, decode into `message_type`, hand batches to `handler`."""

    def __init__(
        self,
        *,
        bootstrap: str,
        group_id: str,
        topics: Sequence[str],
        message_type: type[M],
        handler: BatchHandler[M],
        dlq_producer: EventProducer,
        batch_size: int = 500,
        poll_timeout_s: float = 0.25,
        max_backoff_s: float = 5.0,
        on_dead_letter: Callable[[Message, BaseException], Awaitable[None]] | None = None,
        **config: object,
    ) -> None:
        self.group_id = group_id
        self.topics = list(topics)
        self.message_type = message_type
        self._handler = handler
        self._dlq = dlq_producer
        self._batch_size = batch_size
        self._poll_timeout = poll_timeout_s
        self._max_backoff = max_backoff_s
        # Called after a record went to the DLQ (e.g. to answer a requester who waits for a reply).
        self._on_dead_letter = on_dead_letter
        self._consumer = Consumer(consumer_config(bootstrap, group_id, **config))
        self._schema = message_type.DESCRIPTOR.full_name.encode()
        self._stopping = asyncio.Event()
        self._assigned = asyncio.Event()
        self._last_lag_update = 0.0

    # -- lifecycle -------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._consumer.subscribe(self.topics, on_assign=lambda *_: loop.call_soon_threadsafe(self._assigned.set))
        handled: Offsets = {}
        try:
            while not self._stopping.is_set():
                # Records already prefetched by librdkafka are taken without leaving the loop;
                # only an empty queue waits, on a worker thread.
                messages = self._consumer.consume(self._batch_size, 0)
                if not messages:
                    # Wait for the first record only (a lone record is handled at once, not when a
                    # batch fills or the timeout ends), then take whatever else arrived with it.
                    messages = await asyncio.to_thread(self._consumer.consume, 1, self._poll_timeout)
                    if messages and self._batch_size > 1:
                        messages += self._consumer.consume(self._batch_size - 1, 0)
                if messages:
                    offsets = await self._handle(messages)
                    if offsets is None:
                        break  # stopping while a transient failure persisted: leave the batch uncommitted
                    # The batch is done: commit without waiting. A lost async commit only means
                    # redelivery, which idempotent sinks absorb; the last one is committed in sync.
                    self._commit(offsets, wait=False)
                    handled = offsets
                self._update_lag()
            if handled:
                await asyncio.to_thread(self._commit, handled, True)
        finally:
            await asyncio.to_thread(self._consumer.close)

    def stop(self) -> None:
        self._stopping.set()

    async def wait_assigned(self, timeout: float = 30.0) -> None:
        """Wait until the group gave this consumer its partitions (useful in tests and at start-up)."""
        await asyncio.wait_for(self._assigned.wait(), timeout)

    # -- one batch -------------------------------------------------------

    async def _handle(self, messages: list[Message]) -> Offsets | None:
        """Decode and process a batch; the offsets to commit, or None if stopped mid-retry."""
        records: list[Record[M]] = []
        offsets: Offsets = {}
        handled: dict[str, int] = {}
        for message in messages:
            if message.error():
                if message.error().code() != KafkaError._PARTITION_EOF:
                    _log.warning("%s: consume error: %s", self.group_id, message.error().str())
                continue
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            # Within a partition a batch is in offset order: the last record's wins.
            offsets[(topic, partition)] = offset + 1
            handled[topic] = handled.get(topic, 0) + 1
            try:
                records.append(self._decode(message, topic, partition, offset))
            except InvalidArgument as exc:
                await self._dead_letter(message, exc)
        if records and not await self._process(records):
            return None
        for topic, count in handled.items():
            CONSUMED.labels(topic, self.group_id).inc(count)
        return offsets

    async def _process(self, records: list[Record[M]]) -> bool:
        """Run the handler until it succeeds; isolate poison records. False if stopped mid-retry."""
        backoff = 0.1
        while True:
            try:
                await self._handler(records)
                return True
            except Exception as exc:  # noqa: BLE001 - every failure is either retried or dead-lettered
                if is_retriable(exc):
                    RETRIES.labels(self.group_id).inc()
                    _log.warning("%s: transient failure, retrying in %.1fs: %s", self.group_id, backoff, exc)
                    try:
                        await asyncio.wait_for(self._stopping.wait(), backoff)
                        return False
                    except TimeoutError:
                        backoff = min(backoff * 2, self._max_backoff)
                        continue
                if len(records) == 1:
                    await self._dead_letter(records[0].raw, exc)
                    return True
                _log.info("%s: batch of %d failed (%s); retrying record by record", self.group_id, len(records), exc)
                for record in records:
                    if not await self._process([record]):
                        return False
                return True

    def _decode(self, message: Message, topic: str, partition: int, offset: int) -> Record[M]:
        content_type = schema = record_id = None
        for name, value in message.headers() or ():
            if name == "content-type":
                content_type = value
            elif name == "schema":
                schema = value
            elif name == RECORD_ID:
                record_id = value
        value = message.value()
        if content_type == _PROTOBUF and schema == self._schema and value is not None:
            try:  # the common case, kept short: Tessera's own producers wrote it
                decoded = self.message_type.FromString(value)
            except DecodeError:
                decoded = serialization.decode(self.message_type, value, content_type, schema)
        else:
            decoded = serialization.decode(self.message_type, value, content_type, schema)
        return Record(
            topic,
            partition,
            offset,
            decoded,
            record_id.decode("utf-8", "replace") if record_id else f"{topic}:{partition}:{offset}",
            message,
        )

    async def _dead_letter(self, message: Message, exc: BaseException) -> None:
        code = exc.code_name if isinstance(exc, TesseraError) else type(exc).__name__
        reason = str(exc) or type(exc).__name__
        _log.warning(
            "%s: %s[%d]@%d to DLQ: %s: %s",
            self.group_id,
            message.topic(),
            message.partition(),
            message.offset(),
            code,
            reason,
        )
        headers = list(message.headers() or [])
        headers += [
            (ERROR_HEADER, reason[:4000].encode()),
            (ERROR_CODE_HEADER, code.encode()),
            ("tessera-original-topic", message.topic().encode()),
            ("tessera-original-partition", str(message.partition()).encode()),
            ("tessera-original-offset", str(message.offset()).encode()),
            ("tessera-consumer-group", self.group_id.encode()),
        ]
        # Wait for the DLQ's acknowledgement: the offset is committed right after.
        await self._dlq.send_bytes(topics.dlq(message.topic()), message.value(), key=message.key(), headers=headers)
        DEAD_LETTERED.labels(message.topic(), self.group_id).inc()
        if self._on_dead_letter is not None:
            try:
                await self._on_dead_letter(message, exc)
            except Exception:  # noqa: BLE001 - the record is safe in the DLQ; a failed follow-up is only logged
                _log.exception("%s: dead-letter follow-up failed", self.group_id)

    def _commit(self, offsets: Offsets, wait: bool) -> None:
        """Commit a handled batch's offsets; with `wait`, block until the broker confirmed them."""
        if not offsets:
            return
        try:
            self._consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=not wait
            )
        except KafkaException as exc:
            # E.g. the partitions moved in a rebalance: the new owner redelivers, sinks are idempotent.
            _log.warning("%s: commit failed, the batch will be redelivered: %s", self.group_id, exc)

    def _update_lag(self) -> None:
        now = time.monotonic()
        if now - self._last_lag_update < 5.0:
            return
        self._last_lag_update = now
        try:
            for tp in self._consumer.assignment():
                low, high = self._consumer.get_watermark_offsets(tp, cached=True)
                position = self._consumer.position([tp])[0].offset
                lag = high - position if position >= 0 else high - low
                LAG.labels(tp.topic, str(tp.partition), self.group_id).set(max(lag, 0))
        except Exception as exc:  # noqa: BLE001 - lag is best effort, never stops the loop
            _log.debug("lag update failed: %s", exc)
