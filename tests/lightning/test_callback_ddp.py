"""The callback on two CPU processes (Lightning ddp_spawn, gloo).

Two processes give the single-process values; results reach the launching process through
``trainer.callback_metrics`` and the score files (not ``callback.history``, which lives in the
workers); only rank 0 prints; a failure on one rank makes every rank raise.
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import transformers

from clip_metric import ClipScoreCallback
from clip_metric.records import read_scores
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
    return results, callback, trainer


@pytest.mark.slow
@pytest.mark.parametrize("n_prompts", [7, 1], ids=["uneven-shards", "rank-without-prompts"])
def test_two_processes_match_one(tmp_path, tiny_clip_dir, n_prompts):
    prompts = PROMPTS[:n_prompts]
    single, _, _ = _validate(tmp_path / "single", tiny_clip_dir, prompts, devices=1)
    double, callback, trainer = _validate(tmp_path / "ddp", tiny_clip_dir, prompts, devices=2)
    keys = [k for k in single if k.startswith("clip/")]
    assert {"clip/mean", "clip/min", "clip/max", "clip/std", "clip/count"} <= set(keys)
    assert single["clip/count"] == double["clip/count"] == n_prompts
    for key in keys:
        assert double[key] == pytest.approx(single[key], abs=1e-5, nan_ok=True), key

    # In the launching process: no history (it lives in the workers), but the callback metrics
    # and rank 0's score file.
    assert callback.history == []
    assert float(trainer.callback_metrics["clip/mean"]) == pytest.approx(double["clip/mean"], abs=1e-6)
    (path,) = (tmp_path / "ddp").rglob("step-*.jsonl")
    rows = read_scores(path).records
    assert [r.prompt for r in rows] == prompts
    assert sum(r.score for r in rows) / n_prompts == pytest.approx(double["clip/mean"], abs=1e-5)


@pytest.mark.slow
def test_fast_dev_run_one_batch_per_rank_and_output_from_rank_zero_only(tmp_path, tiny_clip_dir, capfd):
    callback = ClipScoreCallback(tiny_clip_dir, prompts=PROMPTS, batch_size=2, precision="32", num_logged_images=2)
    trainer = pl.Trainer(
        default_root_dir=tmp_path, accelerator="cpu", devices=2, strategy="ddp_spawn", callbacks=[callback],
        fast_dev_run=True, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(TinyTextToImage())
    output = "".join(capfd.readouterr())  # both workers write to the inherited descriptors

    assert trainer.callback_metrics["clip/count"] == 4  # one batch of two on each rank
    assert not [p for p in tmp_path.rglob("*") if p.suffix == ".jsonl"]
    # Lines and the model's loading bar come from rank 0 alone.
    assert output.count("CLIP scoring 4 prompts at step") == 1 and output.count("CLIP score at step") == 1
    # transformers 5 draws a loading bar (4.x has none): rank 0's alone.
    assert output.count("Loading weights: 100%") == (1 if transformers.__version__ >= "5" else 0)
    # No advice to sync values that are already synced, and no warnings from the image gather.
    assert "self.log('clip/" not in output
    assert "all_gather is deprecated" not in output


def _fails_on_rank_one(pl_module, prompts, seeds):
    if pl_module.global_rank == 1:
        raise RuntimeError("generation broke on rank one")
    return pl_module.generate_images(prompts, seeds)


class RecordsFitStartErrors(ClipScoreCallback):
    """Notes what each rank raised at fit start. Rank 1 waits before raising: were rank 0 left
    waiting in a collective, it would be stopped with rank 1 before noting anything."""

    def __init__(self, *args, record_dir: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.record_dir = record_dir

    def on_fit_start(self, trainer, pl_module):
        try:
            super().on_fit_start(trainer, pl_module)
        except Exception as err:
            Path(self.record_dir, f"rank{trainer.global_rank}.txt").write_text(f"{type(err).__name__}: {err}")
            if trainer.global_rank:
                time.sleep(5)
            raise


@pytest.mark.slow
def test_a_failure_on_one_rank_makes_every_rank_raise(tmp_path, tiny_clip_dir):
    callback = RecordsFitStartErrors(
        tiny_clip_dir, prompts=PROMPTS[:2], generate_fn=_fails_on_rank_one, precision="32", record_dir=str(tmp_path)
    )
    trainer = pl.Trainer(
        default_root_dir=tmp_path, accelerator="cpu", devices=2, strategy="ddp_spawn", callbacks=[callback],
        max_epochs=1, limit_train_batches=1, limit_val_batches=1, logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )
    with pytest.raises(Exception, match="failed on 1 other rank"):
        trainer.fit(TinyTextToImage())
    assert (tmp_path / "rank1.txt").read_text() == "RuntimeError: generation broke on rank one"
    assert (tmp_path / "rank0.txt").read_text() == (
        "OtherRankError: ClipScoreCallback: the generate-and-score check at fit start failed on 1 other rank(s) "
        "(rank 1: RuntimeError: generation broke on rank one); see their logs for the traceback"
    )
