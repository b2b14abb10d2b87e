"""``examples/diffusers_train_text_to_image.py``: diffusers' training-script shape with the lines of docs/accelerate.md.

Trained with ``--mixed_precision bf16`` (vae and text encoder in bf16, the unet in fp32 under
accelerate's autocast, validation under ``log_validation``'s autocast), checkpointed with
``save_state`` before validating at the same step, and resumed with ``--resume_from_checkpoint latest``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("accelerate")
pytest.importorskip("diffusers")

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "diffusers_train_text_to_image.py"
# Bounds every run: a process waiting in a collective fails the test instead of hanging it.
TIMEOUT = 300


def _run(tmp_path: Path, output_dir: Path, *args: str, processes: int = 1) -> list[dict]:
    if processes == 1:
        command = [sys.executable, str(SCRIPT)]
    else:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
                   "--multi_gpu", "--num_machines", "1", "--mixed_precision", "bf16", "--dynamo_backend",
                   "no", str(SCRIPT)]
    command += ["--cpu", "--json", "--mixed_precision", "bf16", "--output_dir", str(output_dir), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{processes} process(es) did not finish in {TIMEOUT} s")
    assert done.returncode == 0, done.stderr[-4000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def _fp32_scores_of_the_last_evaluation(output_dir: Path) -> tuple[list[float], list[float]]:
    """The last score file's scores, and the same prompts rendered again with the saved pipeline
    (as the run rendered them) and scored in fp32 under no autocast."""
    from diffusers import StableDiffusionPipeline

    from clip_metric import ClipScore, DiffusersGenerator
    from clip_metric.compare import load_run
    from clip_metric.demos.tiny_clip import embedded_model_path
    from clip_metric.records import read_scores
    from _helpers.diffusion import as_mixed_precision

    last = load_run(output_dir / "clip_scores")[-1]
    records = read_scores(last.path).records
    pipeline = as_mixed_precision(StableDiffusionPipeline.from_pretrained(output_dir, safety_checker=None),
                                  torch.bfloat16)
    generate = DiffusersGenerator(num_inference_steps=2).bind(pipeline)
    prompts, seeds = [r.prompt for r in records], [r.seed for r in records]
    with torch.autocast("cpu"):  # log_validation's
        images = generate(prompts, seeds)
    metric = ClipScore(embedded_model_path(), precision="32", keep_scores=True)
    metric.update(images, prompts)
    return [r.score for r in records], metric.per_sample()[1].tolist()


def test_bf16_fine_tune_runs_to_the_end_and_scores_equal_a_true_fp32_evaluation(tmp_path):
    out = tmp_path / "run"
    history = _run(tmp_path, out, "--max_train_steps", "4", "--checkpointing_steps", "2", "--validation_steps", "2")
    assert [row["step"] for row in history] == [2, 4]
    assert "clip/delta" not in history[0] and "clip/delta" in history[1]
    assert all(row["clip/count"] == 8 for row in history)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    logged, fp32 = _fp32_scores_of_the_last_evaluation(out)
    assert logged == pytest.approx(fp32, abs=1e-5)


@pytest.mark.slow
def test_bf16_fine_tune_runs_to_the_end_on_two_processes(tmp_path):
    from clip_metric.compare import load_run

    out = tmp_path / "run"
    history = _run(tmp_path, out, "--max_train_steps", "4", "--checkpointing_steps", "2", "--validation_steps", "2",
                   processes=2)
    assert [row["step"] for row in history] == [2, 4] and {row["processes"] for row in history} == {2}
    assert all(row["clip/count"] == 8 for row in history) and "clip/delta" in history[1]
    assert [e.step for e in load_run(out / "clip_scores")] == [2, 4]
    logged, fp32 = _fp32_scores_of_the_last_evaluation(out)
    assert logged == pytest.approx(fp32, abs=1e-5)


@pytest.mark.slow
def test_resumed_run_logs_the_same_scores_and_deltas_as_the_straight_run(tmp_path):
    """Checkpoints every 4 steps, each saved before the validation of its step; the resumed run
    pairs its first delta with the evaluation at the checkpoint's step, as the straight run does."""
    from clip_metric.records import read_scores

    schedule = ["--checkpointing_steps", "4", "--validation_steps", "4"]
    straight = _run(tmp_path, tmp_path / "straight", "--max_train_steps", "12", *schedule)
    first = _run(tmp_path, tmp_path / "resumed", "--max_train_steps", "8", *schedule)
    resumed = _run(tmp_path, tmp_path / "resumed", "--max_train_steps", "12", "--resume_from_checkpoint", "latest",
                   *schedule)
    assert [row["step"] for row in straight] == [4, 8, 12]
    assert [row["step"] for row in first + resumed] == [4, 8, 12]
    for a, b in zip(straight, first + resumed):
        assert b["clip/mean"] == pytest.approx(a["clip/mean"], abs=1e-7), a["step"]  # the same training
        assert ("clip/delta" in a) == ("clip/delta" in b), a["step"]
        if "clip/delta" in a:
            assert b["clip/delta"] == pytest.approx(a["clip/delta"], abs=1e-7), a["step"]
    header = read_scores(tmp_path / "resumed" / "clip_scores" / "step-00000012.jsonl").header
    assert header["paired_with"]["step"] == 8


_DOCS_LINES = r'''
import re, sys
from pathlib import Path
from types import SimpleNamespace

import torch
from accelerate import Accelerator
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from clip_metric.demos.tiny_clip import embedded_model_path
from clip_metric.evaluation import PromptEvaluator
from clip_metric.lightning import DiffusersGenerator

docs, model_dir = Path(sys.argv[1]).read_text(), sys.argv[2]
block = docs.split("2. Evaluate on every process", 1)[1].split("```python", 1)[1].split("```", 1)[0]
# diffusers' train_text_to_image.py with --mixed_precision bf16, up to its validation.
accelerator = Accelerator(mixed_precision="bf16", cpu=True)
weight_dtype = torch.bfloat16
tokenizer = CLIPTokenizer.from_pretrained(model_dir, subfolder="tokenizer")
text_encoder = CLIPTextModel.from_pretrained(model_dir, subfolder="text_encoder").to(dtype=weight_dtype)
vae = AutoencoderKL.from_pretrained(model_dir, subfolder="vae").to(dtype=weight_dtype)
unet = UNet2DConditionModel.from_pretrained(model_dir, subfolder="unet")
unet = accelerator.prepare(unet)
clip_evaluator = PromptEvaluator(embedded_model_path(), prompts=["a red circle", "two blue squares"], precision="32")
args = SimpleNamespace(pretrained_model_name_or_path=model_dir, validation_epochs=1)
epoch, global_step = 0, 10
exec(block)
print("clip/mean", result.summary["mean"])
'''


@pytest.mark.slow
def test_the_guides_validation_lines_render_a_bf16_fine_tune_as_written(tmp_path):
    from _helpers.diffusion import build_tiny_pipeline

    build_tiny_pipeline().save_pretrained(tmp_path / "pipeline")
    docs = Path(__file__).resolve().parents[2] / "docs" / "accelerate.md"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-W", "error::FutureWarning", "-c", _DOCS_LINES, str(docs),
                           str(tmp_path / "pipeline")], capture_output=True, text=True, env=env, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "clip/mean" in done.stdout


def test_fp16_on_the_cpu_is_refused_at_the_start_naming_bf16(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, str(SCRIPT), "--cpu", "--mixed_precision", "fp16", "--output_dir", str(out),
               "--max_train_steps", "2", "--checkpointing_steps", "2", "--validation_steps", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=TIMEOUT)
    assert done.returncode == 1, done.stderr[-4000:]
    assert "Traceback" not in done.stderr
    assert "fp16 is not supported on the CPU" in done.stderr and "--mixed_precision bf16" in done.stderr
    assert not (out / "tiny-pipeline").exists()  # refused before any model is built or loaded
