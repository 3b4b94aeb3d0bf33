"""The consumer loop every Tessera service runs.

- Offsets are committed only after the handler finished the batch, so a crash
  between processing and commit redelivers (sinks are idempotent on the
  record's id): at-least-once, never lost.
- Every handler failure is classified (`classify`), psycopg errors by SQLSTATE:
  - POISON (the record is at fault: bad data, a constraint, a statement timeout,
    any unexpected exception): the record goes to `<topic>.dlq` with the reason
    in headers (`dead_letters.py`) and the loop moves on;
  - TRANSIENT (a conflict, a timeout): retried with backoff, at most
    `max_attempts` times per record, then dead-lettered with the reason;
  - OUTAGE (the database or a service it needs is unreachable): retried with
    backoff for as long as it lasts; the record is not at fault, so the outage
    never empties the backlog into the DLQ.
- A failing batch is retried record by record, so one poison record does not
  take its neighbours to the DLQ. A handler that knows which records are bad
  settles the rest and raises `RejectedRecords`: only those go to the DLQ, and
  the batch is not run again.
- A DLQ send that fails is retried like an outage (never committed before the
  copy is acknowledged); an oversize copy is truncated to fit.
- The loop supervises itself: if it dies, it restarts with a new consumer after
  a backoff, and the process's `Readiness` (so gRPC health) says NOT_SERVING
  until the new consumer has its partitions.
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

from services.common import serialization, telemetry
from services.common.config import CommonSettings
from services.common.config import load as load_settings
from services.common.consumer_failures import Failure, RejectedRecords, RetriableError, classify, too_large
from services.common.dead_letters import (
    DLQ_FALLBACK_BYTES,
    DLQ_MAX_BYTES,
    ERROR_CODE_HEADER,
    ERROR_HEADER,
    Redactor,
    dead_letter,
)
from services.common.errors import Unavailable
from services.common.kafka_producer import RECORD_ID, EventProducer
from services.common.lifecycle import READINESS, Readiness

_log = logging.getLogger(__name__)

# How long the start of a partition at the newest record may take to ask for at assignment.
_POSITION_TIMEOUT_S = 10.0

M = TypeVar("M", bound=ProtoMessage)

CONSUMED = Counter(
    "tessera_kafka_records_consumed_total", "Records handled (processed or dead-lettered)", ["topic", "group"]
)
DEAD_LETTERED = Counter("tessera_kafka_dlq_records_total", "Records sent to a dead-letter topic", ["topic", "group"])
RETRIES = Counter("tessera_kafka_batch_retries_total", "Batches retried after a transient failure", ["group"])
DLQ_SEND_FAILURES = Counter(
    "tessera_kafka_dlq_send_failures_total", "Dead-letter sends Kafka refused (retried)", ["topic", "group"]
)
RESTARTS = Counter("tessera_kafka_consumer_restarts_total", "Consumer loops restarted after they died", ["group"])
LAG = Gauge("tessera_kafka_consumer_lag", "Records behind the end of the partition", ["topic", "partition", "group"])

_PROTOBUF = serialization.PROTOBUF.encode()

__all__ = [
    "ERROR_CODE_HEADER",
    "ERROR_HEADER",
    "ConsumerLoop",
    "Failure",
    "Record",
    "RejectedRecords",
    "RetriableError",
    "classify",
]

# A dead loop restarts after this pause, doubled on each death in a row.
_RESTART_BACKOFF_S = (1.0, 30.0)


class Record(Generic[M]):
    """A decoded record and where it came from. Headers, key and trace context
    are read from the raw message on demand: most handlers need only the value."""

    __slots__ = ("topic", "partition", "offset", "value", "record_id", "raw", "trace")

    def __init__(self, topic: str, partition: int, offset: int, value: M, record_id: str, raw: Message) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.value = value
        self.record_id = record_id
        self.raw = raw
        # The record's CONSUMER span context while it is handled (None when spans are not exported).
        self.trace: Context | None = None

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
        # Topics are created on purpose (kafka_admin), never by subscribing to a typo.
        "allow.auto.create.topics": False,
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
        max_attempts: int | None = None,
        dlq_max_bytes: int = DLQ_MAX_BYTES,
        on_dead_letter: Callable[[Message, BaseException], Awaitable[None]] | None = None,
        redact: Redactor | None = None,
        readiness: Readiness = READINESS,
        restart_backoff_s: tuple[float, float] = _RESTART_BACKOFF_S,
        **config: object,
    ) -> None:
        """`max_attempts`: tries of one record that keeps failing transiently before it is dead-lettered
        (default TESSERA_KAFKA_CONSUMER_MAX_ATTEMPTS). `readiness`: where the loop reports itself
        down while it restarts (the process's by default)."""
        if max_attempts is None:
            max_attempts = load_settings(CommonSettings).kafka_consumer_max_attempts
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.group_id = group_id
        self.topics = list(topics)
        self.message_type = message_type
        self._handler = handler
        self._dlq = dlq_producer
        self._batch_size = batch_size
        self._poll_timeout = poll_timeout_s
        self._max_backoff = max_backoff_s
        self._max_attempts = max_attempts
        self._dlq_max_bytes = dlq_max_bytes
        # What a DLQ copy keeps of a record's value (credentials blanked); the whole value by default.
        self._redact = redact
        # Called after a record went to the DLQ (e.g. to answer a requester who waits for a reply).
        self._on_dead_letter = on_dead_letter
        self._readiness = readiness
        self._restart_backoff = restart_backoff_s
        # Unique per loop: two replicas in one process may share a group.
        self.worker_name = f"kafka consumer {group_id} ({id(self):x})"
        self._config = consumer_config(bootstrap, group_id, **config)
        # Followers that only care about what happens from now on (registry events, ...).
        self._from_newest = self._config["auto.offset.reset"] in ("latest", "largest", "end")
        self._consumer = Consumer(self._config)
        self._schema = message_type.DESCRIPTOR.full_name.encode()
        self._stopping = asyncio.Event()
        self._assigned = asyncio.Event()
        self._last_lag_update = 0.0
        self._progressed = False  # whether the running consumer settled a batch yet

    # -- lifecycle -------------------------------------------------------

    async def run(self) -> None:
        """Consume until `stop()`. If the loop dies it is restarted with a fresh consumer after a
        backoff; it resumes from the last committed offsets, so nothing unsettled was committed."""
        pause, longest = self._restart_backoff
        try:
            while True:
                try:
                    await self._consume()
                    return
                except Exception:  # noqa: BLE001 - a dead consumer restarts; it must not end the service
                    if self._stopping.is_set():
                        raise
                    if self._progressed:
                        pause = self._restart_backoff[0]  # it worked for a while: not a crash loop
                    RESTARTS.labels(self.group_id).inc()
                    _log.exception("%s: consumer loop died; restarting in %.1fs", self.group_id, pause)
                    self._readiness.mark_down(self.worker_name)
                if not await self._pause(pause):
                    return
                pause = min(pause * 2, longest)
                self._assigned.clear()
                self._consumer = Consumer(self._config)
        finally:
            # A loop that is gone on purpose holds nobody's health down.
            self._readiness.forget(self.worker_name)

    async def _consume(self) -> None:
        self._progressed = False
        loop = asyncio.get_running_loop()

        def on_assign(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            if self._from_newest:
                consumer.assign(self._at_the_newest(consumer, partitions))
            loop.call_soon_threadsafe(self._on_assigned)

        self._consumer.subscribe(self.topics, on_assign=on_assign)
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
                        break  # stopped while a failure persisted: leave the batch uncommitted
                    # The batch is done: commit without waiting. A lost async commit only means
                    # redelivery, which idempotent sinks absorb; the last one is committed in sync.
                    self._commit(offsets, wait=False)
                    handled, self._progressed = offsets, True
                self._update_lag()
            if handled:
                await asyncio.to_thread(self._commit, handled, True)
        finally:
            await asyncio.to_thread(self._consumer.close)

    def _at_the_newest(self, consumer: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """Partitions without a committed offset start at their end as of now (on the consumer's thread).

        librdkafka resolves `auto.offset.reset=latest` only when it first fetches, a moment after the
        assignment: a record produced in between would be skipped although it came after the loop
        reported itself assigned. Asking for the end here makes the position the one at assignment.
        Should the broker not answer, the partitions keep the lazy reset (and a warning says so)."""
        try:
            committed = consumer.committed(partitions, timeout=_POSITION_TIMEOUT_S)
            for partition in committed:
                if partition.offset < 0:
                    _low, high = consumer.get_watermark_offsets(partition, timeout=_POSITION_TIMEOUT_S)
                    partition.offset = high
            return committed
        except KafkaException as exc:
            _log.warning(
                "%s: could not fix the start at the newest records (%s); the broker resolves it", self.group_id, exc
            )
            return partitions

    def _on_assigned(self) -> None:
        self._assigned.set()
        self._readiness.mark_up(self.worker_name)

    def stop(self) -> None:
        self._stopping.set()

    async def wait_assigned(self, timeout: float = 30.0) -> None:
        """Wait until the group gave this consumer its partitions (useful in tests and at start-up)."""
        await asyncio.wait_for(self._assigned.wait(), timeout)

    async def dead_letter(self, message: Message, exc: BaseException, *, attempts: int = 1) -> None:
        """Copy `message` to its DLQ with `exc` as the reason; returns once Kafka acknowledged it.

        A refused send is retried with backoff (a copy too large for the broker shrinks), never
        skipped: the record's offset may only be committed after this returns. Raises
        `Unavailable` if the loop is stopped first, which leaves the batch uncommitted."""
        pause, max_bytes = 0.1, self._dlq_max_bytes
        while True:
            send = asyncio.ensure_future(
                dead_letter(
                    self._dlq,
                    message,
                    exc,
                    group_id=self.group_id,
                    attempts=attempts,
                    max_bytes=max_bytes,
                    redact=self._redact,
                )
            )
            stopping = asyncio.ensure_future(self._stopping.wait())
            try:
                await asyncio.wait({send, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
            if not send.done():
                send.cancel()  # the copy may still arrive: a duplicate in the DLQ, never a loss
                raise Unavailable("stopped before the dead-letter topic acknowledged the record")
            failure = send.exception()
            if failure is None:
                DEAD_LETTERED.labels(message.topic(), self.group_id).inc()
                return
            DLQ_SEND_FAILURES.labels(message.topic(), self.group_id).inc()
            if too_large(failure):
                # The broker's limit is below ours: shrink the copy until it fits (headers always stay).
                max_bytes = DLQ_FALLBACK_BYTES if max_bytes > DLQ_FALLBACK_BYTES else max_bytes // 4
            _log.warning(
                "%s: dead-letter send of %s[%d]@%d failed, retrying in %.1fs: %s",
                self.group_id,
                message.topic(),
                message.partition(),
                message.offset(),
                pause,
                failure,
            )
            if not await self._pause(pause):
                raise Unavailable("stopped before the dead-letter topic acknowledged the record")
            pause = min(pause * 2, self._max_backoff)

    async def _pause(self, seconds: float) -> bool:
        """Sleep, unless stopped first; False when stopped."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
            return False
        except TimeoutError:
            return True

    # -- one batch -------------------------------------------------------

    async def _handle(self, messages: list[Message]) -> Offsets | None:
        """Decode and process a batch; the offsets to commit, or None if stopped mid-retry."""
        records: list[Record[M]] = []
        offsets: Offsets = {}
        handled: dict[str, int] = {}
        for message in messages:
            if message.error():
                if message.error().fatal() or message.error().code() == KafkaError._FATAL:
                    raise KafkaException(message.error())  # this consumer is unusable: restart with a new one
                if message.error().code() != KafkaError._PARTITION_EOF:
                    _log.warning("%s: consume error: %s", self.group_id, message.error().str())
                continue
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            # Within a partition a batch is in offset order: the last record's wins.
            offsets[(topic, partition)] = offset + 1
            handled[topic] = handled.get(topic, 0) + 1
            try:
                records.append(self._decode(message, topic, partition, offset))
            except Exception as exc:  # noqa: BLE001 - undecodable input of any kind is the record's fault
                if not await self._dead_letter(message, exc):
                    return None
        if records and not await self._process(records):
            return None
        for topic, count in handled.items():
            CONSUMED.labels(topic, self.group_id).inc(count)
        return offsets

    async def _process(self, records: list[Record[M]]) -> bool:
        """Run the handler until the records are settled (handled or dead-lettered); isolate poison
        records. False if stopped before that."""
        backoff, attempts = 0.1, 0
        while True:
            try:
                with telemetry.consumer_spans(records, self.group_id):
                    await self._handler(records)
                return True
            except RejectedRecords as rejected:
                # The handler settled the others: dead-letter exactly these, each with its reason.
                for record, reason in rejected.rejected:
                    if not await self._dead_letter(record.raw, reason):
                        return False
                return True
            except Exception as exc:  # noqa: BLE001 - every failure is either retried or dead-lettered
                failure = classify(exc)
                if failure is not Failure.POISON and self._stopping.is_set():
                    return False
                if failure is Failure.TRANSIENT:
                    attempts += 1
                if failure is Failure.OUTAGE or (failure is Failure.TRANSIENT and attempts < self._max_attempts):
                    RETRIES.labels(self.group_id).inc()
                    _log.warning("%s: %s failure, retrying in %.1fs: %s", self.group_id, failure.value, backoff, exc)
                    if not await self._pause(backoff):
                        return False
                    backoff = min(backoff * 2, self._max_backoff)
                    continue
                if len(records) == 1:
                    return await self._dead_letter(records[0].raw, exc, attempts=max(attempts, 1))
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

    async def _dead_letter(self, message: Message, exc: BaseException, *, attempts: int = 1) -> bool:
        """Dead-letter a record the loop gave up on, then run the follow-up; False if stopped first."""
        try:
            await self.dead_letter(message, exc, attempts=attempts)
        except Unavailable:
            return False
        if self._on_dead_letter is not None:
            try:
                await self._on_dead_letter(message, exc)
            except Exception:  # noqa: BLE001 - the record is safe in the DLQ; a failed follow-up is only logged
                _log.exception("%s: dead-letter follow-up failed", self.group_id)
        return True

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
