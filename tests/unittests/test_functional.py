"""Direct tests of the pure functions in ``clip_metric.functional``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from clip_metric.functional import (
    SCORE_SCALES,
    check_scale,
    cosine_scores,
    scale_scores,
    stats_from_moments,
    summarize_scores,
)

KEYS = ("clip/mean", "clip/mean_ci", "clip/min", "clip/max", "clip/std", "clip/count")
SETTINGS = settings(max_examples=50, deadline=None)
finite_scores = st.lists(
    st.floats(min_value=-100.0, max_value=100.0, allow_nan=False, allow_infinity=False), min_size=1, max_size=60
)


def _reference_cosines(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    a64, b64 = a.double().numpy(), b.double().numpy()
    return (a64 * b64).sum(-1) / (np.linalg.norm(a64, axis=-1) * np.linalg.norm(b64, axis=-1))


def _as_floats(result: dict[str, torch.Tensor]) -> dict[str, float]:
    return {key: float(value) for key, value in result.items()}


def _numpy_summary(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {
        "clip/mean": float(array.mean()),
        # Student's t interval of the mean: scipy's, from the sample standard deviation.
        "clip/mean_ci": float(stats.t.ppf(0.975, array.size - 1) * stats.sem(array)) if array.size > 1 else math.nan,
        "clip/min": float(array.min()),
        "clip/max": float(array.max()),
        "clip/std": float(array.std()),  # population std (ddof=0)
        "clip/count": float(array.size),
    }


def _moments(values: list[float]) -> tuple[torch.Tensor, ...]:
    """The five states one rank would hold after seeing ``values``."""
    t = torch.tensor(values, dtype=torch.float64)
    if t.numel() == 0:
        return (
            torch.zeros((), dtype=torch.float64),
            torch.zeros((), dtype=torch.float64),
            torch.zeros((), dtype=torch.long),
            torch.tensor(math.inf, dtype=torch.float64),
            torch.tensor(-math.inf, dtype=torch.float64),
        )
    return t.sum(), (t * t).sum(), torch.tensor(t.numel()), t.min(), t.max()


def _assert_summary_close(result: dict[str, float], expected: dict[str, float], values: list[float]) -> None:
    scale = max(abs(v) for v in values)
    assert result["clip/count"] == expected["clip/count"]
    assert result["clip/min"] == expected["clip/min"]
    assert result["clip/max"] == expected["clip/max"]
    assert result["clip/mean"] == pytest.approx(expected["clip/mean"], rel=1e-12, abs=1e-12 * scale)
    # sum-of-squares moments lose ~eps * E[x^2] to cancellation; compare variances with that bound.
    tolerance = 1e-12 * scale * scale + 1e-300
    assert result["clip/std"] ** 2 == pytest.approx(expected["clip/std"] ** 2, abs=tolerance)


# --------------------------------------------------------------------------- cosine_scores


def test_cosine_scores_matches_float64_reference():
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(16, 64, generator=generator) * 3
    text = torch.randn(16, 64, generator=generator) * 0.1
    scores = cosine_scores(image, text)
    assert scores.shape == (16,) and scores.dtype == torch.float32
    np.testing.assert_allclose(scores.numpy(), _reference_cosines(image, text), atol=1e-6)


def test_cosine_scores_known_values_and_normalisation_invariance():
    image = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    text = torch.tensor([[5.0, 0.0], [0.0, -1.0], [4.0, 3.0]])
    expected = torch.tensor([1.0, -1.0, 24.0 / 25.0])
    torch.testing.assert_close(cosine_scores(image, text), expected)
    torch.testing.assert_close(cosine_scores(image * 1e3, text * 1e-3), expected)


def test_cosine_scores_accepts_half_and_double_inputs():
    generator = torch.Generator().manual_seed(1)
    image, text = torch.randn(4, 8, generator=generator), torch.randn(4, 8, generator=generator)
    reference = torch.from_numpy(_reference_cosines(image, text)).float()
    for dtype, atol in ((torch.float64, 1e-6), (torch.bfloat16, 2e-2), (torch.float16, 2e-3)):
        scores = cosine_scores(image.to(dtype), text.to(dtype))
        assert scores.dtype == torch.float32
        torch.testing.assert_close(scores, reference, atol=atol, rtol=0)


def test_cosine_scores_stays_within_minus_one_and_one():
    vector = torch.full((3, 512), 0.1234567)
    scores = cosine_scores(vector, vector.clone())
    assert (scores <= 1.0).all() and (scores >= -1.0).all()
    assert (cosine_scores(vector, -vector) >= -1.0).all()


@pytest.mark.parametrize(
    ("image_shape", "text_shape"),
    [((2, 4), (3, 4)), ((2, 4), (2, 5)), ((4,), (4,)), ((1, 2, 4), (1, 2, 4)), ((2, 4), (4,))],
)
def test_cosine_scores_refuses_mismatched_or_non_2d_shapes(image_shape, text_shape):
    with pytest.raises(ValueError, match="same shape"):
        cosine_scores(torch.ones(image_shape), torch.ones(text_shape))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("side", ["image", "text"])
def test_cosine_scores_refuses_non_finite_embeddings(bad, side):
    good = torch.ones(2, 3)
    broken = good.clone()
    broken[1, 2] = bad
    args = (broken, good) if side == "image" else (good, broken)
    with pytest.raises(ValueError, match="finite"):
        cosine_scores(*args)


@pytest.mark.parametrize("side", ["image", "text"])
def test_cosine_scores_refuses_zero_vectors(side):
    good = torch.ones(2, 3)
    broken = good.clone()
    broken[0] = 0.0
    args = (broken, good) if side == "image" else (good, broken)
    with pytest.raises(ValueError, match="non-zero"):
        cosine_scores(*args)


def test_cosine_scores_of_no_rows_is_empty_and_of_no_dimensions_is_refused():
    assert cosine_scores(torch.ones(0, 4), torch.ones(0, 4)).shape == (0,)
    with pytest.raises(ValueError, match="non-zero"):
        cosine_scores(torch.ones(2, 0), torch.ones(2, 0))


@pytest.mark.parametrize("magnitude", [1e-30, 1e-42, 1e20, 1e37])
def test_cosine_scores_extreme_but_finite_float32_magnitudes(magnitude):
    # The squared norm of such rows under- or overflows float32; the cosine is still well defined.
    image = torch.tensor([[1.0, 0.0], [3.0, 4.0]]) * magnitude
    text = torch.tensor([[1.0, 1.0], [4.0, 3.0]]) * magnitude
    torch.testing.assert_close(cosine_scores(image, text), torch.tensor([math.sqrt(0.5), 24.0 / 25.0]))


def test_cosine_scores_float64_beyond_float32_range():
    image = torch.tensor([[1e300, 0.0]], dtype=torch.float64)
    text = torch.tensor([[1e-300, 1e-300]], dtype=torch.float64)
    torch.testing.assert_close(cosine_scores(image, text), torch.tensor([math.sqrt(0.5)]))


@SETTINGS
@given(
    data=st.data(),
    rows=st.integers(min_value=1, max_value=6),
    dim=st.integers(min_value=1, max_value=16),
)
def test_cosine_scores_property_matches_reference(data, rows, dim):
    element = st.floats(allow_nan=False, allow_infinity=False, width=32)  # subnormal to ~3e38
    image = torch.tensor(data.draw(st.lists(st.lists(element, min_size=dim, max_size=dim), min_size=rows, max_size=rows)))
    text = torch.tensor(data.draw(st.lists(st.lists(element, min_size=dim, max_size=dim), min_size=rows, max_size=rows)))
    zero = (image.abs().amax(-1) == 0) | (text.abs().amax(-1) == 0)
    if zero.any():
        with pytest.raises(ValueError, match="non-zero"):
            cosine_scores(image, text)
        return
    np.testing.assert_allclose(cosine_scores(image, text).numpy(), _reference_cosines(image, text), atol=1e-5)


# --------------------------------------------------------------------------- scale_scores / check_scale


def test_scale_scores_each_scale():
    cosines = torch.tensor([0.3, -0.1, 0.0, 1.0])
    torch.testing.assert_close(scale_scores(cosines), cosines)
    torch.testing.assert_close(scale_scores(cosines, "cosine"), cosines)
    torch.testing.assert_close(scale_scores(cosines, "torchmetrics"), torch.tensor([30.0, 0.0, 0.0, 100.0]))
    torch.testing.assert_close(scale_scores(cosines, "clipscore"), torch.tensor([0.75, 0.0, 0.0, 2.5]))


def test_scale_scores_does_not_modify_its_input():
    cosines = torch.tensor([0.3, -0.1])
    before = cosines.clone()
    scale_scores(cosines, "torchmetrics")
    scale_scores(cosines, "clipscore")
    torch.testing.assert_close(cosines, before)


@pytest.mark.parametrize("bad", ["CLIPScore", "", "percent", None, 1, True])
def test_scale_names_are_checked(bad):
    with pytest.raises(ValueError, match=r"Expected `scale` to be one of"):
        scale_scores(torch.tensor([0.1]), bad)
    with pytest.raises(ValueError, match=r"Expected `scale` to be one of"):
        check_scale(bad)


def test_check_scale_accepts_every_scale():
    assert SCORE_SCALES == ("cosine", "torchmetrics", "clipscore")
    for scale in SCORE_SCALES:
        assert check_scale(scale) == scale


# --------------------------------------------------------------------------- summaries


def test_summarize_scores_against_numpy():
    values = [0.31, 0.25, 0.4, 0.38, -0.05, 0.3]
    result = _as_floats(summarize_scores(torch.tensor(values, dtype=torch.float64)))
    assert tuple(result) == KEYS
    expected = _numpy_summary(values)
    for key in KEYS:
        assert result[key] == pytest.approx(expected[key], abs=1e-12)


def test_summarize_scores_uses_population_std_and_float64():
    result = summarize_scores(torch.tensor([0.2, 0.4], dtype=torch.float32))
    assert all(value.dtype == torch.float64 for value in result.values())
    assert float(result["clip/std"]) == pytest.approx(0.1, abs=1e-7)  # ddof=1 would give 0.1414


def test_summarize_scores_single_sample_and_prefix():
    result = _as_floats(summarize_scores(torch.tensor([0.7]), prefix="val/"))
    assert set(result) == {"val/mean", "val/mean_ci", "val/min", "val/max", "val/std", "val/count"}
    assert math.isnan(result["val/mean_ci"])  # no spread to estimate from one sample
    assert result["val/std"] == 0.0 and result["val/count"] == 1.0
    assert result["val/mean"] == result["val/min"] == result["val/max"] == pytest.approx(0.7)


def test_summarize_scores_flattens_any_shape():
    values = torch.arange(6, dtype=torch.float64).reshape(2, 3) / 10
    assert _as_floats(summarize_scores(values)) == _as_floats(summarize_scores(values.reshape(-1)))


def test_summarize_scores_empty_gives_nan_and_zero_count():
    result = _as_floats(summarize_scores(torch.zeros(0)))
    assert tuple(result) == KEYS
    assert result["clip/count"] == 0.0
    assert all(math.isnan(result[key]) for key in KEYS[:-1])


def test_stats_from_moments_empty_gives_nan():
    result = _as_floats(stats_from_moments(*_moments([])))
    assert result["clip/count"] == 0.0
    assert all(math.isnan(result[key]) for key in KEYS[:-1])


def test_stats_from_moments_count_is_float_and_std_never_nan_from_rounding():
    # Identical values: E[x^2] - E[x]^2 may round below zero; std must be 0, not NaN.
    values = [0.1] * 7 + [0.1 + 1e-17]
    result = stats_from_moments(*_moments(values))
    assert result["clip/count"].dtype == torch.float64 and float(result["clip/count"]) == 8.0
    std = float(result["clip/std"])
    assert not math.isnan(std) and std == pytest.approx(0.0, abs=1e-8)


@SETTINGS
@given(values=finite_scores)
def test_summary_of_any_finite_array_equals_numpy(values):
    result = _as_floats(summarize_scores(torch.tensor(values, dtype=torch.float64)))
    _assert_summary_close(result, _numpy_summary(values), values)


@SETTINGS
@given(values=finite_scores, data=st.data())
def test_merged_moments_of_any_partition_equal_one_pass(values, data):
    # What DDP exactness rests on: per-rank moments, reduced with sum/sum/sum/min/max, give the
    # statistics of all samples together, however they are split (empty parts included).
    cuts = sorted(data.draw(st.lists(st.integers(min_value=0, max_value=len(values)), max_size=5)))
    bounds = [0, *cuts, len(values)]
    parts = [values[start:stop] for start, stop in zip(bounds, bounds[1:])]
    moments = [_moments(part) for part in parts]
    total = sum(m[0] for m in moments)
    total_sq = sum(m[1] for m in moments)
    count = sum(m[2] for m in moments)
    minimum = torch.stack([m[3] for m in moments]).min()
    maximum = torch.stack([m[4] for m in moments]).max()
    merged = _as_floats(stats_from_moments(total, total_sq, count, minimum, maximum))
    one_pass = _as_floats(summarize_scores(torch.tensor(values, dtype=torch.float64)))
    _assert_summary_close(merged, one_pass, values)
    _assert_summary_close(merged, _numpy_summary(values), values)
