"""Drift statistics from profiles agree with the textbook ones on raw samples; hysteresis holds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ks_2samp, wasserstein_distance

from services.monitoring.drift import compare
from services.monitoring.entities import DETECTED, RESOLVED, Thresholds
from services.monitoring.profiles import CategoricalProfile, NumericProfile
from services.monitoring.window_evaluation import AlarmBook

pytestmark = pytest.mark.unit


def test_numeric_statistics_match_scipy_on_the_raw_samples():
    rng = np.random.default_rng(2)
    reference, current = rng.normal(100, 10, 40_000), rng.normal(105, 12, 8_000)
    stats = compare(NumericProfile.of(reference), NumericProfile.of(current))
    assert stats["ks"] == pytest.approx(ks_2samp(reference, current).statistic, abs=0.01)
    assert stats["wasserstein"] == pytest.approx(wasserstein_distance(reference, current) / reference.std(), rel=0.03)
    assert stats["ks_pvalue"] < 1e-6 and stats["psi"] > 0.1


def test_same_distribution_stays_below_the_default_thresholds():
    rng = np.random.default_rng(3)
    stats = compare(NumericProfile.of(rng.normal(0, 1, 50_000)), NumericProfile.of(rng.normal(0, 1, 2_000)))
    assert stats["psi"] < 0.05 and stats["wasserstein"] < 0.1 and stats["js_distance"] < 0.1


def test_categorical_share_doubling_is_visible():
    reference = CategoricalProfile.of(["a"] * 800 + ["b"] * 200)
    same = compare(reference, CategoricalProfile.of(["a"] * 400 + ["b"] * 100))
    doubled = compare(reference, CategoricalProfile.of(["a"] * 600 + ["b"] * 400))
    assert same["psi"] == pytest.approx(0.0, abs=1e-9) and same["chi2_pvalue"] == pytest.approx(1.0)
    assert doubled["js_distance"] > 0.1 and doubled["chi2_pvalue"] < 1e-10


def test_alarm_needs_to_come_well_back_before_it_resolves():
    book = AlarmBook(Thresholds({"psi": 0.2}, resolve_ratio=0.8), {})
    key = ("", "f", "psi", "baseline")
    kinds = [book.observe(key, "psi", value, float(w)) for w, value in enumerate([0.1, 0.25, 0.19, 0.21, 0.17, 0.15])]
    assert kinds == [None, DETECTED, None, None, None, RESOLVED]
    assert book.observe(key, "psi", 0.9, 1.0) is None  # an older window never moves the alarm
