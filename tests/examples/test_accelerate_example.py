"""``examples/accelerate_text_to_image.py`` under ``accelerate launch``: 1 and 2 CPU processes agree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("accelerate")

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "accelerate_text_to_image.py"
ARGS = ["--cpu", "--json", "--max-train-steps", "20", "--eval-every", "10", "--num-prompts", "64"]
# Bounds every run: a process waiting in a collective fails the test instead of hanging it.
TIMEOUT = 300


def _run(tmp_path: Path, processes: int, *extra: str) -> list[dict]:
    if processes == 1:
        command = [sys.executable, str(SCRIPT)]
    else:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
                   "--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   str(SCRIPT)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run([*command, *ARGS, *extra], capture_output=True, text=True, cwd=tmp_path, env=env,
                              timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{processes} process(es) did not finish in {TIMEOUT} s")
    assert done.returncode == 0, done.stderr[-4000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def _assert_same(one: list[dict], two: list[dict]) -> None:
    assert [row["step"] for row in one] == [row["step"] for row in two] == [0, 10, 20]
    for a, b in zip(one, two):
        assert a.keys() == b.keys()
        for key in a:
            if key.startswith("clip/"):
                assert b[key] == pytest.approx(a[key], abs=1e-5), (a["step"], key)


@pytest.mark.slow
def test_one_and_two_processes_print_the_same_scores_and_main_process_only_does_not_hang(tmp_path):
    from clip_metric.compare import load_run

    one = _run(tmp_path, 1, "--output-dir", str(tmp_path / "scores"))
    two = _run(tmp_path, 2)
    main_only = _run(tmp_path, 2, "--main-process-only")
    assert {row["processes"] for row in one} == {1}
    assert {row["processes"] for row in two} == {row["processes"] for row in main_only} == {2}
    _assert_same(one, two)
    _assert_same(one, main_only)
    assert "clip/delta" not in one[0] and "clip/delta" in one[1]
    assert one[-1]["clip/mean"] > one[0]["clip/mean"]  # it learns
    # Score files for clip-metric compare, one per evaluation.
    evaluations = load_run(tmp_path / "scores")
    assert [e.step for e in evaluations] == [0, 10, 20] and all(e.scores.size == 64 for e in evaluations)
