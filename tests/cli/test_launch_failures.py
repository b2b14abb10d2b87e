"""A rank that fails on several devices is reported as on one: ``error: <its error>``, exit code 2.

Each test runs the command line in a subprocess with a fault injected on rank 1 only
(``tests/_helpers/faults/sitecustomize.py``), as a bug, a crash or a bad input would strike
one process of a real launch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
FAULTS = REPO / "tests" / "_helpers" / "faults"
EVAL = ["--max-prompts", "4", "--num-inference-steps", "1", "--accelerator", "cpu", "--precision", "32",
        "--devices", "2"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    pytest.importorskip("diffusers")
    from _helpers.diffusion import build_tiny_pipeline

    path = tmp_path_factory.mktemp("pipelines") / "checkpoint-100"
    build_tiny_pipeline(seed=0).save_pretrained(path)
    return path


def _run(fault, *argv):
    env = {**os.environ, "CLIP_METRIC_FAULT": fault,
           "PYTHONPATH": os.pathsep.join([str(REPO), str(FAULTS), os.environ.get("PYTHONPATH", "")])}
    # A hang would be a failure too: the run must end well within the timeout.
    return subprocess.run([sys.executable, "-m", "clip_metric.cli", *map(str, argv)], env=env, capture_output=True,
                          text=True, timeout=400)


def test_a_rank_that_raises_while_rendering_is_an_error_naming_its_error_and_quiet_hides_the_launch(pipeline):
    done = _run("clip_metric.lightning.generation:DiffusersGenerator.__call__:1:raise", "eval", pipeline, *EVAL,
                "--quiet")
    assert done.returncode == 2, done.stderr
    assert "error: INJECTED FAULT in __call__ on rank 1" in done.stderr
    assert "Traceback" not in done.stderr and "other rank" not in done.stderr
    assert "Initializing distributed" not in done.stderr and "distributed_backend" not in done.stderr


def test_a_rank_whose_process_dies_is_named_with_its_exit_code(pipeline):
    done = _run("clip_metric.lightning.generation:DiffusersGenerator.__call__:1:exit", "eval", pipeline, *EVAL,
                "--quiet")
    assert done.returncode == 2, done.stderr
    assert "error: the process of rank 1 ended with exit code 9" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_usage_error_raised_on_another_rank_while_loading_is_printed_as_on_one(pipeline):
    done = _run("clip_metric.cli.eval:_load_pipeline:1:cli", "eval", pipeline, *EVAL, "--quiet")
    assert done.returncode == 2, done.stderr
    assert "error: INJECTED FAULT in _load_pipeline on rank 1" in done.stderr
    assert "Traceback" not in done.stderr and "CliError" not in done.stderr


def test_score_on_two_devices_reports_the_failing_rank_s_error(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"img{i}.png")
        (tmp_path / f"img{i}.txt").write_text(f"caption number {i}")
    done = _run("clip_metric.cli.score:_score_batches:1:raise", "score", tmp_path, "--devices", "2", "--accelerator",
                "cpu", "--precision", "32", "--workers", "0", "--quiet")
    assert done.returncode == 2, done.stderr
    assert "error: INJECTED FAULT in _score_batches on rank 1" in done.stderr
    assert "Traceback" not in done.stderr
