"""``clip-metric eval --quiet``: library notices stay off stderr (a fresh process: they are logged once)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from _helpers.diffusion import build_tiny_pipeline

pytest.importorskip("diffusers")


def test_quiet_keeps_library_notices_of_the_checks_before_loading_off_stderr(tmp_path):
    pipeline = tmp_path / "checkpoint-1"
    build_tiny_pipeline(seed=0).save_pretrained(pipeline)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run(  # refused after the pipeline class is checked: nothing renders
        [sys.executable, "-m", "clip_metric.cli", "eval", str(pipeline), "--quiet", "--num-inference-steps", "1001"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [line for line in done.stderr.strip().splitlines() if
                                                line.startswith("error: ")], done.stderr
