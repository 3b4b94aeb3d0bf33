"""Mergeable feature profiles: exact moments plus a log-bucket quantile sketch.

Numeric values go into buckets whose bounds grow by a factor `GAMMA`
(the DDSketch layout): every value lands in a bucket within 1% of its own
magnitude, so quantiles carry a 1% relative error. Unlike a randomized sketch
(KLL) or a compressing one (t-digest), two of these merge *exactly* by adding
the counts of equal keys, so a day merged from its hours is the profile of the
day, whatever the order. Buckets are computed with NumPy over a whole batch.
Keys increase with the value (negatives below 0, exact zeros at 0), so sorted
keys give the CDF directly.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import numpy as np

RELATIVE_ACCURACY = 0.01
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
LOG_GAMMA = math.log(GAMMA)
# Magnitudes below this count as zero (bucket 0).
MIN_MAGNITUDE = 1e-9
_KEY_OFFSET = math.ceil(math.log(MIN_MAGNITUDE) / LOG_GAMMA) - 1

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)

NUMERIC = "numeric"
CATEGORICAL = "categorical"


def bucket_keys(values: np.ndarray) -> np.ndarray:
    """The sketch key of each (finite) value."""
    magnitude = np.abs(values)
    small = magnitude < MIN_MAGNITUDE
    raw = np.ceil(np.log(np.where(small, 1.0, magnitude)) / LOG_GAMMA).astype(np.int64) - _KEY_OFFSET
    return np.where(small, 0, np.where(values > 0, raw, -raw)).astype(np.int32)


def bucket_values(keys: np.ndarray) -> np.ndarray:
    """A representative value per key (the bucket's midpoint in relative terms)."""
    magnitude_key = np.abs(keys.astype(np.float64)) + _KEY_OFFSET
    magnitude = 2.0 * np.power(GAMMA, magnitude_key) / (GAMMA + 1.0)
    return np.where(keys == 0, 0.0, np.sign(keys) * magnitude)


def _merge_buckets(
    keys_a: np.ndarray, counts_a: np.ndarray, keys_b: np.ndarray, counts_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    if not len(keys_a):
        return keys_b, counts_b
    if not len(keys_b):
        return keys_a, counts_a
    keys, inverse = np.unique(np.concatenate([keys_a, keys_b]), return_inverse=True)
    counts = np.zeros(len(keys), dtype=np.int64)
    np.add.at(counts, inverse, np.concatenate([counts_a, counts_b]))
    return keys.astype(np.int32), counts


@dataclasses.dataclass
class NumericProfile:
    count: int = 0
    nulls: int = 0
    mean: float = 0.0
    # Sum of squared deviations from the mean.
    m2: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    keys: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int32))
    counts: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))

    kind = NUMERIC

    @classmethod
    def of(cls, values: np.ndarray) -> NumericProfile:
        """Profile an array of floats; NaN means null."""
        finite = values[~np.isnan(values)]
        nulls = len(values) - len(finite)
        if not len(finite):
            return cls(nulls=nulls)
        mean = float(finite.mean())
        keys, counts = np.unique(bucket_keys(finite), return_counts=True)
        return cls(
            count=len(finite),
            nulls=nulls,
            mean=mean,
            m2=float(np.square(finite - mean).sum()),
            min=float(finite.min()),
            max=float(finite.max()),
            keys=keys.astype(np.int32),
            counts=counts.astype(np.int64),
        )

    def merge(self, other: NumericProfile) -> NumericProfile:
        n = self.count + other.count
        if n == 0:
            return NumericProfile(nulls=self.nulls + other.nulls)
        delta = other.mean - self.mean
        keys, counts = _merge_buckets(self.keys, self.counts, other.keys, other.counts)
        return NumericProfile(
            count=n,
            nulls=self.nulls + other.nulls,
            mean=self.mean + delta * other.count / n,
            m2=self.m2 + other.m2 + delta * delta * self.count * other.count / n,
            min=min(self.min, other.min),
            max=max(self.max, other.max),
            keys=keys,
            counts=counts,
        )

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 0.0

    def quantiles(self, qs: tuple[float, ...] = QUANTILES) -> list[float]:
        if not self.count:
            return [math.nan] * len(qs)
        cumulative = np.cumsum(self.counts)
        ranks = np.ceil(np.asarray(qs) * self.count).clip(1, self.count)
        positions = np.searchsorted(cumulative, ranks)
        values = bucket_values(self.keys[positions])
        return [float(v) for v in np.clip(values, self.min, self.max)]


@dataclasses.dataclass
class CategoricalProfile:
    count: int = 0
    nulls: int = 0
    frequencies: dict[str, int] = dataclasses.field(default_factory=dict)

    kind = CATEGORICAL

    @classmethod
    def of(cls, values: list[str | None]) -> CategoricalProfile:
        tally = Counter(values)
        nulls = tally.pop(None, 0)
        return cls(count=len(values) - nulls, nulls=nulls, frequencies=dict(tally))

    def merge(self, other: CategoricalProfile) -> CategoricalProfile:
        frequencies = dict(self.frequencies)
        for category, n in other.frequencies.items():
            frequencies[category] = frequencies.get(category, 0) + n
        return CategoricalProfile(self.count + other.count, self.nulls + other.nulls, frequencies)


Profile = NumericProfile | CategoricalProfile


def merge_all(profiles: list[Profile]) -> Profile:
    merged = profiles[0]
    for profile in profiles[1:]:
        merged = merged.merge(profile)
    return merged
