"""The input contract: every accepted form gives the same scores, every bad one a clear error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from clip_metric import ClipEncoder
from clip_metric.images import ImageTransform, standardize_images


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir):
    return ClipEncoder.from_pretrained(tiny_clip_dir, precision="32")


@pytest.fixture()
def images():
    return torch.randint(0, 256, (3, 3, 40, 36), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))


PROMPTS = ["a cat", "a red car", "a bowl of fruit"]


def _close(a, b, atol=1e-5):
    assert torch.allclose(a, b, atol=atol), (a - b).abs().max()


def test_float_ranges_agree_and_match_uint8(encoder, images):
    as01 = images.float() / 255
    reference = encoder.score(as01, PROMPTS, value_range=(0, 1))
    _close(encoder.score(as01 * 2 - 1, PROMPTS, value_range=(-1, 1)), reference)
    _close(encoder.score(images.float(), PROMPTS, value_range=(0, 255)), reference)
    # uint8 is resized in uint8 on the CPU (rounding like Pillow); float in float32.
    _close(encoder.score(images, PROMPTS), reference, atol=1e-3)
    no_resize = images[..., :32, :32]
    _close(encoder.score(no_resize, PROMPTS), encoder.score(no_resize.float() / 255, PROMPTS), atol=1e-6)


def test_pil_numpy_and_lists_equal_tensor(encoder, images):
    reference = encoder.score(images, PROMPTS)
    hwc = [img.permute(1, 2, 0).numpy() for img in images]
    _close(encoder.score([Image.fromarray(a) for a in hwc], PROMPTS), reference)
    _close(encoder.score(hwc, PROMPTS), reference)
    _close(encoder.score(np.stack(hwc), PROMPTS), reference)
    _close(encoder.score(list(images), PROMPTS), reference)


def test_single_image_and_single_prompt(encoder, images):
    reference = encoder.score(images[:1], PROMPTS[:1])
    _close(encoder.score(images[0], PROMPTS[0]), reference)


def test_list_of_different_sizes_equals_one_by_one(encoder):
    generator = torch.Generator().manual_seed(4)
    sized = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=generator) for h, w in
             [(32, 32), (64, 48), (64, 48), (20, 90)]]
    prompts = ["a", "b c", "d e f", "g"]
    together = encoder.score(sized, prompts)
    alone = torch.cat([encoder.score(img, p) for img, p in zip(sized, prompts)])
    _close(together, alone)


def test_grayscale_and_rgba(encoder, images):
    gray = images[:, :1]
    _close(encoder.score(gray, PROMPTS), encoder.score(gray.expand(-1, 3, -1, -1), PROMPTS))
    rgba = torch.cat([images, torch.zeros_like(images[:, :1])], dim=1)
    _close(encoder.score(rgba, PROMPTS), encoder.score(images, PROMPTS))
    pil_rgba = Image.fromarray(rgba[0].permute(1, 2, 0).numpy(), mode="RGBA")
    pil_gray = Image.fromarray(gray[0, 0].numpy(), mode="L")
    _close(encoder.score(pil_rgba, PROMPTS[0]), encoder.score(images[0], PROMPTS[0]))
    _close(encoder.score(pil_gray, PROMPTS[0]), encoder.score(gray[0], PROMPTS[0]))


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.zeros(3, 64, 64, 2), r"\(N, C, H, W\) with C in \(1, 3, 4\) but got \(3, 64, 64, 2\)"),
        ([torch.zeros(64, 64)], r"\(C, H, W\) at position 0 but got \(64, 64\)"),
        (torch.zeros(2, 5, 8, 8), r"C in \(1, 3, 4\) but got \(2, 5, 8, 8\)"),
        (torch.zeros(2, 8, 8, 3), "channels-last"),
        (torch.zeros(1, 2, 3, 8, 8), r"got \(1, 2, 3, 8, 8\)"),
        (torch.zeros(0, 3, 8, 8, dtype=torch.uint8), "zero images"),
        ([], "zero images"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.int32), "dtype"),
        (np.zeros((8, 8, 5), dtype=np.uint8), "C in"),
        ("image.png", "Expected images as a tensor"),
    ],
)
def test_bad_shapes_and_types(bad, message):
    with pytest.raises(ValueError, match=message):
        standardize_images(bad)


def test_float_out_of_range_suggests_value_range():
    with pytest.raises(ValueError, match=r"values in \[-1, 1\]; did you mean value_range=\(-1, 1\)"):
        standardize_images(torch.linspace(-1, 1, 3 * 8 * 8).view(1, 3, 8, 8))
    with pytest.raises(ValueError, match="uint8 images or value_range=\\(0, 255\\)"):
        standardize_images(torch.full((1, 3, 8, 8), 200.0))
    with pytest.raises(ValueError, match="clamping"):
        standardize_images(torch.full((1, 3, 8, 8), 300.0), value_range=(-1, 1))


def test_nan_and_inf_are_refused():
    for value in (float("nan"), float("inf")):
        images = torch.zeros(1, 3, 8, 8)
        images[0, 0, 0, 0] = value
        with pytest.raises(ValueError, match="NaN or Inf"):
            standardize_images(images)


def test_small_overshoot_is_clamped_not_refused():
    images = torch.full((1, 3, 4, 4), 1.0005)
    (batch,) = standardize_images(images)
    assert batch.max() == 1.0


@pytest.mark.parametrize("value_range", [(1, 0), (0,), "01", None])
def test_bad_value_range(value_range):
    with pytest.raises(ValueError, match="value_range"):
        standardize_images(torch.zeros(1, 3, 4, 4), value_range=value_range)


def test_transform_output_size_follows_hugging_face_rounding():
    transform = ImageTransform(224, None, (224, 224), (0, 0, 0), (1, 1, 1))
    assert transform.output_size(512, 768) == (224, 336)
    assert transform.output_size(333, 200) == (372, 224)
    squared = ImageTransform(None, (64, 64), None, (0, 0, 0), (1, 1, 1))
    assert squared.output_size(10, 500) == (64, 64)
