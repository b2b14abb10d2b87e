"""``ClipScoreCallback`` configured through ``LightningCLI`` (jsonargparse) YAML and flags.

Every test parses a real config, builds the trainer and the callback the way a user's training
script would, and runs ``validate`` with the tiny CLIP model of the ``tiny_clip_dir`` fixture.
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import yaml

pytest.importorskip("jsonargparse")

from lightning.pytorch.cli import LightningCLI  # noqa: E402

from clip_metric import ClipScoreCallback, DiffusersGenerator  # noqa: E402
from clip_metric.prompts import load_prompt_library  # noqa: E402
from _helpers.t2i import TinyTextToImage  # noqa: E402

# The tests call LightningCLI with `args=`, and Lightning warns that pytest's own sys.argv is also set.
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter is intended:UserWarning")

PROMPTS = ["a red circle on a blue background", "two green squares", "a photo of a cat", "a bowl of soup"]

def generate_with_method(pl_module, prompts, seeds):
    """A module-level generate_fn, for configs that name it by import path."""
    return pl_module.generate_images(prompts, seeds)


def _trainer_config(tmp_path, callback_args: dict) -> dict:
    return {
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "default_root_dir": str(tmp_path),
            "logger": False,
            "limit_val_batches": 1,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "callbacks": [{"class_path": "clip_metric.ClipScoreCallback", "init_args": callback_args}],
        }
    }


def _write_config(tmp_path, config: dict):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _cli(args, model_class=TinyTextToImage, **kwargs) -> LightningCLI:
    return LightningCLI(model_class=model_class, run=False, args=args, save_config_callback=None, **kwargs)


def _clip_callback(cli: LightningCLI) -> ClipScoreCallback:
    (callback,) = [c for c in cli.trainer.callbacks if isinstance(c, ClipScoreCallback)]
    return callback


def _validate(cli: LightningCLI) -> dict:
    (results,) = cli.trainer.validate(cli.model)
    assert not math.isnan(results["clip/mean"])
    return results


@pytest.fixture()
def prompt_file(tmp_path):
    path = tmp_path / "library.txt"
    path.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    return path


def test_yaml_config_with_a_prompt_file(tmp_path, tiny_clip_dir, prompt_file):
    callback_args = {
        "model_name_or_path": str(tiny_clip_dir),
        "prompts": str(prompt_file),
        "max_prompts": 3,
        "precision": "32",
        "batch_size": 2,
        "every_n_epochs": 2,
        "value_range": [0, 1],
        "scale": "cosine",
        "attention_policy": "ignore",
        "report_to": "none",
        "num_logged_images": 1,
        "save_scores": False,
    }
    cli = _cli(["--config", str(_write_config(tmp_path, _trainer_config(tmp_path, callback_args)))])
    callback = _clip_callback(cli)
    assert callback.model_name_or_path == str(tiny_clip_dir)
    assert len(callback.prompt_library) == 3 and {p.text for p in callback.prompt_library} <= set(PROMPTS)
    assert (callback.precision, callback.batch_size, callback.every_n_epochs) == ("32", 2, 2)
    assert callback.value_range == (0.0, 1.0) and callback.attention_policy == "ignore"
    assert callback.generate_fn is None

    results = _validate(cli)
    assert results["clip/count"] == 3


def test_builtin_library(tmp_path, tiny_clip_dir):
    config = _trainer_config(
        tmp_path,
        {"model_name_or_path": str(tiny_clip_dir), "prompts": "default", "max_prompts": 2, "precision": "32"},
    )
    cli = _cli(["--config", str(_write_config(tmp_path, config))])
    assert len(_clip_callback(cli).prompt_library) == 2
    assert _validate(cli)["clip/count"] == 2


@pytest.mark.parametrize(
    "prompts",
    [
        pytest.param(PROMPTS, id="list"),
        pytest.param({f"p{i}": text for i, text in enumerate(PROMPTS)}, id="mapping"),
        pytest.param([{"prompt": text, "category": "shapes"} for text in PROMPTS[:2]], id="records"),
    ],
)
def test_yaml_config_with_in_memory_prompts(tmp_path, tiny_clip_dir, prompts):
    config = _trainer_config(
        tmp_path, {"model_name_or_path": str(tiny_clip_dir), "prompts": prompts, "precision": "32", "batch_size": 3}
    )
    cli = _cli(["--config", str(_write_config(tmp_path, config))])
    callback = _clip_callback(cli)
    assert callback.prompt_library == load_prompt_library(prompts)
    assert _validate(cli)["clip/count"] == len(prompts)


def test_yaml_precision_as_int(tmp_path, tiny_clip_dir, prompt_file):
    config = _trainer_config(
        tmp_path, {"model_name_or_path": str(tiny_clip_dir), "prompts": str(prompt_file), "precision": 32}
    )
    cli = _cli(["--config", str(_write_config(tmp_path, config))])
    assert _clip_callback(cli).precision == "32"


def test_command_line_flags(tmp_path, tiny_clip_dir, prompt_file):
    cli = _cli(
        [
            "--trainer.accelerator=cpu",
            "--trainer.devices=1",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.logger=false",
            "--trainer.limit_val_batches=1",
            "--trainer.enable_progress_bar=false",
            "--trainer.callbacks+=clip_metric.ClipScoreCallback",
            f"--trainer.callbacks.model_name_or_path={tiny_clip_dir}",
            f"--trainer.callbacks.prompts={prompt_file}",
            "--trainer.callbacks.max_prompts=2",
            "--trainer.callbacks.precision=32",
            "--trainer.callbacks.report_to=none",
            f"--trainer.callbacks.generate_fn={__name__}.generate_with_method",
        ]
    )
    callback = _clip_callback(cli)
    assert callback.generate_fn is generate_with_method
    assert callback.precision == "32" and len(callback.prompt_library) == 2
    assert _validate(cli)["clip/count"] == 2


def test_invalid_value_names_the_argument(tmp_path, tiny_clip_dir, prompt_file, capsys):
    # `report_to` is a Literal, so jsonargparse refuses the value while parsing the config.
    config = _trainer_config(
        tmp_path,
        {"model_name_or_path": str(tiny_clip_dir), "prompts": str(prompt_file), "report_to": "mlflow"},
    )
    with pytest.raises(SystemExit):
        _cli(["--config", str(_write_config(tmp_path, config))])
    error = capsys.readouterr().err
    assert "report_to" in error and "mlflow" in error


def test_validate_subcommand_and_saved_config_round_trip(tmp_path, tiny_clip_dir, prompt_file):
    callback_args = {
        "model_name_or_path": str(tiny_clip_dir),
        "prompts": str(prompt_file),
        "precision": "32",
        "report_to": "none",
        "batch_size": 3,
    }
    config = _trainer_config(tmp_path, callback_args)
    del config["trainer"]["logger"]  # the default TensorBoard logger: config.yaml and scores land in its version dir
    cli = LightningCLI(model_class=TinyTextToImage, args=["validate", "--config", str(_write_config(tmp_path, config))])
    metrics = cli.trainer.callback_metrics
    assert "clip/mean" in metrics and not math.isnan(float(metrics["clip/mean"]))
    assert float(metrics["clip/count"]) == len(PROMPTS)
    log_dir = tmp_path / "lightning_logs" / "version_0"
    assert (log_dir / "clip_scores" / "step-00000000.jsonl").is_file()

    # The config LightningCLI saved re-creates the same callback (its subcommand keys such as
    # ckpt_path are left out: they are not options of a run=False CLI).
    saved = yaml.safe_load((log_dir / "config.yaml").read_text(encoding="utf-8"))
    assert saved["trainer"]["callbacks"][0]["class_path"] == "clip_metric.ClipScoreCallback"
    resaved = tmp_path / "resaved"
    resaved.mkdir()
    path = _write_config(resaved, {"trainer": saved["trainer"], "model": saved["model"]})
    again = _clip_callback(_cli(["--config", str(path)]))
    first = _clip_callback(cli)
    assert [p.text for p in again.prompt_library] == [p.text for p in first.prompt_library]
    assert (again.precision, again.batch_size, again.report_to) == ("32", 3, "none")


HAS_DIFFUSERS = importlib.util.find_spec("diffusers") is not None

if HAS_DIFFUSERS:
    from _helpers.diffusion import TinyDiffusionModule, build_tiny_pipeline

    class TinyDiffusionCLIModule(TinyDiffusionModule):
        """A diffusion module a config can build: its tiny pipeline comes from a seed."""

        def __init__(self, seed: int = 0):
            super().__init__(build_tiny_pipeline(seed))


@pytest.mark.skipif(not HAS_DIFFUSERS, reason="needs diffusers")
def test_diffusers_generator_from_yaml(tmp_path, tiny_clip_dir):
    callback_args = {
        "model_name_or_path": str(tiny_clip_dir),
        "prompts": "default",
        "max_prompts": 3,
        "precision": "32",
        "batch_size": 2,
        "report_to": "none",
        "generate_fn": {
            "class_path": "clip_metric.DiffusersGenerator",
            "init_args": {
                "pipeline": "build_pipeline",
                "num_inference_steps": 1,
                "guidance_scale": 2.0,
                "height": 32,
                "width": 32,
                "pipeline_kwargs": {"eta": 0.0},
            },
        },
    }
    config = _trainer_config(tmp_path, callback_args)
    config["model"] = {"seed": 1}
    cli = _cli(["--config", str(_write_config(tmp_path, config))], model_class=TinyDiffusionCLIModule)
    generate = _clip_callback(cli).generate_fn
    assert isinstance(generate, DiffusersGenerator)
    assert generate.pipeline == "build_pipeline" and generate.num_inference_steps == 1
    assert generate.call_kwargs == {"eta": 0.0, "guidance_scale": 2.0, "height": 32, "width": 32}
    assert _validate(cli)["clip/count"] == 3
