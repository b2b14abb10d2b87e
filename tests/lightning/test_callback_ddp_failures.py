"""A rank that fails in the middle of an evaluation, on two CPU processes (ddp_spawn, gloo).

Whichever rank's error the launcher shows (the first process to exit), ``fit()`` must raise
with the failing rank's own error visible, promptly, and the files of earlier evaluations must
stay as they were.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest

from clip_metric import ClipScoreCallback
from clip_metric.records import read_scores
from _helpers.t2i import TinyTextToImage

PROMPTS = [f"a {c} {s}" for c in ("red", "green", "blue") for s in ("circle", "square")] + ["a white star"]
STEPS_PER_EPOCH = 2


def _fails_on_rank_one_in_the_second_evaluation(pl_module, prompts, seeds):
    """Rank 1 breaks on its second batch of the evaluation after the second epoch."""
    if pl_module.global_rank == 1 and pl_module.trainer.global_step == 2 * STEPS_PER_EPOCH:
        pl_module.batches_in_second_evaluation = getattr(pl_module, "batches_in_second_evaluation", 0) + 1
        if pl_module.batches_in_second_evaluation == 2:
            raise RuntimeError("generation broke on rank one")
    return pl_module.generate_images(prompts, seeds)


def _has_exited(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return False  # not written yet
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # exited, not yet reaped by the launcher


class FailingRankExitsLast(ClipScoreCallback):
    """Rank 1 lingers after its error until rank 0 has exited, so the launcher shows rank 0's
    error: the case where the cause was lost."""

    def __init__(self, *args, pid_file: Path, **kwargs):
        super().__init__(*args, **kwargs)
        self.pid_file = pid_file

    def on_exception(self, trainer, pl_module, exception):
        if trainer.global_rank == 0:
            self.pid_file.write_text(str(os.getpid()))
            return
        deadline = time.monotonic() + 120
        while not _has_exited(self.pid_file) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2)  # the launcher reaps rank 0 first


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="tells an exited process by /proc")
def test_a_rank_failing_mid_evaluation_shows_its_error_in_fit_and_keeps_earlier_files(tmp_path, tiny_clip_dir):
    callback = FailingRankExitsLast(
        tiny_clip_dir, prompts=PROMPTS, batch_size=1, precision="32",
        generate_fn=_fails_on_rank_one_in_the_second_evaluation, scores_dir=tmp_path / "scores",
        pid_file=tmp_path / "rank0.pid",
    )
    trainer = pl.Trainer(
        default_root_dir=tmp_path, accelerator="cpu", devices=2, strategy="ddp_spawn", callbacks=[callback],
        max_epochs=3, limit_train_batches=STEPS_PER_EPOCH, limit_val_batches=1, num_sanity_val_steps=0,
        logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )
    started = time.monotonic()
    with pytest.raises(Exception) as raised:
        trainer.fit(TinyTextToImage())
    assert time.monotonic() - started < 300  # no rank waited for the other in a collective
    message = str(raised.value)
    assert "generation broke on rank one" in message, message

    # The first evaluation's file is whole; the failed one left nothing.
    assert sorted(p.name for p in (tmp_path / "scores").iterdir()) == [f"step-{STEPS_PER_EPOCH:08d}.jsonl"]
    first = read_scores(tmp_path / "scores" / f"step-{STEPS_PER_EPOCH:08d}.jsonl")
    assert first.step == STEPS_PER_EPOCH and [r.prompt for r in first.records] == PROMPTS
