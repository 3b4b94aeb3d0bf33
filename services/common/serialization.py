"""How protobuf messages travel on Kafka: bytes plus `content-type` and `schema` headers.

Producers in other languages may send JSON instead (content-type
`application/json`); `decode` accepts both and raises `InvalidArgument` with a
reason for anything else, which the consumer loop turns into a DLQ record.
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from services.common.errors import InvalidArgument

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

M = TypeVar("M", bound=Message)


def schema_name(message: Message | type[Message]) -> str:
    return message.DESCRIPTOR.full_name


def encode(message: Message) -> bytes:
    return message.SerializeToString()


def decode(
    message_type: type[M],
    value: bytes | None,
    content_type: str | bytes | None = None,
    schema: str | bytes | None = None,
) -> M:
    """Parse a record value into `message_type`, strictly. Header values may be str or raw bytes."""
    if value is None:
        raise InvalidArgument("record has no value (tombstone)")
    if isinstance(content_type, bytes):
        content_type = content_type.decode("utf-8", "replace")
    if isinstance(schema, bytes):
        schema = schema.decode("utf-8", "replace")
    expected = message_type.DESCRIPTOR.full_name
    if schema and schema != expected:
        raise InvalidArgument(f"schema header says {schema!r}, this topic carries {expected!r}")
    content_type = (content_type or PROTOBUF).split(";")[0].strip().lower()
    if content_type in _PROTOBUF_TYPES:
        try:
            return message_type.FromString(value)
        except DecodeError as exc:
            raise InvalidArgument(f"invalid protobuf {expected}: {exc}") from exc
    if content_type == JSON:
        message = message_type()
        try:
            json_format.Parse(value.decode("utf-8"), message)
        except (json_format.ParseError, UnicodeDecodeError) as exc:
            raise InvalidArgument(f"invalid JSON {expected}: {exc}") from exc
        return message
    raise InvalidArgument(f"unsupported content-type {content_type!r}; use {PROTOBUF} or {JSON}")


_PROTOBUF_TYPES = frozenset({PROTOBUF, "application/protobuf", "application/octet-stream"})
