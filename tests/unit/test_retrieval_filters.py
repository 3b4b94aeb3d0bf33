"""Filters compile to parameterized SQL: values only as parameters, identifiers only from the schema."""

from __future__ import annotations

import pytest
from psycopg import sql

from services.common.errors import InvalidArgument
from services.retrieval.entities import (
    COLUMN_NAME,
    AllOf,
    AnyOf,
    Comparison,
    FieldType,
    IndexSpec,
    MetadataField,
    Not,
    Op,
    schema_of,
    validate_index_name,
)
from services.retrieval.filters import check_columns, coerce, compile_filter

pytestmark = pytest.mark.unit

SPEC = IndexSpec(
    name="main.docs.articles",
    dimension=3,
    metadata_schema=(
        MetadataField("lang", FieldType.STRING),
        MetadataField("year", FieldType.INT64),
        MetadataField("score", FieldType.DOUBLE),
        MetadataField("public", FieldType.BOOL),
        MetadataField("published", FieldType.TIMESTAMP),
    ),
)


def rendered(composable: sql.Composable) -> str:
    # Identifier quoting without a connection: psycopg renders Identifiers with double quotes.
    return composable.as_string(None)


def test_values_travel_as_parameters_never_in_the_sql_text():
    attack = "en' OR '1'='1"
    flt = AllOf(
        (
            Comparison("lang", Op.EQ, attack),
            AnyOf((Comparison("year", Op.GTE, 2020.0), Comparison("year", Op.IN, values=(1999.0, 2001.0)))),
            Not(Comparison("public", Op.EQ, False)),
        )
    )
    where, params = compile_filter(SPEC, flt)
    text = rendered(where)
    assert attack not in text and "2020" not in text
    assert text == '("lang" = %s AND ("year" >= %s OR "year" = ANY(%s)) AND (NOT "public" = %s))'
    assert params == [attack, 2020, [1999, 2001], False]


def test_unknown_or_hostile_column_names_are_rejected():
    for column in ("colour", 'lang" = lang; DROP TABLE x; --', "id"):
        with pytest.raises(InvalidArgument, match="unknown filter column"):
            compile_filter(SPEC, Comparison(column, Op.EQ, "x"))
    with pytest.raises(InvalidArgument, match="unknown column"):
        check_columns(SPEC, ("lang", "secret"))
    assert check_columns(SPEC, ("*",)) == ("lang", "year", "score", "public", "published")


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("1 OR 1=1", FieldType.INT64),
        (1.5, FieldType.INT64),
        (True, FieldType.INT64),
        (float("nan"), FieldType.DOUBLE),
        (1, FieldType.STRING),
        ("yes", FieldType.BOOL),
        ("2024-01-01", FieldType.TIMESTAMP),
        ("a\x00b", FieldType.STRING),
    ],
)
def test_values_of_the_wrong_type_are_invalid(value, kind):
    with pytest.raises(InvalidArgument):
        coerce(value, kind, "where")


def test_null_comparisons_and_timestamps():
    where, params = compile_filter(SPEC, Comparison("lang", Op.EQ, None))
    assert rendered(where) == '"lang" IS NULL' and params == []
    _, params = compile_filter(SPEC, Comparison("published", Op.LT, "2024-01-01T00:00:00Z"))
    assert params[0].year == 2024 and params[0].tzinfo is not None
    with pytest.raises(InvalidArgument):
        compile_filter(SPEC, Comparison("public", Op.LT, True))


def test_index_names_are_three_lower_case_identifiers():
    assert schema_of(validate_index_name("main.docs.articles")) == "main.docs"
    for bad in ("main.docs", "Main.docs.a", "a.b.c; DROP TABLE x", "a.b.c.d", ""):
        with pytest.raises(InvalidArgument):
            validate_index_name(bad)


def test_names_with_a_trailing_newline_are_refused():
    # `$` matches before a final newline; the names are matched whole.
    for bad in ("main.docs.articles\n", "main.docs\n.articles", "\nmain.docs.articles"):
        with pytest.raises(InvalidArgument):
            validate_index_name(bad)
    assert COLUMN_NAME.fullmatch("lang") and not COLUMN_NAME.fullmatch("lang\n")
