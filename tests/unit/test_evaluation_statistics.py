"""Intervals cover the truth at their nominal rate; CompareRuns finds real differences and few false ones.

Every simulation uses fixed seeds, so each assertion is on one reproducible outcome, not a flaky draw.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from services.evaluation.statistics import (
    bootstrap_interval,
    compare_runs,
    mcnemar_midp,
    summarize,
    summarize_repeats,
    wilson_interval,
)

pytestmark = pytest.mark.unit

DATASETS = 1000


def test_bootstrap_interval_covers_the_true_mean_in_93_to_97_percent_of_1000_datasets():
    # Skewed per-item scores, like token F1: Beta(2, 5) has mean 2/7.
    data = np.random.default_rng(20261130).beta(2, 5, size=(DATASETS, 100))
    covered = sum(
        interval.low <= 2 / 7 <= interval.high
        for interval in (bootstrap_interval(row, resamples=1000, seed=i) for i, row in enumerate(data))
    )
    assert 0.93 <= covered / DATASETS <= 0.97


@pytest.mark.parametrize("n", [30, 50, 100, 200])
def test_wilson_interval_coverage_is_95_percent_on_average_and_never_far_below(n):
    # Exact coverage from the binomial distribution, no simulation: it oscillates with p (Brown, Cai and
    # DasGupta, 2001), so the mean over p is near 95% and no p in [0.05, 0.95] falls much under it.
    intervals = [wilson_interval(k, n) for k in range(n + 1)]
    lows, highs = np.array([i.low for i in intervals]), np.array([i.high for i in intervals])
    coverage = [
        binom.pmf(np.arange(n + 1), n, rate)[(lows <= rate) & (rate <= highs)].sum()
        for rate in np.arange(0.05, 0.951, 0.01)
    ]
    assert 0.945 <= np.mean(coverage) <= 0.955
    assert 0.925 <= min(coverage) and max(coverage) <= 0.98


def test_wilson_interval_matches_the_textbook_values():
    # Newcombe (1998), table I: 81 of 263 -> 0.2553 to 0.3662; 15 of 148 -> 0.0624 to 0.1605.
    first = wilson_interval(81, 263)
    assert (round(first.low, 4), round(first.high, 4)) == (0.2553, 0.3662)
    second = wilson_interval(15, 148)
    assert (round(second.low, 4), round(second.high, 4)) == (0.0624, 0.1605)
    # At 0 and n the interval stays inside [0, 1] and is not degenerate.
    assert wilson_interval(0, 10).low == 0.0 and wilson_interval(0, 10).high > 0.2
    assert wilson_interval(10, 10).high == 1.0 and wilson_interval(10, 10).low < 0.8


def test_unmeasured_values_are_coverage_never_part_of_the_mean():
    summary = summarize([True, True, None, False, None])
    assert (summary.measured, summary.unmeasured, summary.coverage) == (3, 2, 0.6)
    assert summary.interval.method == "wilson" and summary.interval.estimate == pytest.approx(2 / 3)
    scores = summarize([0.5, None, 1.0])
    assert scores.interval.method == "bootstrap-percentile" and scores.interval.estimate == 0.75
    nothing = summarize([None, None])
    assert nothing.interval is None and nothing.coverage == 0.0


def test_bootstrap_interval_is_reproducible_with_its_seed():
    values = np.random.default_rng(1).random(50)
    assert bootstrap_interval(values, seed=4) == bootstrap_interval(values, seed=4)


def test_repeats_are_kept_apart_and_items_are_the_unit_of_resampling():
    rng = np.random.default_rng(5)
    item_effect = rng.normal(size=100)
    repeats = [{f"q{i}": float(item_effect[i] + 0.1 * rng.normal()) for i in range(100)} for _ in range(3)]
    summary = summarize_repeats(repeats)
    assert len(summary.per_repeat) == 3 and all(s.measured == 100 for s in summary.per_repeat)
    # 100 items, not 300 pooled observations: as wide as one repeat, not sqrt(3) narrower.
    assert summary.across_repeats.n == 100
    one_width = summary.per_repeat[0].interval.high - summary.per_repeat[0].interval.low
    across_width = summary.across_repeats.high - summary.across_repeats.low
    assert across_width > 0.8 * one_width


def _churned_runs(seed: int, n: int, fixed: float, broken: float) -> tuple[dict, dict]:
    """Run a passes 60% of items; run b fixes `fixed` and breaks `broken` of all items (net fixed - broken)."""
    rng = np.random.default_rng(seed)
    a = rng.random(n) < 0.6
    u = rng.random(n)
    b = np.where(a, u >= broken / 0.6, u < fixed / 0.4)
    return {f"q{i}": bool(a[i]) for i in range(n)}, {f"q{i}": bool(b[i]) for i in range(n)}


def test_compare_runs_detects_a_10_point_improvement_at_n_200():
    results = [compare_runs(*_churned_runs(1000 + i, 200, 0.13, 0.03), resamples=200, seed=i) for i in range(200)]
    assert all(r.test == "mcnemar-midp" and r.n == 200 for r in results)
    assert np.mean([r.difference.estimate for r in results]) == pytest.approx(0.10, abs=0.01)
    assert np.mean([r.significant and r.difference.estimate > 0 for r in results]) >= 0.9
    assert np.mean([r.difference.low > 0 for r in results]) >= 0.9


def test_compare_runs_flags_a_zero_difference_about_5_percent_of_the_time():
    results = [compare_runs(*_churned_runs(5000 + i, 200, 0.1, 0.1), resamples=100, seed=i) for i in range(DATASETS)]
    assert 0.03 <= np.mean([r.significant for r in results]) <= 0.07
    assert np.mean([r.detectable for r in results]) < 0.05


def test_compare_runs_on_scores_uses_a_paired_test_and_only_paired_items():
    rng = np.random.default_rng(9)
    base = rng.beta(2, 2, size=200)
    a = {f"q{i}": float(base[i]) for i in range(200)}
    b = {f"q{i}": float(np.clip(base[i] + 0.1 + 0.1 * rng.normal(), 0, 1)) for i in range(200)}
    a["q0"] = None  # unmeasured in a
    b["extra"] = 1.0  # not in a
    result = compare_runs(a, b)
    assert result.test == "paired-t" and result.n == 199 and result.unpaired == 2
    assert result.significant and result.detectable and result.difference.low > 0.05
    assert result.minimum_detectable_difference < result.difference.estimate


def test_mcnemar_midp_on_hand_checked_counts():
    # 6 vs 1 discordant: P(X <= 1) = 8/128, P(X = 1) = 7/128 -> mid-p = 2 * (8 - 3.5) / 128.
    assert mcnemar_midp(6, 1) == pytest.approx(9 / 128)
    assert mcnemar_midp(0, 0) == 1.0
    assert mcnemar_midp(5, 5) == pytest.approx(1.0)


def test_identical_runs_show_no_difference_and_nothing_detectable():
    run = {f"q{i}": i % 3 == 0 for i in range(50)}
    result = compare_runs(run, dict(run))
    assert (result.difference.estimate, result.p_value, result.significant, result.detectable) == (
        0.0,
        1.0,
        False,
        False,
    )


def test_pairs_that_all_moved_alike_do_not_make_every_difference_detectable():
    # 8 items, all failing before and passing after: 5 discordant pairs one way are the fewest with
    # which McNemar's mid-p falls below 0.05 (0.5**5 = 0.031; 0.5**4 = 0.0625), so at N = 8 nothing
    # under 5/8 is detectable, whatever the zero spread of the differences says.
    before, after = {f"q{i}": False for i in range(8)}, {f"q{i}": True for i in range(8)}
    result = compare_runs(before, after)
    assert result.minimum_detectable_difference == pytest.approx(5 / 8)
    assert result.significant and result.detectable
    # At N = 4 even a flip of every item cannot reach significance: nothing is detectable.
    few = compare_runs({f"q{i}": False for i in range(4)}, {f"q{i}": True for i in range(4)})
    assert few.minimum_detectable_difference == math.inf and not few.detectable and not few.significant
    # Scores shifted by one constant: the runs' own spread stands in for the zero paired spread.
    rng = np.random.default_rng(3)
    base = rng.uniform(0, 0.5, size=30)
    shifted = compare_runs(
        {f"q{i}": float(v) for i, v in enumerate(base)}, {f"q{i}": float(v) + 0.01 for i, v in enumerate(base)}
    )
    assert shifted.minimum_detectable_difference > 0.05 and not shifted.detectable


def test_compare_runs_refuses_runs_with_nothing_in_common():
    with pytest.raises(ValueError):
        compare_runs({"a": True}, {"b": True})
    with pytest.raises(ValueError):
        compare_runs({"a": 0.5, "b": float("nan")}, {"a": 0.5, "b": 0.5})
