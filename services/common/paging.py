"""One page type for every list call: the items and the token of the next page.

Cores return `Page[T]`; front ends only copy `next_token` into the reply. A core
that filters rows after fetching them (by privilege, say) keeps fetching until
it has `size + 1` visible rows, so a page is never cut short by hidden rows.
Tokens are opaque to callers: a keyset position or an offset, encoded here.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from services.common.errors import InvalidArgument

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1_000
MAX_TOKEN_LENGTH = 1_024


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T] = field(default_factory=list)
    next_token: str = ""


def page_size(requested: int, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    """The size to fetch: `default` for 0, capped at `maximum`; negative sizes are refused."""
    if requested < 0:
        raise InvalidArgument(f"page size must not be negative, got {requested}", field="page_size")
    return min(requested or default, maximum)


def encode_token(position: dict[str, Any]) -> str:
    """An opaque token for a JSON-able position (keyset values or an offset)."""
    return base64.urlsafe_b64encode(json.dumps(position, separators=(",", ":")).encode()).decode()


def decode_token(token: str) -> dict[str, Any]:
    """The position a token stands for ({} for the first page); malformed tokens are INVALID_ARGUMENT."""
    if not token:
        return {}
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidArgument(f"page token longer than {MAX_TOKEN_LENGTH} characters", field="page_token")
    try:
        position = json.loads(base64.urlsafe_b64decode(token.encode()).decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument("invalid page token", field="page_token") from exc
    if not isinstance(position, dict):
        raise InvalidArgument("invalid page token", field="page_token")
    return position


def page_of(rows: list[T], size: int, position_of) -> Page[T]:
    """Cut `rows` (fetched as size + 1) into a page whose token is the last kept row's position."""
    if len(rows) <= size:
        return Page(list(rows))
    kept = list(rows[:size])
    return Page(kept, encode_token(position_of(kept[-1])))
