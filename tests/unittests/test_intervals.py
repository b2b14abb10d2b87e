"""Intervals from moments against scipy's Student t, and the prompts-needed formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from clip_metric.intervals import half_width, moments, prompts_needed, t_quantile


@pytest.mark.parametrize("dof", [1, 2, 3, 7, 30, 31, 63, 255, 1631, 9_999, 10_001, 250_000, 10**8])
@pytest.mark.parametrize("probability", [0.6, 0.9, 0.95, 0.975, 0.995, 0.9995, 0.025])
def test_t_quantile_matches_scipy(dof, probability):
    assert t_quantile(probability, dof) == pytest.approx(stats.t.ppf(probability, dof), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(("probability", "dof"), [(0, 5), (1, 5), (1.5, 5), (0.9, 0), (0.9, 2.0), (0.9, True), ("0.9", 3)])
def test_t_quantile_refuses_bad_input(probability, dof):
    with pytest.raises(ValueError, match="Expected"):
        t_quantile(probability, dof)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(min_value=-1, max_value=1, allow_nan=False), min_size=2, max_size=400),
    st.sampled_from([0.8, 0.9, 0.95, 0.99]),
)
def test_half_width_is_scipys_t_interval(values, level):
    data = np.asarray(values, dtype=np.float64)
    got = half_width(*moments(values), level=level)
    if data.std() < 1e-6 * max(1.0, abs(data.mean())):  # no spread: moments cannot tell it from rounding
        assert got == pytest.approx(0.0, abs=1e-6)
        return
    low, high = stats.t.interval(level, data.size - 1, loc=data.mean(), scale=stats.sem(data))
    assert got == pytest.approx((high - low) / 2, rel=1e-6, abs=1e-12)


def test_half_width_needs_two_samples():
    assert math.isnan(half_width(0.3, 0.09, 1))
    assert math.isnan(half_width(0.0, 0.0, 0))


def test_half_width_refuses_a_bad_level():
    with pytest.raises(ValueError, match=r"Expected `level` .* but got 95"):
        half_width(*moments([0.1, 0.2]), level=95)


def test_prompts_needed_reaches_the_width_and_no_fewer_do():
    for correlation in (None, 0.0, 0.5, 0.9, 0.99):
        n = prompts_needed(0.04, 0.005, correlation=correlation)
        spread = 0.04 * math.sqrt(2 if correlation is None else 2 * (1 - correlation))
        assert stats.t.ppf(0.975, n - 1) * spread / math.sqrt(n) <= 0.005
        if n > 2:
            assert stats.t.ppf(0.975, n - 2) * spread / math.sqrt(n - 1) > 0.005


def test_pairing_saves_images_in_proportion_to_the_correlation():
    unpaired = prompts_needed(0.04, 0.002)
    paired = prompts_needed(0.04, 0.002, correlation=0.75)
    assert paired / unpaired == pytest.approx(0.25, rel=0.02)


@pytest.mark.parametrize(
    "kwargs",
    [{"std": 0}, {"std": -1}, {"width": 0}, {"width": math.inf}, {"std": True}, {"correlation": 1.0},
     {"correlation": -1.5}, {"correlation": "0.9"}],
)
def test_prompts_needed_refuses_bad_input(kwargs):
    args = {"std": 0.04, "width": 0.005, **kwargs}
    with pytest.raises(ValueError, match="Expected"):
        prompts_needed(args.pop("std"), args.pop("width"), **args)
