"""``clip-metric eval``: what is refused before anything is loaded or rendered, the summary file,
and the rendering settings recorded with the scores."""

from __future__ import annotations

import errno
import json
import os
import shutil

import pytest

from clip_metric.cli import main
from clip_metric.records import read_scores
from _helpers.diffusion import build_tiny_pipeline

pytest.importorskip("diffusers")

COMMON = ["--max-prompts", "4", "--num-inference-steps", "1", "--accelerator", "cpu", "--precision", "32", "--quiet"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    path = tmp_path_factory.mktemp("pipelines") / "checkpoint-100"
    build_tiny_pipeline(seed=0).save_pretrained(path)
    return path


def _refused(capsys, *argv):
    code = main(["eval", *COMMON, *map(str, argv)])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    return captured.err


@pytest.mark.parametrize(
    ("option", "value"),
    [("--guidance-scale", "nan"), ("--guidance-scale", "inf"), ("--guidance-scale", "-inf"), ("--guidance-scale", "-1"),
     ("--guidance-scale", "1e999"),
     ("--height", "1000000"), ("--width", "99999999999999999992"), ("--num-inference-steps", "100000000"),
     ("--seed-offset", str(2**31)), ("--seed-offset", "-1"), ("--pipeline-kwargs", "[1]"),
     ("--pipeline-kwargs", "{nope"), ("--pipeline-kwargs", '{"eta": NaN}'), ("--pipeline-kwargs", '{"guidance_scale": 2}')],
)
def test_non_finite_or_out_of_range_numbers_are_usage_errors_before_loading(capsys, option, value):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "no-such-pipeline/", f"{option}={value}"])  # "=": a value such as -1 reaches the check
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and option in err, err
    assert "no such pipeline" not in err  # refused by the parser, before anything else


def test_more_steps_than_the_scheduler_s_timesteps_are_refused_before_loading(pipeline, capsys):
    assert "expected at most the 1000 timesteps" in _refused(capsys, pipeline, "--num-inference-steps", "1001")


def test_pipeline_kwargs_set_by_the_command_are_named(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "x/", "--pipeline-kwargs", '{"height": 8, "prompt": "a", "eta": 0.5}'])
    assert "height, prompt are set by clip-metric eval itself" in capsys.readouterr().err


def test_a_pipeline_class_diffusers_lacks_is_named(pipeline, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(pipeline, broken)
    index = json.loads((broken / "model_index.json").read_text())
    index["_class_name"] = "NotARealPipeline"
    (broken / "model_index.json").write_text(json.dumps(index))
    err = _refused(capsys, broken)
    assert "'NotARealPipeline'" in err and "model_index.json" in err


def test_a_lora_without_peft_is_refused_before_anything_is_rendered(pipeline, tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("peft") is not None:
        pytest.skip("peft is installed: a real LoRA would load")
    from diffusers import DiffusionPipeline

    DiffusionPipeline.from_pretrained(pipeline).unet.save_pretrained(tmp_path / "unet-only")
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "pytorch_lora_weights.safetensors").write_bytes(b"")
    err = _refused(capsys, "--base", pipeline, tmp_path / "unet-only", tmp_path / "lora", "--output-dir",
                   tmp_path / "out")
    assert "peft" in err and "lora" in err
    assert not list((tmp_path / "out").glob("**/*.jsonl"))  # the first checkpoint was not rendered either


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_a_prompt_file_that_is_not_a_regular_file_is_refused_without_blocking(pipeline, tmp_path, capsys):
    fifo = tmp_path / "prompts.txt"
    os.mkfifo(fifo)
    assert "is a named pipe, not a regular file" in _refused(capsys, pipeline, "--prompts", fifo)
    assert "is a directory, not a regular file" in _refused(capsys, pipeline, "--prompts", tmp_path)


@pytest.mark.parametrize("blocked", ["checkpoint-100", "checkpoint-100/clip_scores"])
def test_an_output_folder_that_is_a_file_is_refused_before_rendering(pipeline, tmp_path, capsys, blocked):
    out = tmp_path / "out"
    (out / blocked).parent.mkdir(parents=True, exist_ok=True)
    (out / blocked).write_text("x")
    err = _refused(capsys, pipeline, "--output-dir", out)
    assert f"{out / blocked} is a file" in err
    assert not list(out.glob("**/*.jsonl"))


def test_a_summary_that_cannot_be_written_is_an_error_and_leaves_no_summary(pipeline, tmp_path, capsys, monkeypatch):
    real_fsync = os.fsync

    def full_disk_for_summaries(fd):  # the disk fills up as the summary is flushed; the score file fitted
        if ".summary-" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    if not os.path.exists("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd")
    monkeypatch.setattr(os, "fsync", full_disk_for_summaries)
    out = tmp_path / "out"
    err = _refused(capsys, pipeline, "--output-dir", out)
    assert "summary.json cannot be written: No space left on device" in err
    folder = out / "checkpoint-100"
    assert list((folder / "clip_scores").glob("*.jsonl"))  # the score file fitted
    assert sorted(p.name for p in folder.iterdir()) == ["clip_scores"]  # no summary, whole or partial


def _eval(capsys, *argv):
    code = main(["eval", *COMMON, "--json", *map(str, argv)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    (row,) = json.loads(captured.out.strip().splitlines()[-1])["pipelines"]
    return row


def test_rendering_settings_are_recorded_and_compare_refuses_different_renderings(pipeline, tmp_path, capsys):
    a = _eval(capsys, pipeline, "--output-dir", tmp_path / "a", "--guidance-scale", "3")
    b = _eval(capsys, pipeline, "--output-dir", tmp_path / "b", "--guidance-scale", "3", "--num-inference-steps", "2",
              "--seed-offset", "7", "--pipeline-kwargs", '{"eta": 0.5}', "--negative-prompt", "blurry", "--batch-size",
              "3")  # batches of 3 and 1: one negative prompt per prompt in each
    assert a["rendering"] == {
        "num_inference_steps": 1, "guidance_scale": 3.0, "height": None, "width": None, "negative_prompt": None,
        "pipeline": "StableDiffusionPipeline", "scheduler": "DDIMScheduler", "dtype": "float32", "seed_offset": 0,
    }
    assert b["rendering"]["num_inference_steps"] == 2 and b["rendering"]["kwargs"] == {"eta": 0.5}
    assert "|rendering:steps1,cfg3,StableDiffusionPipeline,DDIMScheduler,float32" in a["signature"]
    assert ",neg#" in b["signature"] and ",seed+7,kwargs#" in b["signature"] and b["rendering"]["negative_prompt"] == "blurry"
    header = read_scores(b["score_file"]).header
    assert header["rendering"] == b["rendering"] and header["signature"]["rendering"] in b["signature"]
    summary = json.loads((tmp_path / "b" / "checkpoint-100" / "summary.json").read_text())
    assert summary["rendering"] == b["rendering"]
    assert a["clip/mean"] != b["clip/mean"]
    code = main(["compare", str(tmp_path / "a"), str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 2 and "rendering: " in err, err
