"""MLflow's search syntax, parsed and compiled to SQL with bound parameters.

    metrics.loss < 0.1 and params.lr = '0.01' and tags.`team name` LIKE 'x%'
    and attributes.status = 'FINISHED' and attributes.run_id IN ('a', 'b')

Clauses are joined by AND (as in MLflow). Metric filters read the latest value
of each metric (latest_metrics), so a search never scans history. Values are
always bound parameters, never spliced into the SQL. Filters are untrusted:
their length and clause count are capped before scanning, and the lexer is a
single pass (no backtracking regex), so parsing costs time linear in the input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.common.errors import InvalidArgument

# Bounds on what a client may send; checked before any scanning.
MAX_FILTER_LENGTH = 8192
MAX_CLAUSES = 50
MAX_ORDER_BY = 20
MAX_TERM_LENGTH = 512

# Each pattern is one greedy run with nothing after it, so it cannot backtrack.
_DIGITS = re.compile(r"\d*")
_WORD = re.compile(r"\w*")
_BARE_IDENT = re.compile(r"[\w.\-/:]*")
_TWO_CHAR_OPS = ("!=", "<>", "<=", ">=")
_ONE_CHAR_OPS = "=<>"
_PUNCTUATION = {"(": "lparen", ")": "rparen", ",": "comma"}


def _shown(value: object, limit: int = 40) -> str:
    """A piece of client input for an error message, cut short: messages travel in gRPC trailers."""
    text = str(value)
    return repr(text if len(text) <= limit else text[:limit] + "...")


class Lexer:
    """Splits a filter into (kind, text) tokens in one left-to-right pass.

    `steps` counts the characters the scanners examined: it grows linearly with
    the input (no position is rescanned), which the unit tests check.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.steps = 0

    def _run(self, pattern: re.Pattern, pos: int) -> int:
        end = pattern.match(self.text, pos).end()
        self.steps += end - pos + 1
        return end

    def _fail(self, pos: int) -> InvalidArgument:
        return InvalidArgument(f"invalid filter near {_shown(self.text[pos:])}", field="filter")

    def tokens(self) -> list[tuple[str, str]]:
        text, n = self.text, len(self.text)
        out: list[tuple[str, str]] = []
        pos = 0
        while pos < n:
            self.steps += 1
            c = text[pos]
            if c.isspace():
                pos += 1
                continue
            if c in "'\"":
                end = self._quoted(pos, c, escapes=True)
                out.append(("string", text[pos:end]))
            elif (end := self._number(pos)) is not None:
                out.append(("number", text[pos:end]))
            elif text.startswith(_TWO_CHAR_OPS, pos):
                end = pos + 2
                out.append(("op", text[pos:end]))
            elif c in _ONE_CHAR_OPS:
                end = pos + 1
                out.append(("op", c))
            elif c in _PUNCTUATION:
                end = pos + 1
                out.append((_PUNCTUATION[c], c))
            else:
                end = self._identifier(pos)
                out.append(("ident", text[pos:end]))
            pos = end
        return out

    def _quoted(self, pos: int, quote: str, escapes: bool) -> int:
        """The end of a quoted run starting at pos (backslash escapes only in strings)."""
        text, i = self.text, pos + 1
        while i < len(self.text):
            self.steps += 1
            if escapes and text[i] == "\\":
                i += 2
                continue
            if text[i] == quote:
                return i + 1
            i += 1
        raise self._fail(pos)

    def _number(self, pos: int) -> int | None:
        """The end of a number at pos, or None; a number may not run into a word character or a dot."""
        text, n, i = self.text, len(self.text), pos
        if i < n and text[i] in "+-":
            i += 1
        whole = self._run(_DIGITS, i)
        has_whole, i = whole > i, whole
        if i < n and text[i] == ".":
            fraction = self._run(_DIGITS, i + 1)
            if not has_whole and fraction == i + 1:
                return None
            i = fraction
        elif not has_whole:
            return None
        if i < n and text[i] in "eE":
            j = i + 1
            if j < n and text[j] in "+-":
                j += 1
            exponent = self._run(_DIGITS, j)
            if exponent > j:
                i = exponent
        if i < n and (text[i] == "." or text[i].isalnum() or text[i] == "_"):
            return None
        return i

    def _identifier(self, pos: int) -> int:
        """An `entity.key`, an entity with a back-quoted or double-quoted key, or a bare run of name characters."""
        text, n = self.text, len(self.text)
        if text[pos].isascii() and (text[pos].isalpha() or text[pos] == "_"):
            dot = self._run(_WORD, pos + 1)
            if dot < n and text[dot] == "." and dot + 1 < n and text[dot + 1] in '`"':
                end = self._quoted(dot + 1, text[dot + 1], escapes=False)
                if end > dot + 3:  # not empty
                    return end
        if text[pos] == "`":
            end = self._quoted(pos, "`", escapes=False)
            if end > pos + 2:
                return end
        end = self._run(_BARE_IDENT, pos)
        if end == pos:
            raise self._fail(pos)
        return end


_ENTITY_ALIASES = {
    "metric": "metrics",
    "metrics": "metrics",
    "param": "params",
    "params": "params",
    "parameter": "params",
    "parameters": "params",
    "tag": "tags",
    "tags": "tags",
    "attribute": "attributes",
    "attributes": "attributes",
    "attr": "attributes",
    "run": "attributes",
}

_COMPARATORS = {"=", "!=", "<>", "<", "<=", ">", ">=", "LIKE", "ILIKE", "IN", "NOT IN"}


@dataclass(frozen=True)
class Clause:
    entity: str  # metrics | params | tags | attributes
    key: str
    op: str
    value: object  # float, str, or tuple of str for IN


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"`":
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


def _split_identifier(ident: str) -> tuple[str, str]:
    head, dot, rest = ident.partition(".")
    if dot and head.lower() in _ENTITY_ALIASES:
        return _ENTITY_ALIASES[head.lower()], _unquote(rest)
    return "attributes", _unquote(ident)


def parse(text: str, max_length: int = MAX_FILTER_LENGTH, max_clauses: int = MAX_CLAUSES) -> list[Clause]:
    """The filter's clauses; INVALID_ARGUMENT for a malformed or oversized filter (checked before scanning)."""
    if not text or not text.strip():
        return []
    if len(text) > max_length:
        raise InvalidArgument(f"filter is {len(text)} characters; at most {max_length}", field="filter")
    tokens = Lexer(text).tokens()
    clauses: list[Clause] = []
    i = 0

    def expect(kinds: tuple[str, ...]) -> tuple[str, str]:
        nonlocal i
        if i >= len(tokens) or tokens[i][0] not in kinds:
            got = tokens[i][1] if i < len(tokens) else "end of filter"
            raise InvalidArgument(f"invalid filter {_shown(text)}: unexpected {_shown(got)}", field="filter")
        i += 1
        return tokens[i - 1]

    while True:
        _, ident = expect(("ident",))
        entity, key = _split_identifier(ident)
        kind, op = expect(("op", "ident"))
        op = op.upper()
        if op == "NOT":
            expect(("ident",))
            op = "NOT IN"
        if op not in _COMPARATORS:
            raise InvalidArgument(f"invalid comparator {_shown(op)} in filter {_shown(text)}", field="filter")
        if op in ("IN", "NOT IN"):
            expect(("lparen",))
            values = []
            while True:
                values.append(_unquote(expect(("string", "number"))[1]))
                if expect(("comma", "rparen"))[0] == "rparen":
                    break
            value: object = tuple(values)
        else:
            vkind, raw = expect(("string", "number"))
            value = float(raw) if vkind == "number" else _unquote(raw)
        if op == "<>":
            op = "!="
        clauses.append(Clause(entity, key, op, value))
        if len(clauses) > max_clauses:
            raise InvalidArgument(f"filter has more than {max_clauses} clauses", field="filter")
        if i == len(tokens):
            return clauses
        _, joiner = expect(("ident",))
        if joiner.upper() != "AND":
            raise InvalidArgument(f"filters join clauses with AND only, got {_shown(joiner)}", field="filter")


# -- runs -----------------------------------------------------------------------

_RUN_ATTRIBUTES = {
    "run_id": "r.run_id",
    "run_name": "r.run_name",
    "status": "r.status",
    "user_id": "r.user_id",
    "start_time": "r.start_time",
    "created": "r.start_time",
    "end_time": "r.end_time",
    "artifact_uri": "r.artifact_uri",
    "lifecycle_stage": "r.lifecycle_stage",
}
_NUMERIC_ATTRIBUTES = {"r.start_time", "r.end_time"}


def _compare(column: str, op: str, value: object, params: list) -> str:
    if op in ("IN", "NOT IN"):
        params.append(list(value))
        return f"{'NOT ' if op == 'NOT IN' else ''}{column} = ANY(%s)"
    params.append(value)
    return f"{column} {op} %s"


def run_conditions(clauses: list[Clause], params: list) -> list[str]:
    sql: list[str] = []
    for c in clauses:
        if c.entity == "metrics":
            if not isinstance(c.value, float) or c.op not in ("=", "!=", "<", "<=", ">", ">="):
                raise InvalidArgument(
                    f"metric {_shown(c.key)} compares with a number using =, !=, <, <=, >, >=", field="filter"
                )
            params.append(c.key)
            sql.append(
                "EXISTS (SELECT 1 FROM latest_metrics m WHERE m.run_pk = r.run_pk AND m.key = %s AND "
                + _compare("m.value", c.op, c.value, params)
                + ")"
            )
        elif c.entity in ("params", "tags"):
            if not isinstance(c.value, str | tuple) or c.op in ("<", "<=", ">", ">="):
                raise InvalidArgument(f"{c.entity} {_shown(c.key)} compares with a quoted string", field="filter")
            table = "params" if c.entity == "params" else "run_tags"
            params.append(c.key)
            sql.append(
                f"EXISTS (SELECT 1 FROM {table} t WHERE t.run_pk = r.run_pk AND t.key = %s AND "
                + _compare("t.value", c.op, c.value, params)
                + ")"
            )
        else:
            column = _RUN_ATTRIBUTES.get(c.key)
            if column is None:
                raise InvalidArgument(f"unknown run attribute {_shown(c.key)}", field="filter")
            value = c.value
            if column in _NUMERIC_ATTRIBUTES:
                if not isinstance(value, float):
                    raise InvalidArgument(f"attribute {_shown(c.key)} compares with a number", field="filter")
                value = int(value)
            elif isinstance(value, float):
                raise InvalidArgument(f"attribute {_shown(c.key)} compares with a quoted string", field="filter")
            sql.append(_compare(column, c.op, value, params))
    return sql


def _check_order_by(order_by: list[str]) -> None:
    if len(order_by) > MAX_ORDER_BY:
        raise InvalidArgument(f"at most {MAX_ORDER_BY} order_by terms", field="order_by")
    if any(len(term) > MAX_TERM_LENGTH for term in order_by):
        raise InvalidArgument(f"order_by terms are at most {MAX_TERM_LENGTH} characters", field="order_by")


def run_order(order_by: list[str], params: list) -> str:
    _check_order_by(order_by)
    terms: list[str] = []
    for raw in order_by:
        parts = raw.strip().rsplit(None, 1)
        direction = "ASC"
        if len(parts) == 2 and parts[1].upper() in ("ASC", "DESC"):
            raw, direction = parts[0], parts[1].upper()
        entity, key = _split_identifier(raw.strip())
        if entity == "metrics":
            params.append(key)
            column = "(SELECT m.value FROM latest_metrics m WHERE m.run_pk = r.run_pk AND m.key = %s)"
        elif entity in ("params", "tags"):
            params.append(key)
            table = "params" if entity == "params" else "run_tags"
            column = f"(SELECT t.value FROM {table} t WHERE t.run_pk = r.run_pk AND t.key = %s)"
        else:
            column = _RUN_ATTRIBUTES.get(key)
            if column is None:
                raise InvalidArgument(f"cannot order by {_shown(raw)}", field="order_by")
        terms.append(f"{column} {direction} NULLS LAST")
    terms += ["r.start_time DESC", "r.run_pk DESC"]
    return ", ".join(terms)


# -- experiments ----------------------------------------------------------------

_EXPERIMENT_ATTRIBUTES = {
    "name": "e.name",
    "experiment_id": "e.experiment_id::text",
    "creation_time": "e.creation_time",
    "last_update_time": "e.last_update_time",
}


def experiment_conditions(clauses: list[Clause], params: list) -> list[str]:
    sql: list[str] = []
    for c in clauses:
        if c.entity == "tags":
            params.append(c.key)
            sql.append(
                "EXISTS (SELECT 1 FROM experiment_tags t WHERE t.experiment_id = e.experiment_id AND t.key = %s AND "
                + _compare("t.value", c.op, c.value, params)
                + ")"
            )
        elif c.entity == "attributes" and c.key in _EXPERIMENT_ATTRIBUTES:
            column = _EXPERIMENT_ATTRIBUTES[c.key]
            value = int(c.value) if column.endswith("_time") and isinstance(c.value, float) else c.value
            sql.append(_compare(column, c.op, value, params))
        else:
            raise InvalidArgument(f"cannot filter experiments on {c.entity}.{c.key}", field="filter")
    return sql


def experiment_order(order_by: list[str]) -> str:
    _check_order_by(order_by)
    terms = []
    for raw in order_by:
        parts = raw.strip().rsplit(None, 1)
        direction = "ASC"
        if len(parts) == 2 and parts[1].upper() in ("ASC", "DESC"):
            raw, direction = parts[0], parts[1].upper()
        _, key = _split_identifier(raw.strip())
        column = _EXPERIMENT_ATTRIBUTES.get(key)
        if column is None:
            raise InvalidArgument(f"cannot order experiments by {_shown(raw)}", field="order_by")
        terms.append(f"{column} {direction}")
    return ", ".join([*terms, "e.experiment_id DESC"])
