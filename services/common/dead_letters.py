"""Dead-letter records: a copy of a record that could not be processed, with the reason in headers.

`dead_letter(producer, message, exc, group_id=...)` is the one way every
consumer writes `<topic>.dlq`. The copy keeps the original key, value and
headers and adds:

| header                      | value                                                      |
|-----------------------------|------------------------------------------------------------|
| `tessera-error`             | the reason (at most 4000 bytes)                            |
| `tessera-error-code`        | the core error's code (`INVALID_ARGUMENT`...) or the exception's type |
| `tessera-attempts`          | how many times the record was tried                        |
| `tessera-original-topic` / `-partition` / `-offset` | where the record came from         |
| `tessera-consumer-group`    | who gave up on it                                          |
| `tessera-dlq-truncated`     | only when the copy had to shrink to fit: what was cut      |
| `tessera-original-sha256`   | only with `tessera-dlq-truncated`: the full value's hash   |

A record near the broker's size limit would not fit once these headers are
added, so a copy larger than `max_bytes` keeps the headers and a truncated
value (and says so) instead of failing to send.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Message

from services.common import topics
from services.common.errors import TesseraError
from services.common.kafka_producer import Delivered, EventProducer

_log = logging.getLogger(__name__)

ERROR_HEADER = "tessera-error"
ERROR_CODE_HEADER = "tessera-error-code"
ATTEMPTS_HEADER = "tessera-attempts"
TRUNCATED_HEADER = "tessera-dlq-truncated"
ORIGINAL_SHA256_HEADER = "tessera-original-sha256"

MAX_REASON_BYTES = 4000
# Below the 16 MiB the producers and the broker accept, with room for batch overhead and for
# compression, which makes incompressible values slightly larger.
DLQ_MAX_BYTES = 15 * 1024 * 1024
# What a copy shrinks to when the broker refused even `max_bytes` (its own limit is lower).
DLQ_FALLBACK_BYTES = 512 * 1024
_MAX_KEY_BYTES = 4096
# Per-header and per-record framing the size estimate adds on top of names and values.
_HEADER_OVERHEAD = 10
_RECORD_OVERHEAD = 512


@dataclass(frozen=True)
class DeadLetter:
    """The record to write to the dead-letter topic."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    @property
    def size(self) -> int:
        return _record_size(self.key, self.value, self.headers)


# The value a DLQ copy keeps, computed from the original record (e.g. with a token blanked).
Redactor = Callable[[Message], bytes | None]


def error_code(exc: BaseException) -> str:
    return exc.code_name if isinstance(exc, TesseraError) else type(exc).__name__


def error_reason(exc: BaseException) -> str:
    if isinstance(exc, TesseraError):
        return f"{exc.field}: {exc.message}" if exc.field else exc.message
    return str(exc) or type(exc).__name__


def dead_letter_headers(
    message: Message, exc: BaseException, group_id: str, *, attempts: int = 1
) -> list[tuple[str, bytes]]:
    """The headers a dead-letter copy adds to the original's: why, where from, who gave up."""
    return [
        (ERROR_HEADER, error_reason(exc).encode()[:MAX_REASON_BYTES]),
        (ERROR_CODE_HEADER, error_code(exc).encode()),
        (ATTEMPTS_HEADER, str(attempts).encode()),
        ("tessera-original-topic", message.topic().encode()),
        ("tessera-original-partition", str(message.partition()).encode()),
        ("tessera-original-offset", str(message.offset()).encode()),
        ("tessera-consumer-group", group_id.encode()),
    ]


def dead_letter_record(
    message: Message,
    exc: BaseException,
    group_id: str,
    *,
    attempts: int = 1,
    max_bytes: int = DLQ_MAX_BYTES,
    redact: Redactor | None = None,
) -> DeadLetter:
    """The DLQ copy of `message`, no larger than `max_bytes`: oversize parts are cut, and the copy says so.

    `redact` gives the value to keep instead of the original (e.g. without a credential it carries)."""
    ours = dead_letter_headers(message, exc, group_id, attempts=attempts)
    # A credential a producer sent along (retrieval's signed sync records) is never copied.
    original = [(k, v) for k, v in message.headers() or () if k.lower() != "authorization"]
    key, value = message.key(), (redact(message) if redact is not None else message.value())
    cuts: list[str] = []
    if _headers_size(original) > max_bytes // 4:
        cuts.append(f"headers: dropped {len(original)} ({_headers_size(original)} bytes)")
        original = []
    if key is not None and len(key) > _MAX_KEY_BYTES:
        cuts.append(f"key: kept {_MAX_KEY_BYTES} of {len(key)} bytes")
        key = key[:_MAX_KEY_BYTES]
    # Room for the truncation headers themselves, whose text is not known yet.
    budget = max_bytes - _record_size(key, b"", original + ours) - 256
    full_value = value
    if value is not None and len(value) > budget:
        kept = max(budget, 0)
        cuts.append(f"value: kept {kept} of {len(value)} bytes")
        value = value[:kept]
    headers = original + ours
    if cuts:
        headers.append((TRUNCATED_HEADER, "; ".join(cuts).encode()))
        if full_value is not None:
            headers.append((ORIGINAL_SHA256_HEADER, hashlib.sha256(full_value).hexdigest().encode()))
    return DeadLetter(topics.dlq(message.topic()), key, value, headers)


async def dead_letter(
    producer: EventProducer,
    message: Message,
    exc: BaseException,
    *,
    group_id: str,
    attempts: int = 1,
    max_bytes: int = DLQ_MAX_BYTES,
    redact: Redactor | None = None,
) -> Delivered:
    """Send `message` to `<topic>.dlq` with `exc` as the reason and wait for Kafka's acknowledgement.

    One try: raises `DeliveryError`/`KafkaException` when Kafka refuses; `ConsumerLoop.dead_letter`
    retries for a consumer."""
    record = dead_letter_record(message, exc, group_id, attempts=attempts, max_bytes=max_bytes, redact=redact)
    _log.warning(
        "%s: %s[%d]@%d to DLQ: %s: %s",
        group_id,
        message.topic(),
        message.partition(),
        message.offset(),
        error_code(exc),
        error_reason(exc)[:500],
    )
    return await producer.send_bytes(record.topic, record.value, key=record.key, headers=record.headers)


def _headers_size(headers: list[tuple[str, bytes]]) -> int:
    return sum(len(name) + len(value or b"") + _HEADER_OVERHEAD for name, value in headers)


def _record_size(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> int:
    return len(key or b"") + len(value or b"") + _headers_size(headers) + _RECORD_OVERHEAD
