"""The input contract: every accepted form gives the same scores, every bad one a clear error."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import transformers
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
    # uint8 is divided by 255 and resized on the float path: the same pixels.
    _close(encoder.score(images, PROMPTS), reference, atol=1e-6)
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
    opaque = torch.cat([images, torch.full_like(images[:, :1], 255)], dim=1)
    _close(encoder.score(opaque, PROMPTS), encoder.score(images, PROMPTS))
    # Transparent pixels are white, as the Hugging Face processor composites them.
    clear = torch.cat([images, torch.zeros_like(images[:, :1])], dim=1)
    _close(encoder.score(clear, PROMPTS), encoder.score(torch.full_like(images, 255), PROMPTS))
    pil_rgba = Image.fromarray(opaque[0].permute(1, 2, 0).numpy(), mode="RGBA")
    pil_gray = Image.fromarray(gray[0, 0].numpy(), mode="L")
    _close(encoder.score(pil_rgba, PROMPTS[0]), encoder.score(images[0], PROMPTS[0]))
    _close(encoder.score(pil_gray, PROMPTS[0]), encoder.score(gray[0], PROMPTS[0]))


def test_rgba_is_composited_onto_white_like_the_hugging_face_processor():
    from transformers.image_transforms import convert_to_rgb

    rgba = np.random.default_rng(0).integers(0, 256, (24, 20, 4), dtype=np.uint8)
    white = Image.new("RGBA", (20, 24), (255, 255, 255, 255))
    reference = np.asarray(Image.alpha_composite(white, Image.fromarray(rgba, mode="RGBA")).convert("RGB"))
    if transformers.__version__ >= "5":  # the processor's own conversion (4.x dropped the alpha channel)
        assert np.array_equal(convert_to_rgb(Image.fromarray(rgba, mode="RGBA"), return_numpy=True), reference)
    for given in (Image.fromarray(rgba, mode="RGBA"), rgba, torch.from_numpy(rgba).permute(2, 0, 1)):
        (ours,) = standardize_images(given, keep_uint8=True)
        assert np.array_equal(ours[0].permute(1, 2, 0).numpy(), reference)
    floats = torch.from_numpy(rgba).permute(2, 0, 1).float() / 255
    (ours,) = standardize_images(floats)
    assert (ours[0].permute(1, 2, 0) * 255 - torch.from_numpy(reference).float()).abs().max() < 0.51


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint16, torch.uint32])
def test_integer_tensors_in_0_255_count_as_uint8(dtype):
    images = torch.randint(0, 128, (2, 3, 8, 8), generator=torch.Generator().manual_seed(0))
    (expected,) = standardize_images(images.to(torch.uint8))
    (got,) = standardize_images(images.to(dtype))
    assert torch.equal(got, expected)


def test_integers_outside_0_255_are_refused_with_their_range():
    with pytest.raises(ValueError, match=r"values in 0-255 but got values in \[-3, 300\]"):
        standardize_images(torch.tensor([-3, 300] * 96).view(2, 3, 4, 8))


def test_16_bit_pil_images_are_rounded_to_8_bits():
    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    image = Image.fromarray(ramp)
    (got,) = standardize_images(image, keep_uint8=True)
    expected = np.round(ramp.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert np.array_equal(got[0, 0].numpy(), expected) and got.shape == (1, 3, 32, 32)


def test_float_pil_images_follow_value_range():
    image = Image.fromarray(np.full((8, 8), 0.25, dtype=np.float32), mode="F")
    (got,) = standardize_images(image)
    assert torch.allclose(got, torch.full((1, 3, 8, 8), 0.25))
    with pytest.raises(ValueError, match="value_range"):
        standardize_images(Image.fromarray(np.full((8, 8), 200.0, dtype=np.float32), mode="F"))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: torch.zeros(2, 3, 8, 8, device="meta"), "meta device"),
        (lambda: torch.zeros(2, 3, 8, 8).to_sparse(), "dense"),
        (lambda: torch.nested.nested_tensor([torch.zeros(3, 8, 8), torch.zeros(3, 8, 9)]), "nested"),
        (lambda: [torch.zeros(3, 8, 8, device="meta")], "meta device"),
    ],
)
def test_tensors_without_readable_pixels_are_refused(make, message):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the nested-tensor prototype warning
        bad = make()
    with pytest.raises(ValueError, match=message):
        standardize_images(bad)


def test_extreme_aspect_ratio_resizes_only_the_kept_window():
    import clip_metric.images as images_module

    transform = ImageTransform(32, None, (32, 32), (0.5,) * 3, (0.5,) * 3, "bicubic")
    image = torch.randint(0, 256, (1, 3, 5, 9000), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    limit = images_module._MAX_RESIZED_PIXELS
    try:
        images_module._MAX_RESIZED_PIXELS = 10**12
        whole = transform(image)
        images_module._MAX_RESIZED_PIXELS = 1024
        window = transform(image)
    finally:
        images_module._MAX_RESIZED_PIXELS = limit
    assert torch.equal(window, whole)


def test_a_tiny_file_cannot_demand_gigabytes():
    transform = ImageTransform(224, None, (224, 224), (0.5,) * 3, (0.5,) * 3, "bicubic")
    out = transform(torch.zeros(1, 3, 1, 1_000_000, dtype=torch.uint8))  # 5e10 pixels if resized whole
    assert out.shape == (1, 3, 224, 224)


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.zeros(3, 64, 64, 2), r"\(N, C, H, W\) with C in \(1, 3, 4\) but got \(3, 64, 64, 2\)"),
        ([torch.zeros(64, 64)], r"\(C, H, W\) at position 0 but got \(64, 64\)"),
        (torch.zeros(2, 5, 8, 8), r"C in \(1, 3, 4\) but got \(2, 5, 8, 8\)"),
        (torch.zeros(2, 8, 8, 3), "channels-last"),
        (torch.zeros(1, 2, 3, 8, 8), r"shape \(N, C, H, W\) or one image \(C, H, W\) but got shape \(1, 2, 3, 8, 8\)"),
        (torch.zeros(0, 3, 8, 8, dtype=torch.uint8), "zero images"),
        ([], "zero images"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.bool), "dtype"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.complex64), "dtype"),
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


@pytest.mark.parametrize("value_range", [(1, 0), (0,), "01", None, (0, float("inf")), (float("-inf"), float("inf")), (float("nan"), 1)])
def test_bad_value_range(value_range):
    with pytest.raises(ValueError, match="value_range"):
        standardize_images(torch.zeros(1, 3, 4, 4), value_range=value_range)


def test_transform_output_size_follows_hugging_face_rounding():
    transform = ImageTransform(224, None, (224, 224), (0, 0, 0), (1, 1, 1))
    assert transform.output_size(512, 768) == (224, 336)
    assert transform.output_size(333, 200) == (372, 224)
    squared = ImageTransform(None, (64, 64), None, (0, 0, 0), (1, 1, 1))
    assert squared.output_size(10, 500) == (64, 64)
