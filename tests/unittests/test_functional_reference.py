"""CMMD and subject similarity (CLIP-I) from embeddings, against direct float64 references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clip_metric.functional import CMMD_SCALE, CMMD_SIGMA, cmmd, image_similarities, image_similarity


def reference_cmmd(x: np.ndarray, y: np.ndarray, sigma: float = CMMD_SIGMA, scale: float = CMMD_SCALE) -> float:
    """The definition written out in float64, as the authors' distance.py computes it (one shot)."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    gamma = 1.0 / (2.0 * sigma**2)
    xx, yy, xy = x @ x.T, y @ y.T, x @ y.T
    xn, yn = np.diag(xx), np.diag(yy)
    k_xx = np.exp(-gamma * (-2 * xx + xn[:, None] + xn[None, :])).mean()
    k_yy = np.exp(-gamma * (-2 * yy + yn[:, None] + yn[None, :])).mean()
    k_xy = np.exp(-gamma * (-2 * xy + xn[:, None] + yn[None, :])).mean()
    return scale * (k_xx + k_yy - 2 * k_xy)


def _embeddings(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen, dtype=torch.float64) + shift


@pytest.mark.parametrize("shift", [0.0, 0.05, 0.5])
def test_cmmd_matches_the_definition_in_float64(shift):
    x, y = _embeddings(300, 64, 0), _embeddings(257, 64, 1, shift)
    expected = reference_cmmd(x.numpy(), y.numpy())
    assert cmmd(x, y) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_cmmd_in_float32_products_stays_within_float32_rounding_of_the_float64_value():
    x, y = _embeddings(400, 768, 2), _embeddings(300, 768, 3, 0.02)
    exact = reference_cmmd(x.numpy(), y.numpy())
    assert cmmd(x.float(), y.float()) == pytest.approx(exact, abs=2e-5)


@pytest.mark.parametrize("block_size", [1, 7, 64, 4096])
def test_cmmd_does_not_depend_on_the_block_size(block_size):
    x, y = _embeddings(70, 16, 4), _embeddings(45, 16, 5, 0.3)
    assert cmmd(x, y, block_size=block_size) == pytest.approx(cmmd(x, y, block_size=10_000), rel=1e-12, abs=1e-15)


def test_cmmd_normalises_rows_so_scaling_an_embedding_changes_nothing():
    x, y = _embeddings(40, 8, 6), _embeddings(30, 8, 7, 0.4)
    scales = torch.rand(40, 1, dtype=torch.float64) * 1e3 + 1e-3
    assert cmmd(x * scales, y) == pytest.approx(cmmd(x, y), rel=1e-10)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 20), m=st.integers(1, 20), d=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_cmmd_is_symmetric_non_negative_and_zero_on_identical_sets(n, m, d, seed):
    x, y = _embeddings(n, d, seed), _embeddings(m, d, seed + 1)
    value = cmmd(x, y)
    assert value >= -1e-12
    assert value == pytest.approx(cmmd(y, x), rel=1e-9, abs=1e-12)
    assert value == pytest.approx(reference_cmmd(x.numpy(), y.numpy()), rel=1e-8, abs=1e-12)
    assert abs(cmmd(x, x)) < 1e-12


def test_cmmd_keeps_precision_where_the_kernel_rounds_to_one():
    # Nearly identical sets: kernel values differ from 1 by ~1e-9, below float32's resolution there.
    x = _embeddings(50, 32, 8)
    y = x + 1e-4 * _embeddings(50, 32, 9)
    expected = reference_cmmd(x.numpy(), y.numpy())
    assert cmmd(x, y) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    "x, message",
    [
        (torch.zeros(3, 4), "non-zero"),
        (torch.full((3, 4), math.nan), "finite"),
        (torch.ones(4), "2-D"),
        (torch.ones(0, 4), "at least 1"),
        (torch.ones(3, 4, dtype=torch.long), "floating-point"),
        ([[1.0, 0.0]], "2-D"),
    ],
)
def test_bad_embeddings_are_refused_by_name(x, message):
    with pytest.raises(ValueError, match=message):
        cmmd(x, torch.ones(3, 4))
    with pytest.raises(ValueError, match=message):
        image_similarities(x, torch.ones(3, 4))


def test_widths_that_differ_are_refused():
    with pytest.raises(ValueError, match="same width"):
        cmmd(torch.ones(2, 3), torch.ones(2, 4))


@pytest.mark.parametrize("name, value", [("sigma", 0.0), ("scale", -1.0), ("block_size", 0), ("sigma", math.inf)])
def test_bad_kernel_settings_are_refused(name, value):
    with pytest.raises(ValueError, match=name):
        cmmd(torch.ones(2, 3), torch.ones(2, 3), **{name: value})


def test_image_similarity_is_the_mean_of_all_pairwise_cosines():
    x, y = _embeddings(30, 16, 10), _embeddings(12, 16, 11, 0.5)
    xn = x / x.norm(dim=1, keepdim=True)
    yn = y / y.norm(dim=1, keepdim=True)
    pairwise = xn @ yn.T
    torch.testing.assert_close(image_similarities(x, y), pairwise.mean(dim=1), rtol=0, atol=1e-14)
    assert image_similarity(x, y) == pytest.approx(float(pairwise.mean()), abs=1e-14)
    assert image_similarities(x.float(), y.float()).dtype == torch.float64
