"""``ClipScoreCallback`` follows Lightning's conventions, checked through real ``Trainer`` runs.

One section per behaviour: the precision context of generation, progress and result lines,
failures before the first training step, schedules that monitors can rely on, several callbacks
in one Trainer, ``fast_dev_run``, where score files go, ``trainer.test()``, checkpoint names,
``from_config`` keys, the score scale and the argument checks. Multi-process behaviour is in
``test_callback_ddp.py``.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import re
import warnings
from datetime import timedelta
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader

from clip_metric import ClipEncoder, ClipScoreCallback
from clip_metric.demos import shapes
from clip_metric.demos.tiny_clip import embedded_model_path
from clip_metric.prompts import load_prompt_library
from clip_metric.records import read_scores
from _helpers.t2i import TinyTextToImage

PROMPTS = ["a red circle on a blue background", "two green squares", "a photo of a cat", "a bowl of soup"]


class CountingModule(TinyTextToImage):
    """Counts training steps, to tell whether a failure came before the first one."""

    def __init__(self) -> None:
        super().__init__()
        self.training_steps = 0

    def training_step(self, batch, batch_idx):
        self.training_steps += 1
        return super().training_step(batch, batch_idx)


class FirstStepReached(Exception):
    pass


class NoValidationStep(CountingModule):
    validation_step = pl.LightningModule.validation_step  # Lightning's own: not overridden


class EndlessData(TinyTextToImage):
    """Training data without a length: the first epoch never ends."""

    def train_dataloader(self):
        class Endless(torch.utils.data.IterableDataset):
            def __iter__(self):
                while True:
                    yield (torch.zeros(1),)

        return DataLoader(Endless(), batch_size=4)


class WithTestLoop(TinyTextToImage):
    def test_step(self, batch, batch_idx):
        (x,) = batch
        self.log("test_loss", self.render(["a blue square"], 0.0).mean() + 0.0 * x.sum())

    def test_dataloader(self):
        return self.val_dataloader()


def _trainer(tmp_path, callbacks, **kwargs) -> pl.Trainer:
    defaults = dict(
        default_root_dir=tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0,
        logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        accelerator="cpu", devices=1,
    )
    defaults.update(kwargs)
    return pl.Trainer(callbacks=list(callbacks), **defaults)


def _callback(model_dir, **kwargs) -> ClipScoreCallback:
    kwargs.setdefault("prompts", PROMPTS[:3])
    kwargs.setdefault("precision", "32")
    return ClipScoreCallback(model_dir, **kwargs)


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir):
    return ClipEncoder.from_pretrained(tiny_clip_dir, precision="32")




# ---------------------------------------------------------------- precision context
class DocsTextToImage(pl.LightningModule):
    """The module of docs/callback.md, noting the precision context of each call."""

    def __init__(self):
        super().__init__()
        self.decoder = torch.nn.Linear(8, 3 * 32 * 32)
        self.contexts: dict[str, set] = {"generate": set(), "validation": set()}

    def _context(self):
        autocast = torch.is_autocast_enabled("cpu")
        return (
            torch.get_default_dtype(), autocast, torch.get_autocast_dtype("cpu") if autocast else None,
            self.decoder.weight.dtype,
        )

    def generate_images(self, prompts, seeds):
        self.contexts["generate"].add(self._context())
        noise = torch.stack([torch.randn(8, generator=torch.Generator().manual_seed(s)) for s in seeds])
        return torch.sigmoid(self.decoder(noise.to(self.device))).view(-1, 3, 32, 32)

    def training_step(self, batch, batch_idx):
        return self.decoder(batch).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.contexts["validation"].add(self._context())
        self.log("val/loss", self.decoder(batch).pow(2).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.filterwarnings("ignore:You passed `Trainer\\(accelerator='cpu', precision='16-mixed'\\)`")
@pytest.mark.parametrize(
    "precision, expected",
    [
        ("bf16-true", (torch.bfloat16, False, None, torch.bfloat16)),
        ("bf16-mixed", (torch.float32, True, torch.bfloat16, torch.float32)),
        ("16-mixed", (torch.float32, True, torch.bfloat16, torch.float32)),  # Lightning's CPU form of 16-mixed
        ("32-true", (torch.float32, False, None, torch.float32)),
    ],
)
def test_generation_runs_in_the_trainers_precision_context(tmp_path, tiny_clip_dir, encoder, precision, expected):
    module = DocsTextToImage()
    callback = _callback(tiny_clip_dir)
    trainer = _trainer(tmp_path, [callback], precision=precision)
    data = DataLoader(torch.randn(8, 8), batch_size=4)
    trainer.fit(module, data, data)

    assert len(callback.history) == 1
    # Generation (the check at fit start and the evaluation) saw what validation_step sees.
    assert module.contexts["generate"] == module.contexts["validation"] == {expected}
    # CLIP kept its own precision: fp32 weights, and the logged mean is the fp32 score of the images.
    assert callback.encoder.active_precision == "32"
    assert next(callback.encoder.model.parameters()).dtype == torch.float32
    library = load_prompt_library(PROMPTS[:3])
    module.eval()
    with torch.no_grad(), trainer.precision_plugin.forward_context():
        images = module.generate_images([p.text for p in library], [p.seed for p in library])
    reference = encoder.score(images, [p.text for p in library])
    assert callback.history[-1]["clip/mean"] == pytest.approx(float(reference.mean()), abs=1e-5)


# ---------------------------------------------------------------- progress and lines
@pytest.mark.parametrize("bar", ["tqdm", "rich"])
@pytest.mark.parametrize("stage", ["fit", "validate"])
def test_prompt_bar_and_lines_per_evaluation(tmp_path, tiny_clip_dir, capsys, info_lines, bar, stage):
    progress = TQDMProgressBar() if bar == "tqdm" else RichProgressBar(console_kwargs={"force_terminal": True, "width": 160})
    callback = _callback(tiny_clip_dir, prompts=PROMPTS, batch_size=2)
    trainer = _trainer(tmp_path, [callback, progress], enable_progress_bar=True)
    getattr(trainer, stage)(TinyTextToImage())

    out = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", capsys.readouterr().out)  # without terminal controls
    drawn = [line for line in re.split(r"[\r\n]", out) if "CLIP scoring (clip)" in line]
    # The bar counts the prompts; Rich draws each batch as it lands (TQDM at its own pace).
    assert any("0/4" in line for line in drawn)
    if bar == "rich":
        assert any("2/4" in line for line in drawn) and any("4/4" in line for line in drawn)
    starts = [line for line in info_lines if line.startswith("CLIP scoring 4 prompts at step")]
    results = [line for line in info_lines if line.startswith("CLIP score at step")]
    assert len(starts) == len(results) == 1  # the check at fit start prints nothing
    assert f"clip/mean {callback.history[-1]['clip/mean']:.4f}" in results[0] and "4 prompts" in results[0]


def test_lines_without_a_progress_bar(tmp_path, tiny_clip_dir, capsys, info_lines):
    callback = _callback(tiny_clip_dir)
    trainer = _trainer(tmp_path, [callback], max_epochs=2)
    trainer.fit(TinyTextToImage())
    assert "CLIP scoring (clip)" not in capsys.readouterr().out
    assert sum(line.startswith("CLIP scoring 3 prompts") for line in info_lines) == 2
    assert sum(line.startswith("CLIP score at step") for line in info_lines) == 2


# ---------------------------------------------------------------- failures before the first step
@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative"])
def test_missing_model_directory_fails_at_setup_and_is_named(tmp_path, monkeypatch, relative):
    monkeypatch.chdir(tmp_path)
    path = "./no-such-clip" if relative else str(tmp_path / "no-such-clip")
    module = CountingModule()
    with pytest.raises(OSError, match="no such directory") as info:
        _trainer(tmp_path, [_callback(path)]).fit(module)
    assert "no-such-clip" in str(info.value)
    assert module.training_steps == 0 and module.generate_calls == []


def _one_image(pl_module, prompts, seeds):
    return torch.zeros(1, 3, 16, 16, dtype=torch.uint8)


def test_generator_with_the_wrong_count_fails_before_the_first_step(tmp_path, tiny_clip_dir):
    module = CountingModule()
    callback = _callback(tiny_clip_dir, generate_fn=_one_image)
    with pytest.raises(ValueError, match="1 images and 2 prompts"):
        _trainer(tmp_path, [callback], num_sanity_val_steps=2).fit(module)
    assert module.training_steps == 0 and callback.history == []


def test_check_at_fit_start_keeps_nothing(tmp_path, tiny_clip_dir):
    module = TinyTextToImage()
    callback = _callback(tiny_clip_dir, every_n_train_steps=100)
    trainer = _trainer(tmp_path, [callback], logger=CSVLogger(tmp_path), limit_train_batches=2)
    with pytest.warns(UserWarning, match="never evaluate"):
        trainer.fit(module)
    assert len(module.generate_calls) == 1  # the check at fit start rendered once ...
    assert callback.history == [] and "clip/mean" not in trainer.callback_metrics  # ... and logged nothing
    assert not list(callback.resolved_scores_dir.iterdir())


# ---------------------------------------------------------------- schedules and monitors
def _early_stopping(**kwargs):
    return EarlyStopping(monitor="clip/mean", mode="max", **kwargs)


def _checkpoint(tmp_path, **kwargs):
    return ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="clip/mean", mode="max", **kwargs)


REFUSED = [
    pytest.param({"every_n_epochs": 2}, {}, lambda p: _early_stopping(),
                 r"ClipScoreCallback\(every_n_epochs=1\) with Trainer\(check_val_every_n_epoch=2\)", id="epochs-early-stopping"),
    pytest.param({"every_n_epochs": 2}, {}, lambda p: _checkpoint(p),
                 r"check_val_every_n_epoch=2\); or save in evaluated epochs only: ModelCheckpoint\(every_n_epochs=2\)",
                 id="epochs-checkpoint"),
    pytest.param({"every_n_train_steps": 2}, {}, lambda p: _early_stopping(),
                 r"Trainer\(val_check_interval=2, check_val_every_n_epoch=None\)", id="steps-early-stopping"),
    pytest.param({"every_n_train_steps": 2}, {"val_check_interval": 3, "check_val_every_n_epoch": None},
                 lambda p: _early_stopping(), r"Trainer\(val_check_interval=2, check_val_every_n_epoch=None\)",
                 id="steps-other-validation-steps"),
    pytest.param({"every_n_train_steps": 2}, {"accumulate_grad_batches": 2, "val_check_interval": 2,
                                              "check_val_every_n_epoch": None},
                 lambda p: _early_stopping(), r"Trainer\(val_check_interval=4, check_val_every_n_epoch=None\)",
                 id="steps-accumulated"),
    pytest.param({"every_n_train_steps": 2}, {}, lambda p: _checkpoint(p, every_n_train_steps=3),
                 r"every_n_train_steps=N\) with N dividing 3", id="steps-checkpoint-steps"),
    pytest.param({}, {}, lambda p: _checkpoint(p, every_n_train_steps=2),
                 r"evaluates at validation end.*every_n_train_steps=N", id="epochs-checkpoint-steps"),
    pytest.param({}, {}, lambda p: _checkpoint(p, train_time_interval=timedelta(minutes=5)),
                 r"saves on a timer.*ModelCheckpoint\(every_n_train_steps=N\)", id="checkpoint-timer"),
    pytest.param({}, {"limit_val_batches": 0}, lambda p: _early_stopping(),
                 r"no validation loop.*every_n_train_steps=N", id="no-validation-loop"),
    pytest.param({"every_n_train_steps": 2}, {"limit_val_batches": 0}, lambda p: _checkpoint(p),
                 r"no validation loop.*ModelCheckpoint\(every_n_train_steps=2\)", id="steps-no-validation-loop"),
    pytest.param({}, {"check_val_every_n_epoch": 2}, lambda p: _early_stopping(check_on_train_epoch_end=True),
                 r"EarlyStopping\(check_on_train_epoch_end=False\)", id="early-stopping-between-validations"),
]


@pytest.mark.parametrize("callback_kwargs, trainer_kwargs, monitor, fix", REFUSED)
def test_schedules_a_monitor_cannot_rely_on_are_refused_at_fit_start(
    tmp_path, tiny_clip_dir, callback_kwargs, trainer_kwargs, monitor, fix
):
    module = CountingModule()
    callback = _callback(tiny_clip_dir, **callback_kwargs)
    trainer = _trainer(tmp_path, [callback, monitor(tmp_path)], enable_checkpointing=True, **trainer_kwargs)
    with pytest.raises(MisconfigurationException, match=r"\(monitor='clip/mean'\)") as info:
        trainer.fit(module)
    assert re.search(fix, str(info.value)), str(info.value)
    assert module.training_steps == 0 and callback.encoder is None  # refused before anything was loaded


@pytest.mark.parametrize(
    "callback_kwargs, trainer_kwargs",
    [
        pytest.param({"every_n_epochs": 1}, {"check_val_every_n_epoch": 2}, id="validate-every-2nd-epoch"),
        pytest.param({"every_n_epochs": 2}, {"check_val_every_n_epoch": 2}, id="evaluate-every-2nd-epoch"),
        pytest.param({"every_n_train_steps": 2}, {"val_check_interval": 2, "check_val_every_n_epoch": None,
                                                  "max_steps": 40}, id="steps"),
    ],
)
def test_early_stopping_patience_counts_evaluations(tmp_path, tiny_clip_dir, callback_kwargs, trainer_kwargs):
    stopper = _early_stopping(patience=2, min_delta=10.0)  # no evaluation improves: stops after patience + 1
    callback = _callback(tiny_clip_dir, **callback_kwargs)
    trainer = _trainer(tmp_path, [callback, stopper], **{"max_epochs": 20, **trainer_kwargs})
    trainer.fit(TinyTextToImage())
    assert len(callback.history) == 3
    assert trainer.should_stop and stopper.wait_count == 2


def test_aligned_checkpoints_save_fresh_values(tmp_path, tiny_clip_dir):
    # Steps: evaluate every 2, save every 4.
    callback = _callback(tiny_clip_dir, every_n_train_steps=2)
    checkpoint = _checkpoint(tmp_path / "steps", every_n_train_steps=4, save_top_k=-1)
    trainer = _trainer(tmp_path, [callback, checkpoint], max_steps=8, max_epochs=None, limit_train_batches=4,
                       enable_checkpointing=True)
    trainer.fit(TinyTextToImage())
    assert [h["step"] for h in callback.history] == [2, 4, 6, 8]
    saved = sorted(float(v) for v in checkpoint.best_k_models.values())
    assert saved == pytest.approx(sorted(h["clip/mean"] for h in callback.history if h["step"] in (4, 8)), abs=1e-6)

    # Epochs: evaluate and save in every 2nd epoch.
    callback = _callback(tiny_clip_dir, every_n_epochs=2)
    checkpoint = _checkpoint(tmp_path / "epochs", every_n_epochs=2, save_top_k=-1)
    _trainer(tmp_path, [callback, checkpoint], max_epochs=4, enable_checkpointing=True).fit(TinyTextToImage())
    assert len(callback.history) == 2 and len(checkpoint.best_k_models) == 2
    saved = sorted(float(v) for v in checkpoint.best_k_models.values())
    assert saved == pytest.approx(sorted(h["clip/mean"] for h in callback.history), abs=1e-6)


def test_a_monitor_of_another_prefix_is_not_this_callbacks(tmp_path, tiny_clip_dir):
    slow = _callback(tiny_clip_dir, every_n_epochs=2)  # "clip/": no monitor watches it
    fast = _callback(tiny_clip_dir, prefix="clip/fast/", prompts=PROMPTS[:2])
    stopper = EarlyStopping(monitor="clip/fast/mean", mode="max", patience=5)
    _trainer(tmp_path, [slow, fast, stopper], max_epochs=2).fit(TinyTextToImage())
    assert len(slow.history) == 1 and len(fast.history) == 2


@pytest.mark.parametrize(
    "callback_kwargs, trainer_kwargs, reason, module_class",
    [
        pytest.param({}, {"max_steps": 3, "limit_train_batches": 4}, "max_steps=3", TinyTextToImage,
                     id="epoch-end-after-max-steps"),
        pytest.param({"every_n_epochs": 2}, {"max_steps": 3, "limit_train_batches": 4, "val_check_interval": 1,
                                             "check_val_every_n_epoch": None}, "max_steps=3", TinyTextToImage,
                     id="steps-in-epoch-one"),
        pytest.param({"every_n_epochs": 2}, {"max_epochs": 1}, "max_epochs=1", TinyTextToImage,
                     id="epoch-two-never-comes"),
        pytest.param({"every_n_train_steps": 10}, {"max_epochs": 1, "limit_train_batches": 4}, "max_epochs=1",
                     TinyTextToImage, id="step-after-the-end"),
        pytest.param({"every_n_epochs": 2}, {"max_steps": 4, "limit_train_batches": 1.0, "val_check_interval": 2,
                                             "check_val_every_n_epoch": None}, "first epoch never ends", EndlessData,
                     id="endless-first-epoch"),
    ],
)
def test_never_evaluating_is_said_before_training(
    tmp_path, tiny_clip_dir, callback_kwargs, trainer_kwargs, reason, module_class
):
    callback = _callback(tiny_clip_dir, **callback_kwargs)
    with pytest.warns(UserWarning, match=f"will never evaluate in this run: .*{reason}"):
        _trainer(tmp_path, [callback], **trainer_kwargs).fit(module_class())
    assert callback.history == []


def test_a_schedule_that_evaluates_says_nothing(tmp_path, tiny_clip_dir):
    callback = _callback(tiny_clip_dir, every_n_epochs=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trainer(tmp_path, [callback], max_steps=3, limit_train_batches=1, max_epochs=None).fit(TinyTextToImage())
    assert not [w for w in caught if "never evaluate" in str(w.message)]
    assert len(callback.history) == 1


# ---------------------------------------------------------------- two callbacks
def _two_callbacks(tiny_clip_dir):
    return [
        _callback(tiny_clip_dir, prompts=PROMPTS[:3]),
        _callback(embedded_model_path(), prompts=["a red circle", "two blue squares"], prefix="clip/shapes/"),
    ]


def test_two_callbacks_with_their_own_prefix_library_and_model(tmp_path, tiny_clip_dir):
    first = _two_callbacks(tiny_clip_dir)
    assert first[0].state_key != first[1].state_key and "clip/shapes/" in first[1].state_key
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="clip/shapes/mean", mode="max")
    trainer = _trainer(tmp_path, [*first, checkpoint], logger=TensorBoardLogger(tmp_path, name="tb"),
                       enable_checkpointing=True)
    trainer.fit(TinyTextToImage())
    assert trainer.callback_metrics["clip/count"] == 3 and trainer.callback_metrics["clip/shapes/count"] == 2
    assert first[0].encoder is not first[1].encoder

    # Each has its own score folder, so their step files never mix.
    scores = Path(trainer.logger.log_dir) / "clip_scores"
    assert first[0].resolved_scores_dir == scores and first[1].resolved_scores_dir == scores / "clip-shapes"
    (own,) = scores.glob("step-*.jsonl")
    (shapes_file,) = (scores / "clip-shapes").glob("step-*.jsonl")
    assert len(read_scores(own).records) == 3 and len(read_scores(shapes_file).records) == 2

    # Both restore from the checkpoint and carry on.
    saved = torch.load(checkpoint.best_model_path, weights_only=False)["callbacks"]
    assert {first[0].state_key, first[1].state_key} <= set(saved)
    resumed = _two_callbacks(tiny_clip_dir)
    _trainer(tmp_path, resumed, max_epochs=2).fit(TinyTextToImage(), ckpt_path=checkpoint.best_model_path)
    assert [h["step"] for h in resumed[0].history] == [h["step"] for h in resumed[1].history] == [2, 4]
    assert "clip/shapes/mean" in resumed[1].history[0] and "clip/mean" in resumed[0].history[0]


def test_two_callbacks_with_one_prefix_are_refused(tmp_path, tiny_clip_dir):
    with pytest.raises(RuntimeError, match="state_key"):
        _trainer(tmp_path, [_callback(tiny_clip_dir), _callback(tiny_clip_dir, prompts=PROMPTS[:1])])


# ---------------------------------------------------------------- fast_dev_run
@pytest.mark.parametrize(
    "schedule", [{"every_n_epochs": 2}, {"every_n_train_steps": 50}], ids=["epochs", "steps"]
)
def test_fast_dev_run_scores_one_batch_and_writes_nothing(tmp_path, tiny_clip_dir, schedule):
    library = [f"a {colour} {shape}" for colour in ("red", "blue", "green", "white") for shape in ("circle", "square")]
    callback = _callback(tiny_clip_dir, prompts=library, batch_size=3, **schedule)
    trainer = _trainer(tmp_path, [callback], fast_dev_run=True, logger=TensorBoardLogger(tmp_path, name="tb"))
    trainer.fit(TinyTextToImage())
    # One evaluation of one batch, whatever the schedule, and no files.
    assert [h["clip/count"] for h in callback.history] == [3.0]
    assert trainer.callback_metrics["clip/count"] == 3
    assert callback.resolved_scores_dir is None
    assert not [p for p in tmp_path.rglob("*") if p.suffix == ".jsonl" or p.name in ("clip_scores", "clip_metric_logs")]


# ---------------------------------------------------------------- score files
def test_runs_without_a_logger_get_their_own_folders(tmp_path, tiny_clip_dir, monkeypatch):
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    root = tmp_path / "root"
    reused = _callback(tiny_clip_dir)
    folders = []
    for callback in (reused, _callback(tiny_clip_dir), reused):
        _trainer(root, [callback]).validate(TinyTextToImage())
        folders.append(callback.resolved_scores_dir)
    assert folders == [root / "clip_metric_logs" / f"version_{i}" / "clip_scores" for i in range(3)]
    assert all(len(list(folder.glob("step-*.jsonl"))) == 1 for folder in folders)
    assert not list((tmp_path / "cwd").iterdir())  # nothing in the working directory


def test_callback_pickles_after_a_run_and_the_copy_resolves_its_own_folder(tmp_path, tiny_clip_dir):
    # ddp_spawn sends the callback, prompt library and all, to its workers.
    callback = _callback(tiny_clip_dir)
    _trainer(tmp_path, [callback]).validate(TinyTextToImage())
    copy = pickle.loads(pickle.dumps(callback))
    assert copy.prompt_library == callback.prompt_library
    _trainer(tmp_path, [copy]).validate(TinyTextToImage())
    assert copy.resolved_scores_dir == tmp_path / "clip_metric_logs" / "version_1" / "clip_scores"


def test_two_evaluations_at_one_step_keep_both_files(tmp_path, tiny_clip_dir):
    callback = _callback(tiny_clip_dir)
    trainer = _trainer(tmp_path, [callback])
    trainer.validate(TinyTextToImage())
    trainer.validate(TinyTextToImage())
    folder = callback.resolved_scores_dir
    assert sorted(p.name for p in folder.iterdir()) == ["step-00000000-1.jsonl", "step-00000000.jsonl"]
    assert all(len(read_scores(p).records) == 3 for p in folder.iterdir())


def test_planted_link_is_not_written_through(tmp_path, tiny_clip_dir):
    folder = tmp_path / "scores"
    folder.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (folder / "step-00000000.jsonl").symlink_to(victim)
    callback = _callback(tiny_clip_dir, scores_dir=folder)
    _trainer(tmp_path, [callback]).validate(TinyTextToImage())
    assert victim.read_text() == "keep"
    assert os.readlink(folder / "step-00000000.jsonl") == str(victim)
    written = folder / "step-00000000-1.jsonl"
    assert written.is_file() and not written.is_symlink() and len(read_scores(written).records) == 3
    assert sorted(p.name for p in folder.iterdir()) == ["step-00000000-1.jsonl", "step-00000000.jsonl"]  # no leftovers


def test_scores_go_beside_the_first_loggers_versioned_logs(tmp_path, tiny_clip_dir):
    csv, tensorboard = CSVLogger(tmp_path, name="csv"), TensorBoardLogger(tmp_path, name="tb")
    callback = _callback(tiny_clip_dir)
    _trainer(tmp_path, [callback], logger=[csv, tensorboard]).validate(TinyTextToImage())
    assert callback.resolved_scores_dir == Path(csv.log_dir) / "clip_scores"
    assert len(list(callback.resolved_scores_dir.glob("step-*.jsonl"))) == 1


def test_scores_dir_that_cannot_be_made_fails_at_setup(tmp_path, tiny_clip_dir):
    blocker = tmp_path / "file"
    blocker.write_text("")
    module = CountingModule()
    with pytest.raises(OSError):
        _trainer(tmp_path, [_callback(tiny_clip_dir, scores_dir=blocker / "scores")]).fit(module)
    assert module.training_steps == 0 and module.generate_calls == []


# ---------------------------------------------------------------- checkpoint names
def test_checkpoint_name_with_a_slash_key_is_warned_and_the_documented_form_is_flat(tmp_path, tiny_clip_dir):
    slashed = ModelCheckpoint(dirpath=tmp_path / "a", monitor="clip/mean", mode="max", filename="{epoch}-{clip/mean:.3f}")
    with pytest.warns(UserWarning, match=r"sub-folder.*auto_insert_metric_name=False"):
        _trainer(tmp_path, [_callback(tiny_clip_dir), slashed], enable_checkpointing=True).fit(TinyTextToImage())
    assert [p.name for p in (tmp_path / "a").iterdir() if p.is_dir()] == ["epoch=0-clip"]  # what the warning says

    flat = ModelCheckpoint(dirpath=tmp_path / "b", monitor="clip/mean", mode="max",
                           filename="epoch={epoch}-clip_mean={clip/mean:.3f}", auto_insert_metric_name=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trainer(tmp_path, [_callback(tiny_clip_dir), flat], enable_checkpointing=True).fit(TinyTextToImage())
    assert not [w for w in caught if "sub-folder" in str(w.message)]
    (saved,) = (tmp_path / "b").iterdir()
    assert saved.is_file() and saved.name.startswith("epoch=0-clip_mean=") and saved.suffix == ".ckpt"


# ---------------------------------------------------------------- no validation loop, test()
@pytest.mark.parametrize(
    "module_class, trainer_kwargs",
    [(NoValidationStep, {}), (CountingModule, {"limit_val_batches": 0})],
    ids=["no-validation-step", "limit-val-batches-0"],
)
def test_no_validation_loop_is_said_at_setup(tmp_path, tiny_clip_dir, module_class, trainer_kwargs):
    class Stops(module_class):
        def training_step(self, batch, batch_idx):
            raise FirstStepReached

    with pytest.warns(UserWarning, match="will never evaluate in this run: .*no validation loop"):
        with pytest.raises(FirstStepReached):  # the warning came before the first training step
            _trainer(tmp_path, [_callback(tiny_clip_dir)], **trainer_kwargs).fit(Stops())


def test_trainer_test_evaluates(tmp_path, tiny_clip_dir):
    callback = _callback(tiny_clip_dir)
    trainer = _trainer(tmp_path, [callback], logger=CSVLogger(tmp_path), limit_test_batches=1)
    (results,) = trainer.test(WithTestLoop(), verbose=False)
    assert results["clip/count"] == 3 and not math.isnan(results["clip/mean"])
    (path,) = callback.resolved_scores_dir.glob("step-*.jsonl")
    scores = read_scores(path)
    assert scores.header["stage"] == "test"
    assert sum(r.score for r in scores.records) / 3 == pytest.approx(results["clip/mean"], abs=1e-6)


# ---------------------------------------------------------------- from_config
@pytest.mark.parametrize(
    "report_to, extras", [("--tensorboard", True), (None, False)], ids=["dash-prefixed-keys", "report-to-null"]
)
def test_from_config_keys_reach_the_run(tmp_path, tiny_clip_dir, report_to, extras):
    library = tmp_path / "library.json"
    library.write_text(json.dumps({"cat": "a photo of a cat", "soup": "a bowl of soup"}))
    dashed = report_to is not None
    prefix = "--" if dashed else ""
    config = {
        f"{prefix}evaluation_type": "clip",
        f"{prefix}pretrained_evaluation_model_name_or_path": str(tiny_clip_dir),
        f"{prefix}user_prompt_library": str(library),
        f"{prefix}report_to": report_to.removeprefix("--") if dashed else None,
    }
    callback = ClipScoreCallback.from_config(config, precision="32")
    assert callback.report_to == ("tensorboard" if dashed else "none")
    logger = TensorBoardLogger(tmp_path, name="tb")
    (results,) = _trainer(tmp_path, [callback], logger=logger).validate(TinyTextToImage(), verbose=False)
    assert results["clip/count"] == 2
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(logger.log_dir)
    events.Reload()
    assert "clip/mean" in events.Tags()["scalars"]
    assert ("clip/scores" in events.Tags()["histograms"]) is extras


# ---------------------------------------------------------------- scale, arguments, hooks, state
def test_the_scale_is_applied_once(tmp_path):
    rng = random.Random(0)
    scenes = {shapes.caption(s): s for s in (shapes.random_scene(rng) for _ in range(4))}

    def draw(module, prompts, seeds):  # images that match their prompts: positive cosines
        return shapes.draw_scenes([scenes[p] for p in prompts])

    callback = ClipScoreCallback(embedded_model_path(), prompts=list(scenes), generate_fn=draw, precision="32",
                                 scale="clipscore", num_logged_images=1)
    (results,) = _trainer(tmp_path, [callback]).validate(TinyTextToImage(), verbose=False)
    reference = ClipEncoder.from_pretrained(embedded_model_path(), precision="32")
    expected = 2.5 * reference.score(draw(None, list(scenes), None), list(scenes)).clamp(min=0).double()
    assert float(expected.min()) > 0
    assert results["clip/mean"] == pytest.approx(float(expected.mean()), abs=1e-5)
    assert results["clip/max"] == pytest.approx(float(expected.max()), abs=1e-5)
    rows = read_scores(next(callback.resolved_scores_dir.glob("step-*.jsonl"))).records
    assert [r.score for r in rows] == pytest.approx(expected.tolist(), abs=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"offload": "false"}, {"save_scores": "no"}, {"enabled": "false"}, {"every_n_epochs": True},
        {"every_n_train_steps": 0}, {"batch_size": 2.5}, {"num_logged_images": -1}, {"scores_dir": 3},
        {"model_name_or_path": ""}, {"report_to": "mlflow"}, {"prefix": None}, {"scale": "percent"},
    ],
    ids=lambda kwargs: next(iter(kwargs)),
)
def test_bad_arguments_raise_value_error_naming_the_value(kwargs):
    (name, value), = kwargs.items()
    with pytest.raises(ValueError) as info:
        ClipScoreCallback(**{"prompts": ["a cat"], **kwargs})
    assert f"`{name}`" in str(info.value) and repr(value) in str(info.value)


def test_hooks_are_marked_override():
    hooks = ["setup", "on_fit_start", "on_train_start", "on_validation_epoch_end", "on_test_epoch_end",
             "on_train_batch_end", "state_dict", "load_state_dict"]
    assert all(getattr(ClipScoreCallback.__dict__[name], "__override__", False) for name in hooks)
    assert ClipScoreCallback.__dict__["state_key"].fget.__override__


def test_checkpoint_with_foreign_state_resumes(tmp_path, tiny_clip_dir):
    callback = _callback(tiny_clip_dir)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt")
    _trainer(tmp_path, [callback, checkpoint], enable_checkpointing=True).fit(TinyTextToImage())
    assert len(json.dumps(callback.state_dict())) < 1000
    saved = torch.load(checkpoint.best_model_path, weights_only=False)
    saved["callbacks"][callback.state_key] = {"last_step_evaluated": "three", "history": "junk", "unknown": 1}
    path = tmp_path / "foreign.ckpt"
    torch.save(saved, path)
    resumed = _callback(tiny_clip_dir)
    _trainer(tmp_path, [resumed], max_epochs=2).fit(TinyTextToImage(), ckpt_path=path)
    assert [h["step"] for h in resumed.history] == [4]
