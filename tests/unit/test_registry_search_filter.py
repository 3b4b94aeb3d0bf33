"""MLflow's search syntax: parsed strictly, compiled to SQL with bound parameters only."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.registry import search_filter as sf

pytestmark = pytest.mark.unit


def test_every_entity_comparator_and_quoting_parses():
    clauses = sf.parse(
        "metrics.loss < 0.1 and params.lr = '0.01' AND tags.`team name` LIKE 'x%' "
        "and attributes.status != \"FAILED\" and run_id IN ('a', 'b') and metric.acc >= -1e-3"
    )
    assert clauses == [
        sf.Clause("metrics", "loss", "<", 0.1),
        sf.Clause("params", "lr", "=", "0.01"),
        sf.Clause("tags", "team name", "LIKE", "x%"),
        sf.Clause("attributes", "status", "!=", "FAILED"),
        sf.Clause("attributes", "run_id", "IN", ("a", "b")),
        sf.Clause("metrics", "acc", ">=", -0.001),
    ]


def test_values_are_bound_never_spliced():
    params: list = []
    sql = sf.run_conditions(sf.parse('params.x = "a\'; DROP TABLE runs; --"'), params)
    assert "DROP" not in " ".join(sql) and any("DROP" in str(p) for p in params)


@pytest.mark.parametrize(
    "text",
    [
        "metrics.loss <<< 1",
        "params.a = '1' or params.b = '2'",
        "metrics.loss < 'abc'",
        "attributes.nope = 'x'",
        "metrics.x",
    ],
)
def test_malformed_filters_are_invalid_argument(text):
    with pytest.raises(InvalidArgument):
        sf.run_conditions(sf.parse(text), [])


def test_order_by_metric_then_default_tiebreak():
    params: list = []
    order = sf.run_order(["metrics.loss DESC", "attributes.start_time"], params)
    assert order.startswith("(SELECT m.value FROM latest_metrics") and "DESC NULLS LAST" in order
    assert order.endswith("r.start_time DESC, r.run_pk DESC") and params == ["loss"]


def test_empty_filter_is_no_clause():
    assert sf.parse("") == [] and sf.parse("   ") == []


def test_numbers_identifiers_and_quoted_keys_tokenize_as_before():
    lexer = sf.Lexer("metrics.`a b` >= -1.5e3 and tags.\"k\" = 'it\\'s' and run_id IN (1., .5) and params.p = 1abc")
    assert lexer.tokens() == [
        ("ident", "metrics.`a b`"),
        ("op", ">="),
        ("number", "-1.5e3"),
        ("ident", "and"),
        ("ident", 'tags."k"'),
        ("op", "="),
        ("string", "'it\\'s'"),
        ("ident", "and"),
        ("ident", "run_id"),
        ("ident", "IN"),
        ("lparen", "("),
        ("number", "1."),
        ("comma", ","),
        ("number", ".5"),
        ("rparen", ")"),
        ("ident", "and"),
        ("ident", "params.p"),
        ("op", "="),
        ("ident", "1abc"),
    ]


_PATHOLOGICAL = [
    lambda n: "metrics.x < " + "1" * n + "a",  # the quadratic case of the old regex
    lambda n: "metrics.x < " + "1." * n + "a",
    lambda n: "metrics.x < '" + "\\'" * n,  # an unterminated string full of escapes
    lambda n: "tags.`" + "x" * n,  # an unterminated quoted key
    lambda n: "metrics.x < 1e" + "1" * n + "e",
    lambda n: "a" * n + "." + "b" * n,
]


@pytest.mark.parametrize("make", _PATHOLOGICAL)
def test_tokenizing_costs_steps_linear_in_the_input(make):
    def steps(n: int) -> int:
        lexer = sf.Lexer(make(n))
        try:
            lexer.tokens()
        except InvalidArgument:
            pass
        return lexer.steps

    small, large = steps(1000), steps(8000)
    assert large <= 8 * small + 100  # 8x the input, at most 8x the work
    assert large <= 4 * len(make(8000))


@pytest.mark.parametrize("make", _PATHOLOGICAL)
def test_pathological_filters_are_invalid_argument(make):
    with pytest.raises(InvalidArgument):
        sf.run_conditions(sf.parse(make(4000)), [])


def test_filter_length_and_clause_count_are_capped():
    with pytest.raises(InvalidArgument, match="characters"):
        sf.parse("params.a = '" + "x" * sf.MAX_FILTER_LENGTH + "'")
    many = " and ".join(f"params.p{i} = 'x'" for i in range(sf.MAX_CLAUSES + 1))
    with pytest.raises(InvalidArgument, match="clauses"):
        sf.parse(many)
    assert len(sf.parse(" and ".join(f"params.p{i} = 'x'" for i in range(sf.MAX_CLAUSES)))) == sf.MAX_CLAUSES
    with pytest.raises(InvalidArgument, match="order_by"):
        sf.run_order(["metrics.loss"] * (sf.MAX_ORDER_BY + 1), [])


def test_error_messages_quote_client_input_briefly():
    with pytest.raises(InvalidArgument) as err:
        sf.parse("metrics.x < " + "1" * 8000 + "a")
    assert len(str(err.value)) < 200
