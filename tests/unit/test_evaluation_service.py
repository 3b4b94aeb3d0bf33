"""The evaluation service's pure parts: row parsing, per-row metrics, summaries, calibration, bounds."""

from __future__ import annotations

import math

import pytest
from sklearn.metrics import cohen_kappa_score

from services.common.errors import InvalidArgument
from services.evaluation import metrics
from services.evaluation.core import (
    EvaluationCore,
    Prices,
    RowProblem,
    _sampled,
    calibration_of,
    deterministic_value,
    judge_fields,
    parse_row,
    results_table,
    summarize_metric,
)
from services.evaluation.entities import MetricValue, RowResult, RunSpec, Sampling
from services.evaluation.settings import EvaluationSettings

pytestmark = pytest.mark.unit


def test_rows_parse_into_what_the_metrics_use_and_malformed_ones_say_why() -> None:
    parts = parse_row(
        {
            "request": {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q?"}]},
            "expected_response": ["a", "b"],
            "expected_retrieved_context": [{"doc_id": "d1", "content": "text one"}, "d2"],
            "guidelines": "Short.",
        }
    )
    assert parts["question"] == "Q?" and parts["references"] == ["a", "b"]
    assert parts["relevant"] == ["d1", "d2"] and parts["context"] == ["text one"] and parts["guidelines"] == ["Short."]
    for row, reason in (
        ([], "not a JSON object"),
        ({"request": ""}, "empty"),
        ({"request": {"x": 1}}, "'request' must be"),
        ({"request": "q", "expected_response": 3}, "expected_response"),
        ({"request": "q", "expected_retrieved_context": "d1"}, "must be a list"),
    ):
        with pytest.raises(RowProblem, match=reason):
            parse_row(row)


def test_per_row_metrics_are_the_functions_and_missing_inputs_are_unmeasured() -> None:
    parts = parse_row({"request": "q", "expected_response": "The cat sat", "expected_retrieved_context": ["d1", "d3"]})
    assert deterministic_value("exact_match", "the cat sat.", parts, [], 5).value == 1.0
    assert deterministic_value("token_f1", "a cat", parts, [], 5).value == metrics.token_f1("a cat", ["The cat sat"])
    assert deterministic_value("bleu", "the cat", parts, [], 5).value == pytest.approx(
        metrics.sentence_bleu("the cat", ["The cat sat"]).score / 100
    )
    assert deterministic_value("recall_at_k", "x", parts, ["d1", "d2"], 5).value == 0.5
    missing = deterministic_value("mrr", "x", parts, [], 5)
    assert missing.value is None and "no retrieved documents" in missing.unmeasured_reason
    no_reference = deterministic_value("rouge_l", "x", parse_row({"request": "q"}), [], 5)
    assert no_reference.value is None and "expected_response" in no_reference.unmeasured_reason
    assert "no retrieved context" in judge_fields("groundedness", "x", parts)
    assert judge_fields("safety", "an answer", parts) == {"answer": "an answer"}


def _result(example: str, repeat: int, **values: float | None) -> RowResult:
    return RowResult("r", example, repeat, tuple(MetricValue(k, v) for k, v in values.items()))


def test_summaries_keep_unmeasured_values_out_of_the_mean_and_repeats_apart() -> None:
    rows = [_result("0", 0, exact_match=1.0), _result("1", 0, exact_match=0.0), _result("2", 0, exact_match=None)]
    exact = summarize_metric("exact_match", rows, 1, 0)
    assert exact.interval.method == "wilson" and exact.interval.estimate == 0.5
    assert (exact.measured, exact.unmeasured, exact.coverage) == (2, 1, pytest.approx(2 / 3))
    repeated = [_result(str(i), r, token_f1=0.1 * i + r) for i in range(5) for r in range(3)]
    f1 = summarize_metric("token_f1", repeated, 3, 0)
    assert len(f1.per_repeat) == 3 and f1.per_repeat[2].estimate == pytest.approx(2.2)
    assert f1.interval.n == 5 and f1.interval.estimate == pytest.approx(1.2)
    judged = summarize_metric("correctness", [_result("0", 0, correctness=None)], 1, 0)
    assert judged.interval is None and judged.coverage == 0.0 and judged.prompt_hash


def test_calibration_is_agreement_kappa_and_the_two_by_two_confusion() -> None:
    human = [True, True, False, False, True, False, True, True]
    judge = [True, False, False, True, True, None, True, False]
    c = calibration_of("correctness", "m/1", list(zip(human, judge, strict=True)))
    kept = [(h, j) for h, j in zip(human, judge, strict=True) if j is not None]
    assert c.confusion == (1, 1, 2, 3) and c.n == 7
    assert c.agreement == pytest.approx(4 / 7)
    assert c.cohen_kappa == pytest.approx(cohen_kappa_score([h for h, _ in kept], [j for _, j in kept]))
    assert "1 rows without a parseable verdict" in c.note
    one_class = calibration_of("correctness", "m/1", [(True, True), (True, True)])
    assert math.isnan(one_class.cohen_kappa) and "undefined" in one_class.note


def test_unpriced_models_have_no_cost_and_the_sample_is_stable() -> None:
    prices = Prices('{"c.s.m": [1.0, 2.0]}')
    assert prices.cost("c.s.m", 1_000_000, 500_000) == pytest.approx(2.0)
    assert prices.cost("c.s.other", 10, 10) is None
    ids = [f"req-{i}" for i in range(2000)]
    picked = [i for i in ids if _sampled(i, 0.25)]
    assert 400 < len(picked) < 600 and picked == [i for i in ids if _sampled(i, 0.25)]
    jsonl, table = results_table([_result("0", 0, exact_match=1.0)], ("exact_match",))
    assert b'"example_id": "0"' in jsonl and table.decode().splitlines()[1].startswith("0,0,OK")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"metrics": ("vibes",)}, "unknown metric"),
        ({"metrics": ("exact_match", "exact_match")}, "twice"),
        ({"metrics": ("safety",)}, "judge_endpoint"),
        ({"repeats": 21}, "repeats"),
        ({"concurrency": 65}, "concurrency"),
        ({"k": 101}, "k must be"),
        ({"sampling": Sampling(max_tokens=100_000)}, "max_tokens"),
        ({"sampling": Sampling(seed=3)}, "the run's seed"),
        ({"tags": {str(i): "" for i in range(40)}}, "tags"),
        ({"experiment": "bad\nname"}, "experiment"),
        ({"human_label_column": "no spaces"}, "human_label_column"),
        ({"eval_run_id": "x" * 65}, "eval_run_id"),
    ],
)
def test_every_spec_field_is_bounded(change: dict, message: str) -> None:
    core = EvaluationCore(EvaluationSettings(), None, None, None, None, None, None, None)
    spec = RunSpec(**{"dataset": "c.s.d", "target_endpoint": "ep", "metrics": ("exact_match",), **change})
    with pytest.raises(InvalidArgument, match=message):
        core.check_spec(spec)


def test_defaults_are_filled_in() -> None:
    core = EvaluationCore(EvaluationSettings(), None, None, None, None, None, None, None)
    spec = core.check_spec(RunSpec(dataset="c.s.d", target_endpoint="ep", metrics=("exact_match",)))
    assert (spec.repeats, spec.concurrency, spec.k) == (1, 8, 5) and len(spec.eval_run_id) == 32
    assert spec.experiment == "/tessera/evaluations/c.s.d"
