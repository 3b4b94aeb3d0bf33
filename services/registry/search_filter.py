"""MLflow's search syntax, parsed and compiled to SQL with bound parameters.

    metrics.loss < 0.1 and params.lr = '0.01' and tags.`team name` LIKE 'x%'
    and attributes.status = 'FINISHED' and attributes.run_id IN ('a', 'b')

Clauses are joined by AND (as in MLflow). Metric filters read the latest value
of each metric (latest_metrics), so a search never scans history. Values are
always bound parameters, never spliced into the SQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.common.errors import InvalidArgument

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    | (?P<number>[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?))(?![\w.])
    | (?P<op>!=|<>|<=|>=|=|<|>)
    | (?P<lparen>\()
    | (?P<rparen>\))
    | (?P<comma>,)
    | (?P<ident>(?:[A-Za-z_][\w]*\.)?(?:`[^`]+`|"[^"]+"|[\w.\-/:]+))
    )""",
    re.VERBOSE,
)

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


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise InvalidArgument(f"invalid filter near {text[pos : pos + 20]!r}", field="filter")
        kind = match.lastgroup
        tokens.append((kind, match.group(kind)))
        pos = match.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return tokens


def parse(text: str) -> list[Clause]:
    if not text or not text.strip():
        return []
    tokens = _tokens(text)
    clauses: list[Clause] = []
    i = 0

    def expect(kinds: tuple[str, ...]) -> tuple[str, str]:
        nonlocal i
        if i >= len(tokens) or tokens[i][0] not in kinds:
            got = tokens[i][1] if i < len(tokens) else "end of filter"
            raise InvalidArgument(f"invalid filter {text!r}: unexpected {got!r}", field="filter")
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
            raise InvalidArgument(f"invalid comparator {op!r} in filter {text!r}", field="filter")
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
        if i == len(tokens):
            return clauses
        _, joiner = expect(("ident",))
        if joiner.upper() != "AND":
            raise InvalidArgument(f"filters join clauses with AND only, got {joiner!r}", field="filter")


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
                    f"metric {c.key!r} compares with a number using =, !=, <, <=, >, >=", field="filter"
                )
            params.append(c.key)
            sql.append(
                "EXISTS (SELECT 1 FROM latest_metrics m WHERE m.run_pk = r.run_pk AND m.key = %s AND "
                + _compare("m.value", c.op, c.value, params)
                + ")"
            )
        elif c.entity in ("params", "tags"):
            if not isinstance(c.value, str | tuple) or c.op in ("<", "<=", ">", ">="):
                raise InvalidArgument(f"{c.entity} {c.key!r} compares with a quoted string", field="filter")
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
                raise InvalidArgument(f"unknown run attribute {c.key!r}", field="filter")
            value = c.value
            if column in _NUMERIC_ATTRIBUTES:
                if not isinstance(value, float):
                    raise InvalidArgument(f"attribute {c.key!r} compares with a number", field="filter")
                value = int(value)
            elif isinstance(value, float):
                raise InvalidArgument(f"attribute {c.key!r} compares with a quoted string", field="filter")
            sql.append(_compare(column, c.op, value, params))
    return sql


def run_order(order_by: list[str], params: list) -> str:
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
                raise InvalidArgument(f"cannot order by {raw!r}", field="order_by")
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
    terms = []
    for raw in order_by:
        parts = raw.strip().rsplit(None, 1)
        direction = "ASC"
        if len(parts) == 2 and parts[1].upper() in ("ASC", "DESC"):
            raw, direction = parts[0], parts[1].upper()
        _, key = _split_identifier(raw.strip())
        column = _EXPERIMENT_ATTRIBUTES.get(key)
        if column is None:
            raise InvalidArgument(f"cannot order experiments by {raw!r}", field="order_by")
        terms.append(f"{column} {direction}")
    return ", ".join([*terms, "e.experiment_id DESC"])
