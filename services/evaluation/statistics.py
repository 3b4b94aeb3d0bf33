"""Intervals for every summary metric and paired comparisons of two runs over the same dataset.

Pass rates get a Wilson score interval (it stays inside [0, 1] and keeps its coverage near 0 and 1);
other means get a percentile bootstrap over items. Unmeasured values (None) are never folded into
an estimate: they are counted and reported as coverage. Repeats of a run are kept apart: each repeat
has its own interval, and the across-repeat interval resamples items, not item-repeat pairs, so three
repeats of 100 items are not mistaken for 300 independent observations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

DEFAULT_CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 2000
DEFAULT_POWER = 0.8
DEFAULT_SEED = 0
MAX_ITEMS = 1_000_000
MAX_RESAMPLES = 100_000


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    method: str  # "wilson" or "bootstrap-percentile"
    n: int


@dataclass(frozen=True)
class MetricSummary:
    """One metric over a run: its interval over the measured values and how many were measured."""

    interval: Interval | None  # None when nothing was measured
    measured: int
    unmeasured: int

    @property
    def coverage(self) -> float:
        total = self.measured + self.unmeasured
        return self.measured / total if total else 0.0


@dataclass(frozen=True)
class RepeatedSummary:
    per_repeat: tuple[MetricSummary, ...]
    across_repeats: Interval | None  # items resampled with their repeat mean


@dataclass(frozen=True)
class PairedComparison:
    """Run b against run a on the items both measured: difference = b - a."""

    n: int  # items measured in both runs
    unpaired: int  # items measured in only one run (or neither)
    mean_a: float
    mean_b: float
    difference: Interval
    test: str  # "mcnemar-midp" for pass/fail, "paired-t" otherwise
    p_value: float
    significant: bool  # p_value < 1 - confidence
    minimum_detectable_difference: float  # at `power`, given the observed spread of paired differences
    power: float
    b_better: int | None = None  # McNemar's discordant pairs (pass/fail only)
    a_better: int | None = None

    @property
    def detectable(self) -> bool:
        """Whether this N can detect a difference of the size observed (not just whether it did)."""
        return self.difference.estimate != 0 and abs(self.difference.estimate) >= self.minimum_detectable_difference


def _alpha(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError("confidence must be between 0 and 1")
    return 1 - confidence


def _measured(values: Sequence[float | bool | None]) -> tuple[np.ndarray, int]:
    if len(values) > MAX_ITEMS:
        raise ValueError(f"more than {MAX_ITEMS} values")
    kept = [float(v) for v in values if v is not None]
    array = np.asarray(kept, dtype=float)
    if not np.all(np.isfinite(array)):
        raise ValueError("values must be finite")
    return array, len(values) - len(kept)


def wilson_interval(successes: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> Interval:
    """Wilson score interval for a pass rate."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError("need 0 <= successes <= n and n >= 1")
    z = float(scipy_stats.norm.ppf(1 - _alpha(confidence) / 2))
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # At 0 and n the bounds are exactly 0 and 1; rounding would otherwise leave 1 - 1e-16.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return Interval(p, low, high, "wilson", n)


def bootstrap_interval(
    values: Sequence[float] | np.ndarray,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> Interval:
    """Percentile bootstrap interval for the mean; a fixed seed makes it reproducible."""
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size < 1:
        raise ValueError("need a non-empty list of values")
    if not 1 <= resamples <= MAX_RESAMPLES:
        raise ValueError(f"resamples must be between 1 and {MAX_RESAMPLES}")
    alpha = _alpha(confidence)
    rng = np.random.default_rng(seed)
    means = _resampled_means(array, resamples, rng)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return Interval(float(array.mean()), float(low), float(high), "bootstrap-percentile", int(array.size))


def _resampled_means(array: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    # In chunks so that a large dataset never needs a resamples x n index matrix at once.
    chunk = max(1, 4_000_000 // array.size)
    means = np.empty(resamples)
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        means[start:stop] = array[rng.integers(0, array.size, size=(stop - start, array.size))].mean(axis=1)
    return means


def _is_pass_fail(values: Sequence[float | bool | None]) -> bool:
    return all(v is None or isinstance(v, bool | np.bool_) for v in values)


def summarize(
    values: Sequence[float | bool | None],
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> MetricSummary:
    """A metric column: Wilson for pass/fail (bools), bootstrap otherwise; None counts as unmeasured."""
    array, unmeasured = _measured(values)
    if array.size == 0:
        return MetricSummary(None, 0, unmeasured)
    if _is_pass_fail(values):
        interval = wilson_interval(int(array.sum()), int(array.size), confidence)
    else:
        interval = bootstrap_interval(array, confidence, resamples, seed)
    return MetricSummary(interval, int(array.size), unmeasured)


def summarize_repeats(
    repeats: Sequence[Mapping[str, float | bool | None]],
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> RepeatedSummary:
    """Repeats of one run (item id -> value each): one summary per repeat, and an item-level interval."""
    if not repeats:
        raise ValueError("need at least one repeat")
    per_repeat = tuple(summarize(list(r.values()), confidence, resamples, seed) for r in repeats)
    items = sorted(set().union(*(r.keys() for r in repeats)))
    item_means = []
    for item in items:
        measured = [float(r[item]) for r in repeats if r.get(item) is not None]
        if measured:
            item_means.append(sum(measured) / len(measured))
    across = bootstrap_interval(item_means, confidence, resamples, seed) if item_means else None
    return RepeatedSummary(per_repeat, across)


def compare_runs(
    a: Mapping[str, float | bool | None],
    b: Mapping[str, float | bool | None],
    confidence: float = DEFAULT_CONFIDENCE,
    power: float = DEFAULT_POWER,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> PairedComparison:
    """Paired comparison of two runs keyed by dataset item id (CompareRuns).

    Only items measured in both runs are paired; the rest are counted as unpaired. Pass/fail
    metrics get McNemar's test (mid-p, which holds its level better than the exact test), others a
    paired t-test; the interval on the difference is a paired bootstrap over items.
    """
    alpha = _alpha(confidence)
    if not 0 < power < 1:
        raise ValueError("power must be between 0 and 1")
    if len(a) > MAX_ITEMS or len(b) > MAX_ITEMS:
        raise ValueError(f"more than {MAX_ITEMS} items")
    paired = [item for item in a if a[item] is not None and b.get(item) is not None]
    if len(paired) < 2:
        raise ValueError("need at least two items measured in both runs")
    unpaired = len(set(a) | set(b)) - len(paired)
    values_a = np.asarray([float(a[item]) for item in paired])
    values_b = np.asarray([float(b[item]) for item in paired])
    differences = values_b - values_a
    if not np.all(np.isfinite(differences)):
        raise ValueError("values must be finite")
    interval = bootstrap_interval(differences, confidence, resamples, seed)
    pass_fail = _is_pass_fail([a[item] for item in paired]) and _is_pass_fail([b[item] for item in paired])
    detectable = minimum_detectable_difference(values_a, values_b, alpha, power, pass_fail)
    common = {
        "n": len(paired),
        "unpaired": unpaired,
        "mean_a": float(values_a.mean()),
        "mean_b": float(values_b.mean()),
        "difference": interval,
        "minimum_detectable_difference": detectable,
        "power": power,
    }
    if pass_fail:
        b_better = int(np.sum(differences > 0))
        a_better = int(np.sum(differences < 0))
        p_value = mcnemar_midp(b_better, a_better)
        return PairedComparison(
            **common,
            test="mcnemar-midp",
            p_value=p_value,
            significant=p_value < alpha,
            b_better=b_better,
            a_better=a_better,
        )
    p_value = paired_t_p_value(differences)
    return PairedComparison(**common, test="paired-t", p_value=p_value, significant=p_value < alpha)


def minimum_detectable_difference(
    values_a: np.ndarray, values_b: np.ndarray, alpha: float, power: float, pass_fail: bool
) -> float:
    """The smallest true difference this N finds with `power`, from the spread of the paired differences.

    When every pair moved alike the paired spread is zero, which would claim any difference
    detectable at any N: the runs' own spread stands in for it then (what an unpaired design would
    see), and for pass/fail no difference below `k / N` can be detected at all, k being the fewest
    discordant pairs, all one way, with which McNemar's test can reach `alpha`.
    """
    n = values_a.size
    z = scipy_stats.norm.ppf(1 - alpha / 2) + scipy_stats.norm.ppf(power)
    differences = values_b - values_a
    spread = float(differences.std(ddof=1))
    if spread <= 1e-9 * max(1.0, float(np.abs(differences).max())):  # zero, up to float rounding
        spread = math.sqrt(float(values_a.var(ddof=1) + values_b.var(ddof=1)))
    detectable = z * spread / math.sqrt(n)
    if pass_fail:
        fewest = next((k for k in range(1, n + 1) if mcnemar_midp(k, 0) < alpha), None)
        detectable = max(detectable, fewest / n if fewest is not None else math.inf)
    return float(detectable)


def mcnemar_midp(b_better: int, a_better: int) -> float:
    """Two-sided mid-p McNemar test on the discordant pairs (Fagerland, Lydersen and Laake, 2013)."""
    discordant = b_better + a_better
    if discordant == 0:
        return 1.0
    smaller = min(b_better, a_better)
    one_sided = scipy_stats.binom.cdf(smaller, discordant, 0.5) - 0.5 * scipy_stats.binom.pmf(smaller, discordant, 0.5)
    return float(min(1.0, 2 * one_sided))


def paired_t_p_value(differences: np.ndarray) -> float:
    """Two-sided one-sample t-test of the paired differences against zero."""
    spread = differences.std(ddof=1)
    if spread == 0:
        return 1.0 if differences.mean() == 0 else 0.0
    t = differences.mean() / (spread / math.sqrt(differences.size))
    return float(2 * scipy_stats.t.sf(abs(t), differences.size - 1))
