"""The callback with Lightning's WandbLogger, offline: scalars, the per-prompt table and image grids."""

from __future__ import annotations

import json

import lightning.pytorch as pl
import pytest

from clip_metric import ClipScoreCallback
from _helpers.t2i import TinyTextToImage

wandb = pytest.importorskip("wandb")


def test_wandb_logger_gets_scalars_table_and_images(tmp_path, tiny_clip_dir, monkeypatch):
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = WandbLogger(offline=True, save_dir=str(tmp_path), project="clip-metric-test")
    prompts = ["a cat", "a dog", "a red car"]
    callback = ClipScoreCallback(tiny_clip_dir, prompts=prompts, precision="32", num_logged_images=2,
                                 report_to="wandb")
    trainer = pl.Trainer(default_root_dir=tmp_path, logger=logger, callbacks=[callback], enable_progress_bar=False,
                         limit_val_batches=1)
    try:
        (results,) = trainer.validate(TinyTextToImage())
        signature = logger.experiment.config["clip/signature"]  # once per run, in the run's config
    finally:
        wandb.finish()
    assert signature == str(callback.signature)
    assert results["clip/count"] == 3
    # Score files go beside this run's W&B files: under the logger's save_dir, project and run id.
    assert callback.resolved_scores_dir == tmp_path / "clip-metric-test" / logger.version / "clip_scores"
    assert len(list(callback.resolved_scores_dir.glob("step-*.jsonl"))) == 1
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    (table,) = run.rglob("per_prompt*.table.json")
    data = json.loads(table.read_text())
    assert data["columns"] == ["prompt_id", "prompt", "category", "seed", "score"]
    assert sorted(row[1] for row in data["data"]) == sorted(prompts)
    assert {p.name.split("_")[0] for p in run.rglob("media/images/clip/*.png")} == {"best", "worst"}
