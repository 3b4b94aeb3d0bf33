"""Metadata filters -> parameterized SQL.

Values always travel as bind parameters; identifiers come only from the index's
declared metadata schema (and are quoted by psycopg), so nothing a caller sends
is ever spliced into the SQL text.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from psycopg import sql

from services.common.errors import InvalidArgument
from services.retrieval.entities import AllOf, AnyOf, Comparison, FieldType, Filter, IndexSpec, Not, Op

MAX_DEPTH = 16
MAX_IN_VALUES = 10_000
_ORDERED_OPS = {Op.LT, Op.LTE, Op.GT, Op.GTE}


def coerce(value: Any, kind: FieldType, where: str) -> Any:
    """A metadata or filter value as the Python type its column stores; InvalidArgument otherwise."""
    if value is None:
        return None
    if kind is FieldType.STRING:
        if not isinstance(value, str):
            raise InvalidArgument(f"{where}: expected a string, got {type(value).__name__}")
        if "\x00" in value:
            raise InvalidArgument(f"{where}: strings may not contain NUL characters")
        return value
    if kind is FieldType.BOOL:
        if not isinstance(value, bool):
            raise InvalidArgument(f"{where}: expected a boolean, got {type(value).__name__}")
        return value
    if kind is FieldType.INT64:
        # JSON and protobuf Struct carry every number as a double.
        if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer():
            raise InvalidArgument(f"{where}: expected an integer, got {value!r}")
        number = int(value)
        if not -(2**63) <= number < 2**63:
            raise InvalidArgument(f"{where}: {number} does not fit in 64 bits")
        return number
    if kind is FieldType.DOUBLE:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidArgument(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if kind is FieldType.TIMESTAMP:
        if isinstance(value, datetime):
            return value
        if not isinstance(value, str):
            raise InvalidArgument(f"{where}: expected an RFC 3339 timestamp string, got {type(value).__name__}")
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidArgument(f"{where}: {value!r} is not an RFC 3339 timestamp") from exc
        if parsed.tzinfo is None:
            raise InvalidArgument(f"{where}: timestamp {value!r} needs a time zone")
        return parsed
    raise InvalidArgument(f"{where}: unsupported column type {kind}")


# Composed SQL is immutable: the unfiltered case (most queries) shares one.
_NO_FILTER = sql.SQL("TRUE")


def compile_filter(spec: IndexSpec, flt: Filter | None) -> tuple[sql.Composable, list[Any]]:
    """SQL for a WHERE clause (`TRUE` when there is no filter) and its parameters, in order."""
    if flt is None:
        return _NO_FILTER, []
    params: list[Any] = []
    return _compile(spec, flt, params, depth=0), params


def _compile(spec: IndexSpec, flt: Filter, params: list[Any], depth: int) -> sql.Composable:
    if depth > MAX_DEPTH:
        raise InvalidArgument(f"filter nests deeper than {MAX_DEPTH} levels", field="filter")
    if isinstance(flt, Comparison):
        return _comparison(spec, flt, params)
    if isinstance(flt, AllOf | AnyOf):
        if not flt.filters:
            raise InvalidArgument("all_of / any_of needs at least one filter", field="filter")
        joiner = sql.SQL(" AND " if isinstance(flt, AllOf) else " OR ")
        parts = [_compile(spec, f, params, depth + 1) for f in flt.filters]
        return sql.SQL("({})").format(joiner.join(parts))
    if isinstance(flt, Not):
        return sql.SQL("(NOT {})").format(_compile(spec, flt.filter, params, depth + 1))
    raise InvalidArgument("empty filter", field="filter")


def _comparison(spec: IndexSpec, cmp: Comparison, params: list[Any]) -> sql.Composable:
    declared = spec.field(cmp.column)
    if declared is None:
        known = ", ".join(f.name for f in spec.metadata_schema) or "none"
        raise InvalidArgument(f"unknown filter column {cmp.column!r} (declared: {known})", field="filter")
    column = sql.Identifier(declared.name)
    where = f"filter on {declared.name}"
    if cmp.op is Op.IN:
        if not cmp.values:
            raise InvalidArgument(f"{where}: IN needs at least one value", field="filter")
        if len(cmp.values) > MAX_IN_VALUES:
            raise InvalidArgument(f"{where}: IN takes at most {MAX_IN_VALUES} values", field="filter")
        params.append([coerce(v, declared.type, where) for v in cmp.values])
        return sql.SQL("{} = ANY(%s)").format(column)
    if cmp.op in _ORDERED_OPS and declared.type in (FieldType.BOOL,):
        raise InvalidArgument(f"{where}: {cmp.op.value} does not apply to a boolean", field="filter")
    value = coerce(cmp.value, declared.type, where)
    if value is None:
        if cmp.op is Op.EQ:
            return sql.SQL("{} IS NULL").format(column)
        if cmp.op is Op.NE:
            return sql.SQL("{} IS NOT NULL").format(column)
        raise InvalidArgument(f"{where}: {cmp.op.value} needs a value", field="filter")
    params.append(value)
    return sql.SQL("{} " + cmp.op.value + " %s").format(column)


def check_columns(spec: IndexSpec, columns: tuple[str, ...]) -> tuple[str, ...]:
    """The metadata columns a query asked for ("*" = all), each one declared."""
    if "*" in columns:
        return tuple(f.name for f in spec.metadata_schema)
    for name in columns:
        if spec.field(name) is None:
            raise InvalidArgument(f"unknown column {name!r}", field="columns")
    return tuple(dict.fromkeys(columns))
