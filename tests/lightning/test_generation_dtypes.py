"""``DiffusersGenerator`` with pipelines whose components hold different dtypes (mixed-precision fine-tunes)."""

from __future__ import annotations

import pytest
import torch

from clip_metric import DiffusersGenerator

pytest.importorskip("diffusers")
pytest.importorskip("accelerate")

from _helpers.diffusion import SIZE, build_tiny_pipeline, mixed_precision_pipeline  # noqa: E402

PROMPTS = ["a photo of a cat", "two green squares"]
SEEDS = [11, 22]


def _render(pipeline):
    return DiffusersGenerator(num_inference_steps=2, height=SIZE, width=SIZE).bind(pipeline)(PROMPTS, SEEDS)


@pytest.mark.parametrize("dtype", [torch.bfloat16, pytest.param(torch.float16, marks=pytest.mark.slow)], ids=str)
def test_a_mixed_precision_pipeline_renders_under_its_half_dtype(dtype):
    images = _render(mixed_precision_pipeline(dtype))
    assert images.shape == (2, 3, SIZE, SIZE) and torch.isfinite(images.float()).all()
    # What diffusers' own validation does: the pipeline call under an autocast of that dtype.
    pipeline = mixed_precision_pipeline(dtype)
    generators = [torch.Generator().manual_seed(s) for s in SEEDS]
    with torch.autocast("cpu", dtype=dtype):
        expected = pipeline(prompt=PROMPTS, generator=generators, num_inference_steps=2, height=SIZE, width=SIZE,
                            output_type="pt").images
    torch.testing.assert_close(images, expected, atol=0, rtol=0)
    # A pipeline of one dtype is called as it is, under no autocast of the generator's.
    plain = build_tiny_pipeline()
    generators = [torch.Generator().manual_seed(s) for s in SEEDS]
    direct = plain(prompt=PROMPTS, generator=generators, num_inference_steps=2, height=SIZE, width=SIZE,
                   output_type="pt").images
    torch.testing.assert_close(_render(plain), direct, atol=0, rtol=0)

