"""JSONL rows of a dataset version: one format per version, every row checked, problems with row numbers.

A version is stored as canonical JSONL (one compact JSON object per line, keys
sorted), so the same rows give the same bytes and the same sha256: the version id.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

CHAT, PROMPT_RESPONSE, TEXT, EVALUATION = "CHAT", "PROMPT_RESPONSE", "TEXT", "EVALUATION"
FORMATS = (CHAT, PROMPT_RESPONSE, TEXT, EVALUATION)
EVALUATION_COLUMNS = ("request", "expected_response", "expected_facts", "expected_retrieved_context", "guidelines")
ROLES = ("system", "user", "assistant")
# A version's problems list stops growing here: the first ones say enough.
MAX_PROBLEMS = 20

_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean"}


@dataclass
class ParsedRows:
    format: str = ""
    rows: list[dict] = field(default_factory=list)
    columns: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)
        elif len(self.problems) == MAX_PROBLEMS:
            self.problems.append("(more problems not shown)")


def row_format(row: dict) -> str | None:
    """The format a row is in, from its columns; None when it fits none."""
    if "messages" in row:
        return CHAT
    if "prompt" in row and "response" in row:
        return PROMPT_RESPONSE
    if "request" in row:
        return EVALUATION
    if "text" in row:
        return TEXT
    return None


def _row_problem(fmt: str, row: dict) -> str | None:
    if fmt == CHAT:
        messages = row["messages"]
        if not isinstance(messages, list) or not messages:
            return "'messages' must be a non-empty list"
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in ROLES:
                return f"message {i} needs a 'role' ({', '.join(ROLES)}) and a string 'content'"
        if not any(m["role"] == "assistant" for m in messages):
            return "no assistant message: nothing to learn"
        return None
    if fmt == PROMPT_RESPONSE:
        if not isinstance(row["prompt"], str) or not isinstance(row["response"], str):
            return "'prompt' and 'response' must be strings"
        return None
    if fmt == TEXT:
        return None if isinstance(row["text"], str) and row["text"] else "'text' must be a non-empty string"
    if not isinstance(row["request"], str | dict):
        return "'request' must be a string or an object"
    if "expected_facts" in row and not (
        isinstance(row["expected_facts"], list) and all(isinstance(f, str) for f in row["expected_facts"])
    ):
        return "'expected_facts' must be a list of strings"
    return None


def parse_jsonl(lines: Iterable[bytes], *, max_rows: int, max_row_bytes: int) -> ParsedRows:
    """Parse and check every row (1-based row numbers in problems); mixed formats are a problem."""
    out = ParsedRows()
    first_of: dict[str, int] = {}
    number = 0
    for raw in lines:
        if not raw.strip():
            continue
        number += 1
        if number > max_rows:
            out.problem(f"more than {max_rows} rows")
            break
        if len(raw) > max_row_bytes:
            out.problem(f"row {number}: longer than {max_row_bytes} bytes")
            continue
        try:
            row = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            out.problem(f"row {number}: not valid JSON ({exc.__class__.__name__}: {str(exc)[:80]})")
            continue
        if not isinstance(row, dict):
            out.problem(f"row {number}: not a JSON object")
            continue
        fmt = row_format(row)
        if fmt is None:
            out.problem(
                f"row {number}: no known columns (messages; prompt+response; text; request), has {sorted(row)[:8]}"
            )
            continue
        first_of.setdefault(fmt, number)
        problem = _row_problem(fmt, row)
        if problem:
            out.problem(f"row {number}: {problem}")
            continue
        for key, value in row.items():
            out.columns.setdefault(key, _JSON_TYPES.get(type(value), "null"))
        out.rows.append(row)
    if len(first_of) > 1:
        described = ", ".join(f"{fmt.lower()} from row {n}" for fmt, n in sorted(first_of.items(), key=lambda x: x[1]))
        out.problem(f"mixed formats: {described}; a version holds one format")
    if first_of:
        out.format = min(first_of, key=first_of.get)
    if number == 0:
        out.problem("no rows")
    return out


def split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """JSONL lines from chunks split anywhere."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        yield from lines
    if pending:
        yield pending


def canonical(rows: Iterable[dict]) -> bytes:
    return b"".join(
        json.dumps(r, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n" for r in rows
    )


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
