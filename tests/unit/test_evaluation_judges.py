"""Judge verdicts parse only in their fixed format; calibration matches scikit-learn's arithmetic."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, confusion_matrix

from services.evaluation.judges import (
    JUDGE_TEMPLATES,
    LabelledVerdict,
    calibrate,
    calibrate_judges,
    cohens_kappa,
    parse_pass_fail,
    parse_score,
    summarize_verdicts,
)

pytestmark = pytest.mark.unit


def test_every_issue_judge_metric_has_a_versioned_template_with_a_stable_hash():
    assert set(JUDGE_TEMPLATES) == {
        "correctness",
        "groundedness",
        "relevance_to_query",
        "chunk_relevance",
        "safety",
        "guideline_adherence",
    }
    for template in JUDGE_TEMPLATES.values():
        assert template.version and len(template.content_hash) == 64
        assert template.content_hash == dataclasses.replace(template).content_hash
        # Any edit to the text is a different prompt, whatever its version string says.
        assert dataclasses.replace(template, text=template.text + " ").content_hash != template.content_hash
    assert len({t.content_hash for t in JUDGE_TEMPLATES.values()}) == len(JUDGE_TEMPLATES)


def test_a_template_renders_every_field_and_refuses_a_missing_one():
    template = JUDGE_TEMPLATES["correctness"]
    assert template.fields == {"question", "reference", "answer"}
    prompt = template.render(question="Capital of France?", reference="Paris", answer="Lyon")
    assert "Capital of France?" in prompt and "Lyon" in prompt and "$" not in prompt
    with pytest.raises(ValueError, match="answer"):
        template.render(question="q", reference="r")


@pytest.mark.parametrize(
    ("response", "verdict"),
    [
        ("The answer matches.\nVERDICT: PASS", True),
        ("reasoning...\nverdict: fail\n", False),
        ("  VERDICT :  PASS  ", True),
        ("I think it passes.", None),  # no verdict line
        ("VERDICT: PASS\nVERDICT: FAIL", None),  # two verdicts
        ("VERDICT: PASS\nVERDICT: PASS", None),  # repeated: not the fixed format either
        ("VERDICT: MAYBE", None),
        ("VERDICT: PASSED", None),
        ("The VERDICT: PASS is clear", None),  # not on a line of its own
        ("", None),
    ],
)
def test_pass_fail_verdicts_parse_or_are_unmeasured(response, verdict):
    assert parse_pass_fail(response) is verdict


@pytest.mark.parametrize(
    ("response", "score"),
    [
        ("Good answer.\nSCORE: 4", 4),
        ("score: 1", 1),
        ("SCORE: 5\n", 5),
        ("SCORE: 0", None),
        ("SCORE: 6", None),
        ("SCORE: 4.5", None),
        ("SCORE: 3\nSCORE: 4", None),
        ("SCORE: 0000000000000000000004", None),
        ("four out of five", None),
    ],
)
def test_scores_parse_in_range_or_are_unmeasured(response, score):
    assert parse_score(response) == score


def test_templates_parse_in_their_own_format():
    assert JUDGE_TEMPLATES["safety"].parse("VERDICT: PASS") is True
    assert JUDGE_TEMPLATES["safety"].parse("SCORE: 5") is None
    assert JUDGE_TEMPLATES["relevance_to_query"].parse("SCORE: 2") == 2


def test_unparseable_verdicts_are_coverage_not_part_of_the_rate():
    summary = summarize_verdicts([True, None, False, True, None])
    assert (summary.measured, summary.unmeasured, summary.coverage) == (3, 2, 0.6)
    assert summary.pass_rate.estimate == pytest.approx(2 / 3) and summary.pass_rate.method == "wilson"
    scores = summarize_verdicts([5, None, 3])
    assert scores.mean_score == 4.0 and scores.pass_rate is None and scores.coverage == pytest.approx(2 / 3)
    assert summarize_verdicts([None]).pass_rate is None


@pytest.mark.parametrize("labels", [[False, True], [1, 2, 3, 4, 5]])
def test_calibration_equals_scikit_learn(labels):
    rng = np.random.default_rng(len(labels))
    human = [labels[i] for i in rng.integers(0, len(labels), size=300)]
    # A judge that mostly agrees, sometimes guesses and sometimes answers unparseably.
    judge = [
        None if rng.random() < 0.1 else (h if rng.random() < 0.7 else labels[int(rng.integers(0, len(labels)))])
        for h in human
    ]
    template = JUDGE_TEMPLATES["correctness"]
    result = calibrate(template, "judge-model", judge, human)
    kept = [(h, j) for h, j in zip(human, judge, strict=True) if j is not None]
    kept_human, kept_judge = [h for h, _ in kept], [j for _, j in kept]
    assert result.n == len(kept) and result.unmeasured == len(human) - len(kept)
    assert result.agreement == pytest.approx(np.mean([h == j for h, j in kept]))
    assert result.kappa == pytest.approx(cohen_kappa_score(kept_human, kept_judge), abs=1e-12)
    expected = confusion_matrix(kept_human, kept_judge, labels=list(result.labels))
    assert np.array_equal(np.array(result.confusion), expected)
    assert (result.metric, result.template_hash, result.judge_model) == (
        "correctness",
        template.content_hash,
        "judge-model",
    )


def test_kappa_on_a_hand_checked_table_and_when_undefined():
    # Observed 0.7; marginals 0.5/0.5 and 0.6/0.4 -> expected 0.5; kappa = 0.2 / 0.5.
    assert cohens_kappa([[20, 5], [10, 15]]) == pytest.approx(0.4)
    assert cohens_kappa([[10, 0], [0, 0]]) is None
    assert cohens_kappa([]) is None
    nothing = calibrate(JUDGE_TEMPLATES["safety"], "m", [None, None], [True, False])
    assert (nothing.n, nothing.unmeasured, nothing.agreement, nothing.kappa) == (0, 2, None, None)


def test_calibrations_are_kept_apart_per_prompt_version_and_model():
    v1 = JUDGE_TEMPLATES["groundedness"]
    v2 = dataclasses.replace(v1, version="2", text=v1.text + "\nBe strict.")
    records = [
        LabelledVerdict(v1, "model-a", True, True),
        LabelledVerdict(v1, "model-a", False, True),
        LabelledVerdict(v1, "model-b", True, True),
        LabelledVerdict(v2, "model-a", False, False),
        LabelledVerdict(v2, "model-a", None, False),
    ]
    calibrations = calibrate_judges(records)
    assert [(c.template_version, c.judge_model, c.n, c.unmeasured) for c in calibrations] == [
        ("1", "model-a", 2, 0),
        ("1", "model-b", 1, 0),
        ("2", "model-a", 1, 1),
    ]
    assert calibrations[0].agreement == 0.5


def test_an_oversized_judge_response_is_unmeasured():
    assert parse_pass_fail("x" * 200_000 + "\nVERDICT: PASS") is None
