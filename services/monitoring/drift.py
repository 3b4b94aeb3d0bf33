"""Drift statistics between two profiles (reference vs current), from the sketches alone.

Everything is computed on the mergeable profiles, never on raw rows, so the
same code compares a window against a baseline of a month or a training set.

Numeric: Kolmogorov-Smirnov (statistic and asymptotic p-value) and
Wasserstein-1 from the bucket CDFs (1% resolution); PSI and Jensen-Shannon
distance over ten equal-frequency bins of the reference. Wasserstein is
normalised by the reference's standard deviation, as Evidently does, so one
threshold fits every feature. Categorical: PSI, Jensen-Shannon distance and
Pearson's chi-squared (statistic and p-value).

Alarm defaults follow the issue: distance measures, not raw p-values, which
flag everything on large samples.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import chisquare, kstwobign

from services.monitoring.profiles import (
    CATEGORICAL,
    CategoricalProfile,
    NumericProfile,
    Profile,
    bucket_values,
)

PSI = "psi"
KS = "ks"
KS_PVALUE = "ks_pvalue"
JS_DISTANCE = "js_distance"
WASSERSTEIN = "wasserstein"
CHI2 = "chi2"
CHI2_PVALUE = "chi2_pvalue"

NUMERIC_STATISTICS = (PSI, KS, KS_PVALUE, JS_DISTANCE, WASSERSTEIN)
CATEGORICAL_STATISTICS = (PSI, JS_DISTANCE, CHI2, CHI2_PVALUE)
ALL_STATISTICS = frozenset(NUMERIC_STATISTICS + CATEGORICAL_STATISTICS)
# Statistics whose alarm fires when the value falls BELOW the threshold.
LOWER_IS_DRIFT = frozenset({KS_PVALUE, CHI2_PVALUE})

DEFAULT_THRESHOLDS = {PSI: 0.25, WASSERSTEIN: 0.1, JS_DISTANCE: 0.1}

PSI_BINS = 10
# Proportions are floored so an empty bin does not make PSI infinite.
_EPSILON = 1e-4


def compare(reference: Profile, current: Profile) -> dict[str, float]:
    """Every statistic of the feature's kind; empty when either side has no values."""
    if reference.count == 0 or current.count == 0:
        return {}
    if reference.kind == CATEGORICAL:
        return _categorical(reference, current)
    return _numeric(reference, current)


def _psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e = np.maximum(expected, _EPSILON)
    a = np.maximum(actual, _EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def _numeric(reference: NumericProfile, current: NumericProfile) -> dict[str, float]:
    keys = np.union1d(reference.keys, current.keys)
    ref_counts = _counts_on(keys, reference)
    cur_counts = _counts_on(keys, current)
    ref_cdf = np.cumsum(ref_counts) / reference.count
    cur_cdf = np.cumsum(cur_counts) / current.count
    ks = float(np.max(np.abs(ref_cdf - cur_cdf)))
    effective_n = math.sqrt(reference.count * current.count / (reference.count + current.count))
    values = np.clip(bucket_values(keys), min(reference.min, current.min), max(reference.max, current.max))
    wasserstein = float(np.sum(np.abs(ref_cdf - cur_cdf)[:-1] * np.diff(values)))
    scale = reference.std
    # Ten equal-frequency bins of the reference, on bucket boundaries (duplicates collapse
    # for discrete features such as token counts).
    cut_positions = np.unique(np.searchsorted(ref_cdf, np.linspace(0, 1, PSI_BINS + 1)[1:-1], side="left"))
    cut_positions = cut_positions[cut_positions < len(keys) - 1]
    starts = np.concatenate([[0], cut_positions + 1])
    ref_binned = np.add.reduceat(ref_counts, starts) / reference.count
    cur_binned = np.add.reduceat(cur_counts, starts) / current.count
    return {
        KS: ks,
        KS_PVALUE: float(kstwobign.sf(effective_n * ks)),
        WASSERSTEIN: wasserstein / scale if scale > 0 else wasserstein,
        PSI: _psi(ref_binned, cur_binned),
        JS_DISTANCE: float(jensenshannon(ref_binned, cur_binned)),
    }


def _counts_on(keys: np.ndarray, profile: NumericProfile) -> np.ndarray:
    counts = np.zeros(len(keys), dtype=np.float64)
    counts[np.searchsorted(keys, profile.keys)] = profile.counts
    return counts


def _categorical(reference: CategoricalProfile, current: CategoricalProfile) -> dict[str, float]:
    categories = sorted(set(reference.frequencies) | set(current.frequencies))
    ref = np.array([reference.frequencies.get(c, 0) for c in categories], dtype=np.float64)
    cur = np.array([current.frequencies.get(c, 0) for c in categories], dtype=np.float64)
    ref_share, cur_share = ref / ref.sum(), cur / cur.sum()
    expected = np.maximum(ref_share, _EPSILON)
    expected = expected / expected.sum() * cur.sum()
    if len(categories) > 1:
        chi2 = chisquare(cur, expected)
        chi2_statistic, chi2_pvalue = float(chi2.statistic), float(chi2.pvalue)
    else:
        chi2_statistic, chi2_pvalue = 0.0, 1.0
    return {
        PSI: _psi(ref_share, cur_share),
        JS_DISTANCE: float(jensenshannon(ref_share, cur_share)),
        CHI2: chi2_statistic,
        CHI2_PVALUE: chi2_pvalue,
    }


def significant(statistics: dict[str, float], alpha: float) -> bool:
    """Whether the window differs from the reference beyond sampling noise (KS or chi-squared)."""
    p_value = statistics.get(KS_PVALUE, statistics.get(CHI2_PVALUE, 0.0))
    return p_value < alpha


def crosses(statistic: str, value: float, threshold: float) -> bool:
    return value < threshold if statistic in LOWER_IS_DRIFT else value > threshold


def back_to_normal(statistic: str, value: float, threshold: float, resolve_ratio: float) -> bool:
    """The hysteresis band: resolve only well inside the normal side of the threshold."""
    if statistic in LOWER_IS_DRIFT:
        return value > min(1.0, threshold / resolve_ratio)
    return value < threshold * resolve_ratio
