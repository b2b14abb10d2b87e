"""Intervals from moments against scipy's Student t, and the prompts-needed formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from clip_metric import intervals
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


# ------------------------------------------------------------------ tests and family-wise control
@pytest.mark.parametrize("dof", [1, 2, 5, 30, 500, 20_000])
@pytest.mark.parametrize("value", [-40.0, -2.5, -0.3, 0.0, 0.7, 2.0, 9.0])
def test_t_cdf_matches_scipy(value, dof):
    assert intervals.t_cdf(value, dof) == pytest.approx(stats.t.cdf(value, dof), rel=1e-9, abs=1e-13)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1.0, 1.0, allow_nan=False), min_size=2, max_size=40))
def test_p_value_matches_scipy_one_sample_t_test(values):
    expected = stats.ttest_1samp(values, 0.0).pvalue if np.std(values) > 1e-12 else None
    got = intervals.p_value(*intervals.moments(values))
    if expected is not None and np.isfinite(expected):
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1.0, 1.0, allow_nan=False), min_size=2, max_size=40))
def test_p_value_below_alpha_exactly_when_the_interval_excludes_zero(values):
    total, total_sq, count = intervals.moments(values)
    width = intervals.half_width(total, total_sq, count)
    mean = total / count
    if width > 0 and abs(abs(mean) - width) > 1e-9 * max(width, 1e-12):
        assert (intervals.p_value(total, total_sq, count) < 0.05) == (abs(mean) > width)


def _holm_reference(p_values, alpha=0.05):
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    rejected = [False] * len(p_values)
    for rank, index in enumerate(order):
        if p_values[index] >= alpha / (len(p_values) - rank):
            break
        rejected[index] = True
    return rejected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=20))
def test_holm_rejects_what_the_step_down_procedure_rejects(p_values):
    decisions = [significant for _, significant in intervals.holm(p_values)]
    assert decisions == _holm_reference(p_values)


def test_holm_leaves_untestable_comparisons_out_of_the_family():
    result = intervals.holm([0.02, math.nan, 0.02])
    assert math.isnan(result[1][0]) and result[1][1] is False
    assert result[0] == result[2] == (0.04, True)


def test_holm_keeps_the_family_wise_error_at_five_percent_over_ten_null_comparisons():
    # Ten runs exactly as good as the base, each compared on 64 paired prompts: unadjusted, about
    # 1 - 0.95**10 = 40% of repetitions call one "significant"; Holm keeps it at most 5%.
    rng = np.random.default_rng(7)
    repetitions, any_unadjusted, any_adjusted = 2000, 0, 0
    for _ in range(repetitions):
        diffs = rng.normal(0.0, 0.02, size=(10, 64))
        p = [intervals.p_value(*intervals.moments(row.tolist())) for row in diffs]
        any_unadjusted += any(value < 0.05 for value in p)
        any_adjusted += any(significant for _, significant in intervals.holm(p))
    bound = 0.05 + 3 * math.sqrt(0.05 * 0.95 / repetitions)  # binomial error of the target
    assert any_adjusted / repetitions <= bound
    assert any_unadjusted / repetitions > 0.3


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(-1.0, 1.0, allow_nan=False), min_size=3, max_size=60), st.floats(0.5, 0.99))
def test_the_skew_corrected_p_value_is_the_level_where_its_interval_reaches_zero(values, level):
    d = np.asarray(values)
    sums = (float(d.sum()), float((d**2).sum()), float((d**3).sum()), d.size)
    p = intervals.delta_p_value(*sums)
    width = intervals.delta_half_width(*sums, level)
    mean = abs(float(d.mean()))
    if np.std(d) > 1e-9 and abs(mean - width) > 1e-9 * max(width, 1e-12):
        assert (p < 1 - level) == (mean > width)
