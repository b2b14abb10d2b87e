"""The callback on two CPU processes (Lightning ddp_spawn, gloo) gives the single-process values."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest

from clip_metric import ClipScoreCallback
from _helpers.t2i import TinyTextToImage

PROMPTS = [f"a {c} {s} on a {b} background" for c, s, b in
           [("red", "circle", "blue"), ("green", "square", "white"), ("yellow", "star", "black"),
            ("purple", "triangle", "grey"), ("orange", "circle", "green"), ("blue", "square", "red"),
            ("white", "star", "purple")]]


def _validate(tmp_path, model_dir, prompts, devices):
    pl.seed_everything(0)
    module = TinyTextToImage()
    callback = ClipScoreCallback(model_dir, prompts=prompts, batch_size=2, precision="32", num_logged_images=2)
    trainer = pl.Trainer(
        default_root_dir=tmp_path, accelerator="cpu", devices=devices, callbacks=[callback],
        strategy="ddp_spawn" if devices > 1 else "auto", logger=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=1,
    )
    (results,) = trainer.validate(module)
    return results


@pytest.mark.slow
@pytest.mark.parametrize("n_prompts", [7, 1], ids=["uneven-shards", "rank-without-prompts"])
def test_two_processes_match_one(tmp_path, tiny_clip_dir, n_prompts):
    prompts = PROMPTS[:n_prompts]
    single = _validate(tmp_path / "single", tiny_clip_dir, prompts, devices=1)
    double = _validate(tmp_path / "ddp", tiny_clip_dir, prompts, devices=2)
    keys = [k for k in single if k.startswith("clip/")]
    assert {"clip/mean", "clip/min", "clip/max", "clip/std", "clip/count"} <= set(keys)
    assert single["clip/count"] == double["clip/count"] == n_prompts
    for key in keys:
        assert double[key] == pytest.approx(single[key], abs=1e-5), key
