"""The callback scores in its own precision when the caller runs the trainer under an autocast."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from clip_metric import ClipScoreCallback
from clip_metric.demos.tiny_clip import embedded_model_path
from _helpers.t2i import TinyTextToImage

PROMPTS = ["a red circle on a blue background", "two green squares", "a yellow triangle", "a purple line"]


def _noise(pl_module, prompts, seeds):  # the same images under any autocast: only CLIP can move
    return torch.stack([torch.rand(3, 40, 48, generator=torch.Generator().manual_seed(s)) for s in seeds])


def _validate(tmp_path, autocast_dtype=None):
    callback = ClipScoreCallback(embedded_model_path(), prompts=PROMPTS, generate_fn=_noise, precision="32",
                                 save_scores=False, num_logged_images=0)
    trainer = pl.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, accelerator="cpu", devices=1,
                         limit_val_batches=1, callbacks=[callback])
    if autocast_dtype is None:
        trainer.validate(TinyTextToImage())
    else:
        with torch.autocast("cpu", dtype=autocast_dtype):
            trainer.validate(TinyTextToImage())
    return callback.history[-1]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_callback_scores_in_fp32_when_validate_runs_under_an_autocast(tmp_path, dtype):
    expected = _validate(tmp_path / "plain")
    got = _validate(tmp_path / "autocast", dtype)
    for key in ("clip/mean", "clip/min", "clip/max", "clip/std"):
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key
