"""``value_range``: which pairs are ranges, and float64 images mapped without losing precision."""

from __future__ import annotations

import pytest
import torch

from clip_metric import ClipEncoder, ClipScore
from clip_metric.images import check_value_range, standardize_images

PROMPTS = ["a cat", "a red car", "a bowl of fruit"]


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir):
    return ClipEncoder.from_pretrained(tiny_clip_dir, precision="32")


def _base():
    return torch.rand(3, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("low", [1e8, -1e12, 2.0**40])
def test_float64_images_far_from_zero_score_like_the_same_images_in_0_1(encoder, low):
    far = _base() + low
    # The reference is what float64 holds of these pixels (at 2**40 its step is 2**-12): the
    # package must not lose more than that.
    reference = ClipScore(encoder)
    reference.update((far - low).float(), PROMPTS)
    shifted = ClipScore(encoder, value_range=(low, low + 1))
    shifted.update(far, PROMPTS)
    got, expected = shifted.compute(), reference.compute()
    assert got.keys() == expected.keys()
    for key in expected:
        assert torch.allclose(torch.as_tensor(got[key]), torch.as_tensor(expected[key]), rtol=1e-4, atol=1e-5), (key, got[key] - expected[key])


def test_float64_images_far_from_zero_map_into_0_1_with_their_precision():
    base = _base()
    (batch,) = standardize_images(base + 1e8, value_range=(1e8, 1e8 + 1))
    assert batch.dtype == torch.float32
    assert torch.allclose(batch, base.float(), atol=1e-6)


@pytest.mark.parametrize(
    "value_range", [("0", "1"), (False, True), (0, True), {0, 1}, frozenset({0, 1}), {0: 1, 1: 2}, (b"0", b"1"), (0, None)]
)
def test_value_range_that_is_not_an_ordered_pair_of_real_numbers_is_refused(value_range):
    with pytest.raises(ValueError, match="value_range"):
        check_value_range(value_range)
    with pytest.raises(ValueError, match="value_range"):
        standardize_images(torch.zeros(1, 3, 4, 4), value_range=value_range)


@pytest.mark.parametrize("value_range", [(0, 10**400), (-(10**400), 0), (0, 1, 2), (0,)])
def test_value_range_with_a_bound_too_large_for_a_float_is_refused_naming_value_range(value_range):
    with pytest.raises(ValueError, match="value_range"):
        check_value_range(value_range)


@pytest.mark.parametrize(
    "value_range, expected",
    [((0, 255), (0.0, 255.0)), ([-1, 1], (-1.0, 1.0)), ((torch.tensor(0.0), torch.tensor(2.0)), (0.0, 2.0))],
)
def test_value_range_of_real_numbers_is_read_as_floats(value_range, expected):
    import numpy as np

    assert check_value_range(value_range) == expected
    assert check_value_range(np.array(value_range if not isinstance(value_range[0], torch.Tensor) else expected)) == expected
