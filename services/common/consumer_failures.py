"""What a consumer does with a failure: dead-letter the record, retry it a few times, or wait.

Database errors are judged by SQLSTATE (`db.is_outage`, `db.is_transient`),
wherever they sit in the exception's chain, so a store that wraps a driver
error keeps the driver's verdict; everything unexpected is the record's fault.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence

import psycopg
from confluent_kafka import KafkaError, KafkaException

from services.common import db
from services.common.errors import DeadlineExceeded, Unavailable
from services.common.kafka_producer import DeliveryError


class RetriableError(Exception):
    """Raise from a handler to have the batch retried later (at most `max_attempts` times per record)."""


class RejectedRecords(Exception):
    """Raise from a batch handler after it settled the batch's good records: the loop dead-letters
    exactly `rejected` (each `(record, reason)`) and runs the handler no more for this batch.

    A handler that can tell its bad records apart says so this way instead of raising the first
    reason, which makes the loop retry the whole batch one record at a time (a transaction per
    record: seconds for a full batch with one poison record in it)."""

    def __init__(self, rejected: Sequence[tuple[object, BaseException]]) -> None:
        if not rejected:
            raise ValueError("RejectedRecords needs at least one record")
        self.rejected = list(rejected)
        first = self.rejected[0][1]
        super().__init__(f"{len(self.rejected)} record(s) rejected, first: {first}")


class Failure(enum.Enum):
    POISON = "poison"  # the record is at fault: dead-letter it now
    TRANSIENT = "transient"  # may pass on a retry; dead-lettered after `max_attempts`
    OUTAGE = "outage"  # something the handler needs is unreachable: wait as long as it lasts


def classify(exc: BaseException) -> Failure:
    """What to do about a handler's exception. A database error anywhere in its chain decides
    by SQLSTATE, so a store that wraps a driver error keeps the driver's verdict."""
    for cause in _chain(exc):
        if isinstance(cause, psycopg.Error):
            if db.is_outage(cause):
                return Failure.OUTAGE
            return Failure.TRANSIENT if db.is_transient(cause) else Failure.POISON
    if isinstance(exc, Unavailable | ConnectionError):
        return Failure.OUTAGE
    if isinstance(exc, RetriableError | DeadlineExceeded | TimeoutError | DeliveryError):
        return Failure.TRANSIENT
    if isinstance(exc, KafkaException) and exc.args and exc.args[0].retriable():
        return Failure.TRANSIENT
    return Failure.POISON


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def too_large(exc: BaseException) -> bool:
    """Kafka refused a record for its size (at produce time or in the delivery report)."""
    error = exc.error if isinstance(exc, DeliveryError) else exc.args[0] if isinstance(exc, KafkaException) else None
    return isinstance(error, KafkaError) and error.code() == KafkaError.MSG_SIZE_TOO_LARGE
