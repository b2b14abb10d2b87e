from __future__ import annotations

import json
import math

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from clip_metric import ClipEncoder, ClipScoreCallback
from clip_metric.prompts import load_prompt_library
from clip_metric.records import read_scores
from _helpers.t2i import TinyTextToImage

PROMPTS = [
    "a red circle on a blue background",
    "two green squares",
    "a yellow triangle at the top",
    "a photo of a cat",
    "a bowl of soup",
    "a blue car in the rain",
    "three purple stars",
]


def _trainer(tmp_path, callback, **kwargs):
    defaults = dict(
        default_root_dir=tmp_path,
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=1,
        logger=TensorBoardLogger(tmp_path, name="tb"),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        accelerator="cpu",
        devices=1,
        deterministic=True,
    )
    defaults.update(kwargs)
    return pl.Trainer(callbacks=[callback] + defaults.pop("extra_callbacks", []), **defaults)


def _read_tensorboard(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "histograms": 0, "images": 0})
    accumulator.Reload()
    return accumulator


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir):
    return ClipEncoder.from_pretrained(tiny_clip_dir, precision="32")


def test_fit_logs_clip_keys_skipping_sanity_check(tmp_path, tiny_clip_dir, encoder):
    pl.seed_everything(0)
    module = TinyTextToImage()
    callback = ClipScoreCallback(tiny_clip_dir, prompts=PROMPTS, batch_size=3, precision="32")
    trainer = _trainer(tmp_path, callback)
    trainer.fit(module)

    assert len(callback.history) == 2  # two epochs; the sanity check was skipped
    events = _read_tensorboard(trainer.logger.log_dir)
    tags = events.Tags()
    for key in ("mean", "min", "max", "std", "count"):
        scalars = events.Scalars(f"clip/{key}")
        assert [s.step for s in scalars] == [2, 4]  # trainer.global_step, the checkpoints' step
    assert [h.step for h in events.Histograms("clip/scores")] == [2, 4]
    assert {"clip/best", "clip/worst"} <= set(tags["images"])
    assert events.Scalars("clip/count")[-1].value == len(PROMPTS)

    # The last logged mean is the CLIP score of what the trained module generates now.
    module.eval()
    seeds = [p.seed for p in load_prompt_library(PROMPTS)]
    with torch.no_grad():
        expected = encoder.score(module.generate_images(PROMPTS, seeds), PROMPTS)
    assert events.Scalars("clip/mean")[-1].value == pytest.approx(float(expected.mean()), abs=1e-5)
    assert events.Scalars("clip/min")[-1].value == pytest.approx(float(expected.min()), abs=1e-5)

    # Generation ran in eval mode without gradients; training mode was given back.
    assert module.generate_calls and all(call == (False, False) for call in module.generate_calls)

    # Per-prompt scores were saved beside the logs, one file per evaluation.
    files = sorted((tmp_path / "tb" / "version_0" / "clip_scores").glob("step-*.jsonl"))
    assert [f.name for f in files] == ["step-00000002.jsonl", "step-00000004.jsonl"]
    scores = read_scores(files[-1])
    rows = scores.records
    assert [r.prompt for r in rows] == PROMPTS and scores.step == 4
    assert [r.seed for r in rows] == seeds
    assert sum(r.score for r in rows) / len(rows) == pytest.approx(float(expected.mean()), abs=1e-5)


def _final_params(tmp_path, with_callback, tiny_clip_dir):
    pl.seed_everything(123)
    module = TinyTextToImage()
    callbacks = [ClipScoreCallback(tiny_clip_dir, prompts=PROMPTS, precision="32")] if with_callback else []
    trainer = pl.Trainer(
        default_root_dir=tmp_path, max_epochs=2, limit_train_batches=3, limit_val_batches=1, logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        callbacks=callbacks, accelerator="cpu", devices=1,
    )
    trainer.fit(module)
    return [p.detach().clone() for p in module.parameters()]


def test_callback_does_not_change_training_trajectory(tmp_path, tiny_clip_dir):
    without = _final_params(tmp_path / "a", False, tiny_clip_dir)
    with_callback = _final_params(tmp_path / "b", True, tiny_clip_dir)
    assert all(torch.equal(a, b) for a, b in zip(without, with_callback))


def test_module_modes_are_restored_per_submodule(tmp_path, tiny_clip_dir):
    module = TinyTextToImage()
    module.embed.eval()  # a frozen part stays in eval mode after evaluation
    callback = ClipScoreCallback(tiny_clip_dir, prompts=PROMPTS[:2], precision="32")
    trainer = _trainer(tmp_path, callback, max_epochs=1)
    trainer.fit(module)
    assert module.training and module.decoder.training and not module.embed.training


def test_validate_logs_and_early_stopping_can_monitor(tmp_path, tiny_clip_dir):
    module = TinyTextToImage()
    callback = ClipScoreCallback(tiny_clip_dir, prompts=PROMPTS, precision="32")
    trainer = _trainer(tmp_path, callback)
    (results,) = trainer.validate(module)
    assert results["clip/count"] == len(PROMPTS)
    assert not math.isnan(results["clip/mean"])

    stopper = EarlyStopping(monitor="clip/mean", mode="max", patience=0, min_delta=1.0)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="clip/mean", mode="max")
    trainer = _trainer(tmp_path, ClipScoreCallback(tiny_clip_dir, prompts=PROMPTS, precision="32"),
                       max_epochs=5, extra_callbacks=[stopper, checkpoint], enable_checkpointing=True)
    trainer.fit(TinyTextToImage())
    assert trainer.current_epoch < 5 and stopper.stopped_epoch > 0
    assert checkpoint.best_model_score is not None


def test_every_n_train_steps_logs_at_those_steps(tmp_path, tiny_clip_dir):
    callback = ClipScoreCallback(tiny_clip_dir, prompts=PROMPTS[:3], every_n_train_steps=2, precision="32")
    trainer = _trainer(tmp_path, callback, max_epochs=1, limit_train_batches=4,
                       logger=CSVLogger(tmp_path, name="csv"), log_every_n_steps=50)
    trainer.fit(TinyTextToImage())
    assert [h["step"] for h in callback.history] == [2, 4]
    lines = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    steps = sorted({int(r["step"]) for r in rows if r.get("clip/mean")})
    assert steps == [2, 4]
    assert "clip/mean" in trainer.callback_metrics


def test_checkpoint_holds_no_clip_weights_and_resume_restores_state(tmp_path, tiny_clip_dir):
    callback = ClipScoreCallback(tiny_clip_dir, prompts=PROMPTS[:3], precision="32")
    trainer = _trainer(tmp_path, callback, max_epochs=1, enable_checkpointing=True,
                       extra_callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt")])
    trainer.fit(TinyTextToImage())
    (path,) = (tmp_path / "ckpt").glob("*.ckpt")
    checkpoint = torch.load(path, weights_only=False)
    assert set(checkpoint["state_dict"]) == {"embed.weight", "decoder.weight", "decoder.bias"}
    (state,) = [v for k, v in checkpoint["callbacks"].items() if "ClipScoreCallback" in k]
    assert set(state) == {"last_step_evaluated", "history", "previous_scores_file", "scores_run"}
    assert len(state["history"]) == 1
    assert len(json.dumps(state)) < 1000
    # The previous evaluation is named by its score file, not copied into the checkpoint.
    before = read_scores(state["previous_scores_file"])
    assert before.step == 2 and len(before.records) == 3

    resumed = ClipScoreCallback(tiny_clip_dir, prompts=PROMPTS[:3], precision="32")
    trainer = _trainer(tmp_path, resumed, max_epochs=2)
    trainer.fit(TinyTextToImage(), ckpt_path=path)
    assert [h["step"] for h in resumed.history] == [2, 4]
    # The first evaluation after the resume is paired with the one before it, read from its file.
    after = read_scores(resumed.state_dict()["previous_scores_file"])
    diffs = np.array([b.score - a.score for a, b in zip(before.records, after.records)])
    assert [r.key for r in before.records] == [r.key for r in after.records]
    assert resumed.history[-1]["clip/delta"] == pytest.approx(diffs.mean(), abs=1e-12)
    assert resumed.history[-1]["clip/delta_count"] == 3
    # 3 pairs: fewer than an interval is reported for (clip_metric.intervals.MIN_PAIRS).
    assert math.isnan(resumed.history[-1]["clip/delta_ci"])


def test_load_state_dict_is_tolerant():
    callback = ClipScoreCallback(prompts=["a cat"])
    callback.load_state_dict({"unknown": 1})
    assert callback.history == [] and callback._last_step_evaluated == -1
    callback.load_state_dict({"history": [{"step": 3, "clip/mean": 0.3}, "junk"], "last_step_evaluated": 3})
    assert callback.history == [{"step": 3, "clip/mean": 0.3}]


def test_encoder_is_loaded_lazily_and_not_a_module_parameter(tmp_path, tiny_clip_dir):
    callback = ClipScoreCallback(tiny_clip_dir, prompts=PROMPTS[:2], precision="32")
    assert callback.encoder is None
    module = TinyTextToImage()
    trainer = _trainer(tmp_path, callback, max_epochs=1)
    trainer.fit(module)
    assert callback.encoder is not None
    assert len(list(module.parameters())) == 3


def test_missing_generator_fails_at_setup(tmp_path, tiny_clip_dir):
    class NoGenerate(TinyTextToImage):
        generate_images = None

    trainer = _trainer(tmp_path, ClipScoreCallback(tiny_clip_dir, prompts=PROMPTS[:2]), max_epochs=1)
    with pytest.raises(TypeError, match="generate_images"):
        trainer.fit(NoGenerate())


def test_generate_fn_is_used_and_failures_surface(tmp_path, tiny_clip_dir):
    seen = []

    def generate(module, prompts, seeds):
        seen.append((list(prompts), list(seeds)))
        return torch.zeros(len(prompts), 3, 16, 16, dtype=torch.uint8)

    callback = ClipScoreCallback(tiny_clip_dir, prompts=PROMPTS[:2], generate_fn=generate, precision="32")
    _trainer(tmp_path, callback).validate(TinyTextToImage())
    assert seen and seen[0][1] == [p.seed for p in load_prompt_library(PROMPTS[:2])]

    def bad(module, prompts, seeds):
        return torch.zeros(len(prompts) + 1, 3, 16, 16, dtype=torch.uint8)

    callback = ClipScoreCallback(tiny_clip_dir, prompts=PROMPTS[:2], generate_fn=bad, precision="32")
    with pytest.raises(ValueError, match="3 images and 2 prompts"):
        _trainer(tmp_path, callback).validate(TinyTextToImage())


def test_disabled_callback_does_nothing(tmp_path):
    callback = ClipScoreCallback(prompts=PROMPTS, enabled=False)
    trainer = _trainer(tmp_path, callback, max_epochs=1)
    trainer.fit(TinyTextToImage())
    assert callback.history == [] and callback.encoder is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"every_n_epochs": 1, "every_n_train_steps": 5}, "only one of"),
        ({"every_n_train_steps": -2}, "every_n_train_steps"),
        ({"report_to": "mlflow"}, "report_to"),
        ({"attention_policy": "off"}, "attention_policy"),
        ({"precision": "int4"}, "precision"),
        ({"scale": "percent"}, "scale"),
        ({"num_logged_images": -1}, "num_logged_images"),
        ({"generate_fn": "not callable"}, "callable"),
        ({"prompts": []}, "no prompts|empty"),
    ],
)
def test_bad_arguments(kwargs, message):
    kwargs.setdefault("prompts", ["a cat"])
    with pytest.raises(ValueError, match=message):
        ClipScoreCallback(**kwargs)


def test_bad_library_file_is_named(tmp_path):
    path = tmp_path / "library.json"
    path.write_text('{"a": {"prompt": ""}}')
    with pytest.raises(ValueError, match="library.json"):
        ClipScoreCallback(prompts=str(path))


def test_from_config_reads_source_keys(tmp_path, tiny_clip_dir):
    library = tmp_path / "user.json"
    library.write_text(json.dumps({"cat": "a photo of a cat", "dog": {"prompt": "a dog"}}))
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "evaluation_type": "clip",
        "pretrained_evaluation_model_name_or_path": str(tiny_clip_dir),
        "report_to": "tensorboard",
        "user_prompt_library": str(library),
        "learning_rate": 1e-4,
    }))
    callback = ClipScoreCallback.from_config(config, precision="32")
    assert callback.enabled and callback.report_to == "tensorboard"
    assert [p.text for p in callback.prompt_library] == ["a photo of a cat", "a dog"]
    assert callback.model_name_or_path == str(tiny_clip_dir)

    both = ClipScoreCallback.from_config({"user_prompt_library": str(library), "validation_prompt_library": True})
    assert len(both.prompt_library) > 100
    assert not ClipScoreCallback.from_config({"evaluation_type": "none"}).enabled
    assert len(ClipScoreCallback.from_config({"validation_prompt_library": True}).prompt_library) >= 120


def test_from_config_combines_libraries_and_refuses_none(tmp_path):
    user = tmp_path / "user.json"
    user.write_text(json.dumps({"cat": "a photo of a cat"}))
    library = tmp_path / "library.txt"
    library.write_text("a dog\na bird\n")
    callback = ClipScoreCallback.from_config(
        {"user_prompt_library": str(user), "validation_prompt_library": str(library)}
    )
    assert [p.text for p in callback.prompt_library] == ["a photo of a cat", "a dog", "a bird"]
    with pytest.raises(ValueError, match="needs prompts"):
        ClipScoreCallback.from_config({"validation_prompt_library": False})
    assert not ClipScoreCallback.from_config({"evaluation_type": "none", "validation_prompt_library": False}).enabled


def test_encoder_with_precision_is_refused(encoder):
    with pytest.raises(ValueError, match="would be ignored"):
        ClipScoreCallback(encoder, prompts=["a cat"], precision="32")
    with pytest.raises(ValueError, match="prefix"):
        ClipScoreCallback(prompts=["a cat"], prefix=3)


def test_best_and_worst_captions_use_the_score_scale(tmp_path):
    import random

    from clip_metric.demos import shapes
    from clip_metric.demos.tiny_clip import embedded_model_path

    rng = random.Random(0)
    scenes = {shapes.caption(s): s for s in (shapes.random_scene(rng) for _ in range(6))}

    def draw(module, prompts, seeds):  # images that match their prompts: positive cosines
        return shapes.draw_scenes([scenes[p] for p in prompts])

    callback = ClipScoreCallback(embedded_model_path(), prompts=list(scenes), generate_fn=draw, precision="32",
                                 scale="torchmetrics", num_logged_images=2)
    trainer = _trainer(tmp_path, callback)
    trainer.validate(TinyTextToImage())
    events = _read_tensorboard(trainer.logger.log_dir)
    (event,) = events.Tensors("clip/best_prompts/text_summary")
    best_text = event.tensor_proto.string_val[0].decode()
    rows = read_scores(next(tmp_path.rglob("step-*.jsonl"))).records
    best = max(rows, key=lambda r: r.score)
    assert best.score > 1.0  # on the x100 scale
    assert best_text.startswith(f"1. {best.score:.4f} | {best.prompt}")


@pytest.mark.parametrize(
    "config, message",
    [
        ({"evaluation_type": "fid"}, "`evaluation_type` to be 'clip' or 'none' but got 'fid'"),
        ({"report_to": "comet"}, "`report_to` to be one of .* but got 'comet'"),
        ({"validation_prompt_library": 5}, "`validation_prompt_library` to be a path or true/false but got 5"),
    ],
)
def test_from_config_rejects_unknown_values(config, message):
    with pytest.raises(ValueError, match=message):
        ClipScoreCallback.from_config(config)


def test_from_config_invalid_json(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="config.json"):
        ClipScoreCallback.from_config(path)


def test_per_category_means_are_logged(tmp_path, tiny_clip_dir):
    library = {
        "a": {"prompt": "a red circle", "category": "shapes"},
        "b": {"prompt": "a blue square", "category": "shapes"},
        "c": {"prompt": "a photo of a cat", "category": "animals"},
    }
    callback = ClipScoreCallback(tiny_clip_dir, prompts=library, precision="32")
    (results,) = _trainer(tmp_path, callback).validate(TinyTextToImage())
    rows = {r.prompt_id: r.score for r in read_scores(next(tmp_path.rglob("step-*.jsonl"))).records}
    assert results["clip/by_category/shapes"] == pytest.approx((rows["a"] + rows["b"]) / 2, abs=1e-5)
    assert results["clip/by_category/animals"] == pytest.approx(rows["c"], abs=1e-5)


def test_a_mean_per_value_of_every_tag_with_names_every_logger_takes(tmp_path, tiny_clip_dir):
    library = [
        {"prompt": "a red circle", "category": "Produce & Plants", "challenge": "Basic"},
        {"prompt": "a blue square", "category": "Produce & Plants", "challenge": "Fine-grained Detail"},
        {"prompt": "a photo of a cat", "category": "Animals", "challenge": "Basic"},
    ]
    callback = ClipScoreCallback(tiny_clip_dir, prompts=library, precision="32")
    (results,) = _trainer(tmp_path, callback).validate(TinyTextToImage())
    scores = read_scores(next(tmp_path.rglob("step-*.jsonl")))
    rows = {r.prompt: r.score for r in scores.records}
    assert results["clip/by_category/Produce_Plants"] == pytest.approx((rows["a red circle"] + rows["a blue square"]) / 2)
    assert results["clip/by_challenge/Basic"] == pytest.approx((rows["a red circle"] + rows["a photo of a cat"]) / 2)
    assert results["clip/by_challenge/Fine-grained_Detail"] == pytest.approx(rows["a blue square"])
    # The per-prompt file keeps the tags as written.
    assert scores.records[0].tags == {"category": "Produce & Plants", "challenge": "Basic"}


def test_the_signature_is_in_every_score_file_and_logged_once_per_run(tmp_path, tiny_clip_dir):
    callback = ClipScoreCallback(tiny_clip_dir, prompts="parti", max_prompts=4, precision="32", batch_size=4)
    trainer = _trainer(tmp_path, callback, max_epochs=2)
    trainer.fit(TinyTextToImage())
    files = sorted(callback.resolved_scores_dir.glob("step-*.jsonl"))
    assert len(files) == 2
    headers = [read_scores(f).header["signature"] for f in files]
    assert headers[0] == headers[1] == callback.signature.as_dict()
    assert callback.signature.prompts.startswith("parti#") and callback.signature.prompts.endswith(",n4,max4")
    texts = _read_tensorboard(trainer.logger.log_dir).Tensors("clip/signature/text_summary")
    assert len(texts) == 1 and texts[0].tensor_proto.string_val[0].decode() == str(callback.signature)


def test_from_config_combines_two_libraries_that_number_prompts_alike(tmp_path):
    user, validation = tmp_path / "user.txt", tmp_path / "validation.txt"
    user.write_text("a red circle\n")
    validation.write_text("a blue square\n")
    callback = ClipScoreCallback.from_config(
        {"user_prompt_library": str(user), "--validation_prompt_library": str(validation)}
    )
    assert [(p.id, p.text) for p in callback.prompt_library] == [
        ("user:line-1", "a red circle"), ("validation:line-1", "a blue square")
    ]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(prompts=False), "use enabled=False"),
        (dict(prefix=""), "non-empty string"),
        (dict(scores_dir=""), "scores_dir"),
    ],
)
def test_arguments_that_would_be_silently_wrong_are_refused(tiny_clip_dir, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ClipScoreCallback(tiny_clip_dir, **kwargs)


def test_an_encoder_keeps_its_own_attention_policy(encoder):
    with pytest.raises(ValueError, match="would not reach CLIP"):
        ClipScoreCallback(encoder, attention_policy="ignore")


def test_other_loggers_get_the_signature_as_a_hyperparameter(tmp_path, tiny_clip_dir):
    import yaml

    callback = ClipScoreCallback(tiny_clip_dir, prompts=PROMPTS[:2], precision="32")
    trainer = _trainer(tmp_path, callback, logger=CSVLogger(tmp_path, name="csv"))
    trainer.validate(TinyTextToImage())
    hparams = yaml.safe_load((tmp_path / "csv" / "version_0" / "hparams.yaml").read_text())
    assert hparams["clip/signature"] == str(callback.signature)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"validation_prompt_library": 2}, "`validation_prompt_library` to be a path or true/false but got 2"),
        ({"validation_prompt_library": 1.0}, "`validation_prompt_library` to be a path or true/false but got 1.0"),
        ({"user_prompt_library": 5}, "`user_prompt_library` to be a path but got 5"),
        ({"pretrained_evaluation_model_name_or_path": 5}, "a hub id or a path but got 5"),
        ({"pretrained_evaluation_model_name_or_path": ["x"]}, r"a hub id or a path but got \['x'\]"),
        ({"pretrained_evaluation_model_name_or_path": False}, "a hub id or a path but got False"),
    ],
)
def test_from_config_names_the_key_and_value_of_odd_types(config, message):
    with pytest.raises(ValueError, match=message):
        ClipScoreCallback.from_config(config)


def test_from_config_refuses_a_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b'{"report_to": "caf\xe9"}')
    with pytest.raises(ValueError, match=r"config.json, line 1: not valid UTF-8"):
        ClipScoreCallback.from_config(path)


def test_encoder_cache_size_refuses_a_boolean(tiny_clip_dir):
    with pytest.raises(ValueError, match="Expected `text_cache_size` to be a non-negative int but got True"):
        ClipEncoder.from_pretrained(tiny_clip_dir, text_cache_size=True)


def test_target_ci_stops_evaluations_early_and_logs_the_paired_delta(tmp_path, tiny_clip_dir):
    library = [f"a {c} {s} number {i}" for i in range(40) for c, s in (("red", "cube"), ("blue", "ball"))]
    callback = ClipScoreCallback(tiny_clip_dir, prompts=library, precision="32", target_ci=10.0, min_prompts=16,
                                 round_size=8, batch_size=8)
    trainer = _trainer(tmp_path, callback, max_epochs=2)
    trainer.fit(TinyTextToImage())
    first, second = callback.history
    assert first["clip/count"] == second["clip/count"] == 16  # one round each: the target is wide
    assert "clip/delta" not in first and second["clip/delta_count"] == 16
    assert "clip/mean_ci" in first and float(trainer.callback_metrics["clip/delta_ci"]) <= 10.0
    (header,) = {read_scores(p).header["adaptive"]["rounds"] for p in callback.resolved_scores_dir.glob("step-*.jsonl")}
    assert header == 1


def test_a_monitor_of_the_delta_is_refused(tmp_path, tiny_clip_dir):
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    callback = ClipScoreCallback(tiny_clip_dir, prompts=PROMPTS[:3], precision="32")
    trainer = _trainer(tmp_path, callback, extra_callbacks=[EarlyStopping(monitor="clip/delta", mode="max")])
    with pytest.raises(MisconfigurationException, match="clip/delta is not logged at the first evaluation"):
        trainer.fit(TinyTextToImage())
