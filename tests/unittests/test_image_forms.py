"""Image forms that must score as their plain equivalent, or be refused by name."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from clip_metric import ClipEncoder, ClipScore
from clip_metric.images import standardize_images

PROMPTS = ["a red circle"]


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir):
    return ClipEncoder.from_pretrained(tiny_clip_dir, precision="32")


@pytest.fixture(scope="module")
def rgba():
    pixels = np.random.default_rng(0).integers(0, 256, (40, 48, 4), dtype=np.uint8)
    return Image.fromarray(pixels, "RGBA")


def _modes(rgba):
    la = rgba.convert("LA")
    palette = rgba.convert("RGB").convert("P")
    palette.info["transparency"] = 3
    gray_keyed = rgba.convert("L")
    gray_keyed.info["transparency"] = 100
    return {
        "RGBa": (rgba.convert("RGBa"), rgba),
        "LA": (la, la.convert("RGBA")),
        "La": (la.convert("La"), la.convert("RGBA")),
        "PA": (rgba.convert("PA"), rgba.convert("PA").convert("RGBA")),
        "P with transparency": (palette, palette.convert("RGBA")),
        "L with transparency": (gray_keyed, gray_keyed.convert("RGBA")),
        "CMYK": (rgba.convert("CMYK"), rgba.convert("CMYK").convert("RGBA")),
        "YCbCr": (rgba.convert("YCbCr"), rgba.convert("YCbCr").convert("RGBA")),
        "1": (rgba.convert("1"), rgba.convert("1").convert("RGBA")),
    }


@pytest.mark.parametrize("mode", ["RGBa", "LA", "La", "PA", "P with transparency", "L with transparency", "CMYK",
                                  "YCbCr", "1"])
def test_pil_modes_score_like_their_rgba_conversion(encoder, rgba, mode):
    image, as_rgba = _modes(rgba)[mode]
    assert abs(encoder.score(image, PROMPTS).item() - encoder.score(as_rgba, PROMPTS).item()) < 1e-3


def test_a_uint8_image_and_the_same_floats_score_alike_when_resized(encoder):
    images = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (2, 3, 40, 48), dtype=np.uint8))
    prompts = ["a red circle", "a blue square"]
    scores = encoder.score(images, prompts)
    assert torch.allclose(scores, encoder.score(images.float() / 255, prompts), atol=1e-6)
    assert torch.allclose(scores, encoder.score(images.double() / 255, prompts), atol=1e-6)


@pytest.mark.parametrize("value_range", [(-1e308, 1e308), (-1.7e308, 0.5e308), (0.0, 1e-320)])
def test_a_value_range_whose_width_overflows_or_underflows_is_refused(encoder, value_range):
    with pytest.raises(ValueError, match="value_range.*width"):
        ClipScore(encoder, value_range=value_range)
    with pytest.raises(ValueError, match="value_range.*width"):
        standardize_images(torch.zeros(1, 3, 8, 8), value_range=value_range)


@pytest.mark.parametrize("value_range", [(0.0, 1e-300), (-1e300, 1e300), (1e200, 3e200)])
def test_extreme_value_ranges_read_float64_images_correctly(encoder, value_range):
    low, high = value_range
    unit = torch.rand(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    scaled = low + unit * (high - low)
    assert torch.isfinite(scaled).all()
    metric = ClipScore(encoder, value_range=value_range)
    metric.update(scaled, PROMPTS * 2)
    reference = ClipScore(encoder)
    reference.update(unit, PROMPTS * 2)
    got, expected = metric.compute(), reference.compute()
    assert all(math.isfinite(float(got[k])) for k in ("clip/mean", "clip/min", "clip/max", "clip/std"))
    assert abs(float(got["clip/mean"]) - float(expected["clip/mean"])) < 1e-5


def test_a_value_range_too_narrow_for_the_image_dtype_is_refused_not_nan(encoder):
    metric = ClipScore(encoder, value_range=(0.0, 1e-300))
    images = (torch.rand(2, 3, 32, 32) * 1e-300).float()
    with pytest.raises(ValueError, match="torch.float32 images can hold"):
        metric.update(images, PROMPTS * 2)
    assert metric.count.item() == 0


def test_a_quantized_tensor_is_refused_with_how_to_read_it():
    with pytest.warns(UserWarning):  # torch deprecates quantized tensor creation
        quantized = torch.quantize_per_tensor(torch.rand(3, 8, 8), 1 / 255, 0, torch.quint8)
    for given in (quantized, quantized.unsqueeze(0), [quantized]):
        with pytest.raises(ValueError, match=r"quantized tensor.*\.dequantize\(\)"):
            standardize_images(given)


def test_a_numpy_longdouble_image_is_scored_as_float64(encoder):
    array = np.random.default_rng(2).random((32, 32, 3))
    expected = encoder.score(array, PROMPTS)
    assert torch.allclose(encoder.score(array.astype(np.longdouble), PROMPTS), expected, atol=1e-6)
    with pytest.raises(ValueError, match="complex"):
        standardize_images(array.astype(np.complex128))
