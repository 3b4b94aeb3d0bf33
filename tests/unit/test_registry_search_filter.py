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
