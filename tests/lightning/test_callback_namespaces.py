"""The callback under both Lightning namespaces: ``lightning.pytorch`` and ``pytorch_lightning``.

``pip install lightning`` installs both, as two copies of one code base; many Stable Diffusion
training scripts use ``import pytorch_lightning as pl``. The callback must run in a Trainer of
either, read that Trainer's own callbacks, loggers and progress bar, and pass either Trainer's
``isinstance(callback, Callback)``.
"""

from __future__ import annotations

import re
import subprocess
import sys

import lightning.pytorch
import pytest
import pytorch_lightning
import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException as StandaloneMisconfiguration
from torch.utils.data import DataLoader, TensorDataset

from clip_metric import ClipScoreCallback
from clip_metric.records import read_scores
from _helpers.t2i import SIZE, TinyTextToImage

PROMPTS = ["a red circle on a blue background", "two green squares", "a yellow triangle at the top"]


class StandaloneTextToImage(pytorch_lightning.LightningModule):
    """``TinyTextToImage`` as a ``pytorch_lightning`` module (the same methods, the other base)."""

    def __init__(self, lr: float = 0.05):
        super().__init__()
        self.save_hyperparameters()
        self.embed = torch.nn.EmbeddingBag(512, 16, mode="mean")
        self.dropout = torch.nn.Dropout(0.1)
        self.decoder = torch.nn.Linear(16, 3 * SIZE * SIZE)
        self.generate_calls: list[tuple[bool, bool]] = []

    render = TinyTextToImage.render
    generate_images = TinyTextToImage.generate_images
    training_step = TinyTextToImage.training_step
    validation_step = TinyTextToImage.validation_step
    configure_optimizers = TinyTextToImage.configure_optimizers
    train_dataloader = TinyTextToImage.train_dataloader
    val_dataloader = TinyTextToImage.val_dataloader


class StandaloneWithoutValidation(pytorch_lightning.LightningModule):
    def __init__(self):
        super().__init__()
        self.decoder = torch.nn.Linear(4, 3 * SIZE * SIZE)

    def generate_images(self, prompts, seeds):
        return torch.sigmoid(self.decoder(torch.ones(len(prompts), 4))).view(-1, 3, SIZE, SIZE)

    def training_step(self, batch, batch_idx):
        return self.decoder(batch[0].repeat(1, 4)).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.arange(8.0).view(8, 1)), batch_size=4)


def _standalone_trainer(tmp_path, callbacks, **kwargs):
    defaults = dict(
        default_root_dir=tmp_path, max_epochs=2, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0,
        logger=pytorch_lightning.loggers.TensorBoardLogger(tmp_path, name="tb"), enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", devices=1,
    )
    defaults.update(kwargs)
    return pytorch_lightning.Trainer(callbacks=callbacks, **defaults)


def test_the_callback_is_a_callback_of_both_namespaces():
    callback = ClipScoreCallback(enabled=False)
    assert isinstance(callback, lightning.pytorch.Callback) and isinstance(callback, pytorch_lightning.Callback)
    # Either Trainer takes it alone, not only in a list (each wraps a Callback of its own kind).
    for namespace in (lightning.pytorch, pytorch_lightning):
        trainer = namespace.Trainer(callbacks=callback, logger=False, enable_checkpointing=False,
                                    enable_progress_bar=False, enable_model_summary=False)
        assert callback in trainer.callbacks


def test_a_pytorch_lightning_trainer_runs_the_callback_with_its_own_monitors_and_logger(tmp_path, tiny_clip_dir):
    callback = ClipScoreCallback(tiny_clip_dir, prompts=PROMPTS, batch_size=2, precision="32")
    checkpoint = pytorch_lightning.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "ckpt", monitor="clip/mean", mode="max", save_top_k=-1
    )
    stopper = pytorch_lightning.callbacks.EarlyStopping(monitor="clip/mean", mode="max", patience=5)
    trainer = _standalone_trainer(tmp_path, [callback, checkpoint, stopper])
    module = StandaloneTextToImage()
    trainer.fit(module)

    assert [h["step"] for h in callback.history] == [2, 4]
    assert module.generate_calls and all(call == (False, False) for call in module.generate_calls)
    # The monitors of pytorch_lightning saw every evaluation.
    saved = sorted(int(re.search(r"step=(\d+)", p.name).group(1)) for p in (tmp_path / "ckpt").glob("*.ckpt"))
    assert saved == [2, 4]
    assert sorted(float(v) for v in checkpoint.best_k_models.values()) == pytest.approx(
        sorted(h["clip/mean"] for h in callback.history), abs=1e-6
    )
    # Score files beside pytorch_lightning's TensorBoard logs, and the extras in them.
    files = sorted(callback.resolved_scores_dir.glob("step-*.jsonl"))
    assert callback.resolved_scores_dir.parent == tmp_path / "tb" / "version_0"
    assert [read_scores(f).step for f in files] == [2, 4]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trainer.logger.log_dir), size_guidance={"histograms": 0, "scalars": 0})
    events.Reload()
    assert [h.step for h in events.Histograms("clip/scores")] == [2, 4]
    assert [s.step for s in events.Scalars("clip/mean")] == [2, 4]


def test_a_monitor_that_cannot_see_fresh_values_is_refused_under_pytorch_lightning(tmp_path, tiny_clip_dir):
    callback = ClipScoreCallback(tiny_clip_dir, prompts=PROMPTS, precision="32")
    stopper = pytorch_lightning.callbacks.EarlyStopping(monitor="clip/delta", mode="max")
    trainer = _standalone_trainer(tmp_path, [callback, stopper])
    # pytorch_lightning's own exception class (from lightning_fabric), which its users catch.
    with pytest.raises(StandaloneMisconfiguration, match="clip/delta is not logged at the first evaluation"):
        trainer.fit(StandaloneTextToImage())


def test_a_pytorch_lightning_module_without_validation_is_warned_about(tmp_path, tiny_clip_dir):
    callback = ClipScoreCallback(tiny_clip_dir, prompts=PROMPTS, precision="32")
    trainer = _standalone_trainer(tmp_path, [callback], max_epochs=1, limit_val_batches=0, logger=False)
    with pytest.warns(UserWarning, match="has no validation_step"):
        trainer.fit(StandaloneWithoutValidation())
    assert callback.history == []


def test_importing_the_callback_leaves_lightnings_info_logger_where_it_was():
    # The demo and users silence Lightning through the logger of the namespace they use.
    code = (
        "import lightning.pytorch, lightning_utilities.core.rank_zero as r; before = r.log.name; "
        "import clip_metric.lightning; print(before, r.log.name)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["lightning.pytorch.utilities.rank_zero"] * 2


def _validate_standalone(tmp_path, model_dir, devices):
    pytorch_lightning.seed_everything(0)
    callback = ClipScoreCallback(model_dir, prompts=PROMPTS, batch_size=1, precision="32")
    trainer = pytorch_lightning.Trainer(
        default_root_dir=tmp_path, accelerator="cpu", devices=devices, callbacks=[callback],
        strategy="ddp_spawn" if devices > 1 else "auto", logger=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=1,
    )
    (results,) = trainer.validate(StandaloneTextToImage())
    return results


@pytest.mark.slow
def test_two_pytorch_lightning_processes_match_one(tmp_path, tiny_clip_dir):
    single = _validate_standalone(tmp_path / "single", tiny_clip_dir, devices=1)
    double = _validate_standalone(tmp_path / "ddp", tiny_clip_dir, devices=2)
    assert double["clip/count"] == single["clip/count"] == len(PROMPTS)
    assert double["clip/mean"] == pytest.approx(single["clip/mean"], abs=1e-5)
    (path,) = (tmp_path / "ddp").rglob("step-*.jsonl")
    assert [r.prompt for r in read_scores(path).records] == PROMPTS


def test_pytorch_lightnings_cli_takes_the_callback_from_a_class_path(tmp_path, tiny_clip_dir):
    pytest.importorskip("jsonargparse")
    from pytorch_lightning.cli import LightningCLI

    args = [
        "--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.accelerator=cpu",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.callbacks+=clip_metric.ClipScoreCallback",
        f"--trainer.callbacks.model_name_or_path={tiny_clip_dir}", "--trainer.callbacks.precision=32",
        f"--trainer.callbacks.prompts={PROMPTS!r}",
    ]
    with pytest.warns(UserWarning, match="args parameter"):  # pytest's own sys.argv is set too
        cli = LightningCLI(StandaloneTextToImage, run=False, args=args, save_config_callback=None)
    (callback,) = [c for c in cli.trainer.callbacks if isinstance(c, ClipScoreCallback)]
    assert [p.text for p in callback.prompt_library] == PROMPTS
