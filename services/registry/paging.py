"""Opaque page tokens (an offset) and page sizes shared by every list call."""

from __future__ import annotations

import base64
import json

from services.common.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 50_000


def page_size(requested: int, default: int = DEFAULT_PAGE_SIZE) -> int:
    if requested < 0:
        raise InvalidArgument(f"page size must not be negative, got {requested}", field="page_size")
    return min(requested or default, MAX_PAGE_SIZE)


def decode_token(token: str) -> int:
    if not token:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode()).decode())["offset"]
        if not isinstance(offset, int) or offset < 0:
            raise ValueError(offset)
        return offset
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument(f"invalid page token {token!r}", field="page_token") from exc


def encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def next_token(offset: int, size: int, fetched: int) -> str:
    """Callers fetch size + 1 rows: one more than a page means there is another page."""
    return encode_token(offset + size) if fetched > size else ""
