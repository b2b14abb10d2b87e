"""One step number per evaluation: the one ``ModelCheckpoint`` names its checkpoint after.

The score file's name and header, the steps the loggers get (scalars and extras), the log lines,
``callback.history`` and the checkpointed state all carry ``trainer.global_step`` at the hook
where the evaluation runs, whatever the schedule.
"""

from __future__ import annotations

import re

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from clip_metric import ClipScoreCallback
from clip_metric.records import read_scores
from _helpers.t2i import TinyTextToImage

PROMPTS = ["a red circle on a blue background", "two green squares", "a yellow triangle at the top"]


def _read_tensorboard(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    return events




@pytest.mark.parametrize(
    ("callback_kwargs", "trainer_kwargs", "checkpoint_kwargs", "expected"),
    [
        pytest.param({}, {"max_epochs": 2, "limit_train_batches": 4}, {}, [4, 8], id="epoch-end"),
        pytest.param({}, {"max_epochs": 1, "limit_train_batches": 4, "val_check_interval": 2}, {}, [2, 4],
                     id="mid-epoch-validation"),
        pytest.param({"every_n_train_steps": 2}, {"max_epochs": 2, "limit_train_batches": 4,
                                                  "accumulate_grad_batches": 2},
                     {"every_n_train_steps": 2}, [2, 4], id="steps-with-accumulation"),
    ],
)
def test_an_evaluation_carries_the_step_of_the_checkpoint_saved_with_it(
    tmp_path, tiny_clip_dir, info_lines, callback_kwargs, trainer_kwargs, checkpoint_kwargs, expected
):
    callback = ClipScoreCallback(tiny_clip_dir, prompts=PROMPTS, batch_size=2, precision="32", **callback_kwargs)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="clip/mean", mode="max", save_top_k=-1,
                                 **checkpoint_kwargs)
    trainer = pl.Trainer(
        default_root_dir=tmp_path, callbacks=[callback, checkpoint], logger=TensorBoardLogger(tmp_path, name="tb"),
        limit_val_batches=1, num_sanity_val_steps=0, enable_progress_bar=False, enable_model_summary=False,
        accelerator="cpu", devices=1, log_every_n_steps=1, **trainer_kwargs,
    )
    trainer.fit(TinyTextToImage())

    paths = sorted((tmp_path / "ckpt").glob("*.ckpt"))
    assert [int(re.search(r"step=(\d+)", p.name).group(1)) for p in paths] == expected
    assert [h["step"] for h in callback.history] == expected
    files = sorted(callback.resolved_scores_dir.glob("step-*.jsonl"))
    assert [f.name for f in files] == [f"step-{s:08d}.jsonl" for s in expected]
    assert [read_scores(f).step for f in files] == expected
    events = _read_tensorboard(trainer.logger.log_dir)
    assert [s.step for s in events.Scalars("clip/mean")] == expected
    assert [h.step for h in events.Histograms("clip/scores")] == expected
    assert [line.split()[4].rstrip(":") for line in info_lines if line.startswith("CLIP score at step")] == [
        str(s) for s in expected
    ]
    # Each checkpoint holds the evaluation of its own step as the last one.
    for path, step in zip(paths, expected):
        (state,) = [v for k, v in torch.load(path, weights_only=False)["callbacks"].items() if "ClipScore" in k]
        assert state["last_step_evaluated"] == state["history"][-1]["step"] == step
        assert read_scores(state["previous_scores_file"]).step == step
    assert callback.state_dict()["last_step_evaluated"] == expected[-1]


def test_validate_and_test_log_at_the_trainers_step_and_return_the_values(tmp_path, tiny_clip_dir):
    callback = ClipScoreCallback(tiny_clip_dir, prompts=PROMPTS, batch_size=2, precision="32")
    trainer = pl.Trainer(
        default_root_dir=tmp_path, callbacks=[callback], logger=TensorBoardLogger(tmp_path, name="tb"),
        max_epochs=1, limit_train_batches=3, limit_val_batches=1, num_sanity_val_steps=0, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, accelerator="cpu", devices=1,
    )
    module = TinyTextToImage()
    (before,) = trainer.validate(module, verbose=False)
    trainer.fit(module)
    (after,) = trainer.validate(module, verbose=False)
    assert "clip/mean" in before and "clip/mean" in after
    assert [h["step"] for h in callback.history] == [0, 3, 3]
    events = _read_tensorboard(trainer.logger.log_dir)
    assert [s.step for s in events.Scalars("clip/mean")] == [0, 3, 3]
    assert [s.value for s in events.Scalars("clip/mean")][-1] == pytest.approx(after["clip/mean"], abs=1e-6)
