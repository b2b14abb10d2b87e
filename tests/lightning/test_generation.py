"""``DiffusersGenerator`` against a real (tiny, randomly initialised) diffusers pipeline.

The pipeline is a ``StableDiffusionPipeline`` assembled from configs: a two-block UNet, a
two-block VAE, a two-layer CLIP text encoder and the real CLIP tokenizer shipped in
``clip_metric/demos/assets/tiny-clip``. Nothing is downloaded. Images are 32x32 from 2 DDIM steps.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch

from clip_metric import ClipEncoder, ClipScoreCallback, DiffusersGenerator
from clip_metric.prompts import load_prompt_library
pytest.importorskip("diffusers")

from _helpers.diffusion import SIZE, TinyDiffusionModule, build_tiny_pipeline  # noqa: E402

PROMPTS = ["a photo of a cat", "two green squares", "a bowl of soup"]
STEPS = 2


@pytest.fixture(scope="module")
def module():
    return TinyDiffusionModule(build_tiny_pipeline())


@pytest.fixture(scope="module")
def generate():
    return DiffusersGenerator("pipeline", num_inference_steps=STEPS, height=SIZE, width=SIZE)


@pytest.fixture(scope="module")
def images(module, generate):
    return generate(module, PROMPTS, [11, 22, 33])


def test_images_are_float_in_unit_range(images):
    assert images.shape == (len(PROMPTS), 3, SIZE, SIZE)
    assert images.dtype == torch.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert images.std() > 0.01  # not a constant image


def test_same_seeds_same_images_different_seeds_different(module, generate, images):
    again = generate(module, PROMPTS, [11, 22, 33])
    assert torch.equal(again, images)
    other = generate(module, PROMPTS, [11, 22, 34])
    assert torch.equal(other[:2], images[:2])  # per-prompt generators: the other prompts are unchanged
    assert (other[2] - images[2]).abs().max() > 0.05


def test_seed_follows_the_prompt_not_the_batch_position(module, generate, images):
    # The initial noise of each prompt is bit-identical whether it is rendered alone or in a batch
    # (one generator per prompt). The denoising networks, however, run batched CPU kernels whose
    # reduction order depends on the batch size, so outputs agree to float rounding (observed
    # ~4e-7), not bit for bit.
    for index in range(len(PROMPTS)):
        alone = generate(module, PROMPTS[index : index + 1], [[11, 22, 33][index]])
        torch.testing.assert_close(alone[0], images[index], atol=1e-4, rtol=0)
    reordered = generate(module, PROMPTS[::-1], [33, 22, 11])
    torch.testing.assert_close(reordered.flip(0), images, atol=1e-4, rtol=0)


def test_method_returning_the_pipeline(module, images):
    generate = DiffusersGenerator("build_pipeline", num_inference_steps=STEPS, height=SIZE, width=SIZE)
    assert torch.equal(generate(module, PROMPTS, [11, 22, 33]), images)


def test_generators_on_the_pipeline_device(module, images):
    generate = DiffusersGenerator(num_inference_steps=STEPS, height=SIZE, width=SIZE, generator_device=None)
    assert torch.equal(generate(module, PROMPTS, [11, 22, 33]), images)  # the pipeline is on the CPU here


def test_progress_bar_settings_are_given_back(module, generate):
    module.pipeline.set_progress_bar_config(leave=False, desc="mine")
    try:
        generate(module, PROMPTS[:1], [1])
        assert module.pipeline._progress_bar_config == {"leave": False, "desc": "mine"}
    finally:
        module.pipeline.set_progress_bar_config()


def test_missing_or_empty_attribute_is_a_clear_error(module, generate):
    with pytest.raises(AttributeError, match="TinyDiffusionModule has no attribute 'pipe' holding a diffusers"):
        DiffusersGenerator("pipe")(module, PROMPTS, [1, 2, 3])

    class Empty(pl.LightningModule):
        pipeline = None

    with pytest.raises(AttributeError, match=r"`Empty.pipeline` is None"):
        generate(Empty(), PROMPTS, [1, 2, 3])
    with pytest.raises(TypeError, match="to be a diffusers pipeline but got int"):
        DiffusersGenerator("batch_size")(type("M", (), {"batch_size": 3})(), PROMPTS, [1, 2, 3])
    with pytest.raises(ValueError, match="one seed per prompt"):
        generate(module, PROMPTS, [1, 2])


@pytest.mark.parametrize("steps", [0, -1, 2.5, "2", True, None])
def test_bad_num_inference_steps(steps):
    with pytest.raises(ValueError, match="num_inference_steps"):
        DiffusersGenerator("pipeline", num_inference_steps=steps)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"generator": None}, "`generator` is set by DiffusersGenerator"),
        ({"output_type": "pil"}, "`output_type` is set by DiffusersGenerator"),
        ({"prompt": "x"}, "`prompt` is set by DiffusersGenerator"),
        ({"latents": None}, "`latents` is set by DiffusersGenerator"),
        ({"num_images_per_prompt": 2}, "num_images_per_prompt"),
    ],
)
def test_reserved_pipeline_kwargs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DiffusersGenerator("pipeline", **kwargs)


def test_pipeline_must_be_an_attribute_name(module):
    with pytest.raises(TypeError, match="name of the module attribute"):
        DiffusersGenerator(module.pipeline)


def test_pipeline_kwargs_reach_the_pipeline(module, images):
    generate = DiffusersGenerator(
        "pipeline", num_inference_steps=STEPS, height=SIZE, width=SIZE, guidance_scale=1.0, return_dict=False
    )
    unguided = generate(module, PROMPTS, [11, 22, 33])  # return_dict=False: a tuple, first item taken
    assert unguided.shape == images.shape
    assert not torch.allclose(unguided, images, atol=1e-3)  # no classifier-free guidance: other images


def test_as_generate_fn_of_the_callback(tmp_path, module, generate, images, tiny_clip_dir):
    callback = ClipScoreCallback(
        tiny_clip_dir, prompts=PROMPTS, generate_fn=generate, batch_size=2, precision="32", report_to="none"
    )
    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        logger=False,
        callbacks=[callback],
        limit_val_batches=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    (results,) = trainer.validate(module)
    assert results["clip/count"] == len(PROMPTS)
    assert not math.isnan(results["clip/mean"])

    # The callback's seeds come from the prompt texts; its mean is the score of those images.
    seeds = [prompt.seed for prompt in load_prompt_library(PROMPTS)]
    encoder = ClipEncoder.from_pretrained(tiny_clip_dir, precision="32")
    expected = encoder.score(generate(module, PROMPTS, seeds), PROMPTS)
    assert results["clip/mean"] == pytest.approx(float(expected.mean()), abs=1e-4)


def test_a_callback_run_records_how_its_images_were_rendered(tmp_path, module, tiny_clip_dir, caplog):
    from clip_metric.records import read_scores

    def run(steps: int):
        callback = ClipScoreCallback(
            tiny_clip_dir, prompts=PROMPTS, batch_size=3, precision="32", report_to="none",
            scores_dir=tmp_path / f"steps{steps}",
            generate_fn=DiffusersGenerator("pipeline", num_inference_steps=steps, height=SIZE, width=SIZE),
        )
        trainer = pl.Trainer(default_root_dir=tmp_path, logger=False, callbacks=[callback], limit_val_batches=1,
                             enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1)
        with caplog.at_level("INFO", logger="clip_metric"):
            trainer.validate(module)
            trainer.validate(module)  # the second evaluation pairs with the first
        # step-00000000.jsonl, then step-00000000-1.jsonl: the written order, not the sorted names
        files = sorted((tmp_path / f"steps{steps}").rglob("step-*.jsonl"), key=lambda p: (len(p.name), p.name))
        return callback, [read_scores(path) for path in files]

    callback, (first, second) = run(STEPS)
    assert first.header["rendering"]["num_inference_steps"] == STEPS
    assert f"steps{STEPS}" in callback.signature.rendering
    assert second.header["paired_with"]["step"] == first.header["step"]
    assert any(f"pairs with step {first.header['step']}" in r.getMessage() or
               f"with step {first.header['step']}" in r.getMessage() for r in caplog.records), caplog.text
    other, _ = run(STEPS + 1)
    assert other.signature.differences(callback.signature) == [
        f"rendering: {other.signature.rendering} vs {callback.signature.rendering}"
    ]
