"""Profiles merge exactly and their sketch answers quantiles within its 1% relative accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from services.monitoring.profiles import CategoricalProfile, NumericProfile, bucket_keys, bucket_values, merge_all

pytestmark = pytest.mark.unit


def test_merged_parts_equal_the_profile_of_the_whole():
    values = np.random.default_rng(0).lognormal(3, 1, 30_000)
    whole = NumericProfile.of(values)
    parts = merge_all([NumericProfile.of(chunk) for chunk in np.array_split(values, 7)])
    assert parts.count == whole.count and np.array_equal(parts.keys, whole.keys)
    assert np.array_equal(parts.counts, whole.counts)
    assert parts.mean == pytest.approx(values.mean()) and parts.std == pytest.approx(values.std(ddof=1))
    assert (parts.min, parts.max) == (values.min(), values.max())


def test_quantiles_are_within_the_relative_accuracy():
    values = np.random.default_rng(1).exponential(50, 50_000)
    profile = NumericProfile.of(values)
    for q, estimate in zip((0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99), profile.quantiles(), strict=True):
        exact = np.quantile(values, q, method="inverted_cdf")
        assert estimate == pytest.approx(exact, rel=0.011)


def test_keys_follow_value_order_through_zero_and_negatives():
    values = np.array([-1e6, -3.5, -1e-12, 0.0, 1e-12, 2.0, 7e9])
    keys = bucket_keys(values)
    assert list(keys) == sorted(keys) and keys[2] == keys[3] == keys[4] == 0
    assert np.allclose(bucket_values(keys[[0, 1, 5, 6]]), values[[0, 1, 5, 6]], rtol=0.011)


def test_nulls_are_counted_apart():
    profile = NumericProfile.of(np.array([1.0, np.nan, 3.0]))
    assert (profile.count, profile.nulls, profile.mean) == (2, 1, 2.0)
    categories = CategoricalProfile.of(["a", None, "b", "a"]).merge(CategoricalProfile.of(["b"]))
    assert (categories.count, categories.nulls, categories.frequencies) == (4, 1, {"a": 2, "b": 2})
