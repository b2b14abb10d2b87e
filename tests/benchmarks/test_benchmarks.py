"""The benchmark suite runs end to end (``--tiny``) and reports every method with finite figures.

Nothing here asserts on speed: timings depend on the machine. What is checked is that the
benchmark's plumbing works (every method and scenario measured, numbers finite, the markdown
table complete) and that the repeated-library scenario really reads text embeddings from the
cache (no text forward on the second pass).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_throughput.py"

FRESH_METHODS = {
    "ours-default", "ours-fp32", "torchmetrics", "per-image", "floor-fp32", "floor-default", "floor-autocast"
}
SCORED_METHODS = {"ours-default", "ours-fp32", "torchmetrics", "per-image"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    # Batches of 2 for 4 images: two updates per pass, so encoding up front differs from per update.
    return run_script(SCRIPT, tmp_path_factory.mktemp("bench"), "--tiny", "--batch-size", "2")


def run_script(script: Path, out_dir: Path, *args: str) -> tuple[dict, str]:
    """Run a benchmark script on the CPU; its JSON report and what it printed."""
    out = out_dir / f"{script.stem}.json"
    completed = subprocess.run(
        [sys.executable, str(script), "--device", "cpu", *args, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(out.read_text()), completed.stdout


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def test_help_runs() -> None:
    completed = subprocess.run([sys.executable, str(SCRIPT), "--help"], cwd=ROOT, capture_output=True, text=True)
    assert completed.returncode == 0
    assert "--tiny" in completed.stdout and "--json" in completed.stdout


def test_every_method_is_measured_with_finite_numbers(tiny_run: tuple[dict, str]) -> None:
    report, _ = tiny_run
    scenarios = report["models"]["tiny"]["scenarios"]
    assert set(scenarios) == {"fresh", "upfront", "repeated"}
    for name in scenarios:
        assert set(scenarios[name]) == FRESH_METHODS, name
    for scenario in scenarios.values():
        for key, row in scenario.items():
            for field in ("seconds", "images_per_s", "ms_per_image"):
                assert _finite(row[field]) and row[field] > 0, (key, field, row[field])
            assert row["images"] >= 1
            for ratio in list(row["speedup_vs"].values()) + list(row["time_vs_floor"].values()):
                assert _finite(ratio) and ratio > 0, (key, ratio)
            assert "floor-fp32" in row["time_vs_floor"] and "torchmetrics" in row["speedup_vs"]
            assert row["peak_mem_mib"] is None or _finite(row["peak_mem_mib"])
            if key in SCORED_METHODS and not row["shared_across_scenarios"]:
                assert _finite(row["max_abs_diff_vs_ours_fp32"]), key
                assert _finite(row["max_abs_diff_vs_hf_fp32"]), key
            else:
                assert row["max_abs_diff_vs_ours_fp32"] is None
        assert scenario["ours-fp32"]["max_abs_diff_vs_ours_fp32"] == 0.0


def test_scores_agree_across_methods(tiny_run: tuple[dict, str]) -> None:
    # Same model, same images and prompts: every method scores alike (bf16 and resampling aside).
    report, _ = tiny_run
    for scenario in report["models"]["tiny"]["scenarios"].values():
        for key in SCORED_METHODS:
            if not scenario[key]["shared_across_scenarios"]:
                assert scenario[key]["max_abs_diff_vs_ours_fp32"] < 0.05, key


def test_second_pass_of_a_repeated_library_runs_no_text_forward(tiny_run: tuple[dict, str]) -> None:
    report, _ = tiny_run
    scenarios = report["models"]["tiny"]["scenarios"]
    for key in ("ours-default", "ours-fp32"):
        assert scenarios["repeated"][key]["text_forwards_per_pass"] == [0] * report["settings"]["repeats"]
        assert all(n >= 1 for n in scenarios["fresh"][key]["text_forwards_per_pass"])


def test_upfront_scenario_encodes_each_pass_in_one_text_batch(tiny_run: tuple[dict, str]) -> None:
    # 4 new prompts per pass in batches of 2 per update: fresh runs 1 forward per update, the
    # up-front path 1 per cache_prompts batch; both score the same prompts as torchmetrics.
    report, _ = tiny_run
    scenarios = report["models"]["tiny"]["scenarios"]
    repeats = report["settings"]["repeats"]
    for key in ("ours-default", "ours-fp32"):
        assert scenarios["fresh"][key]["text_forwards_per_pass"] == [2] * repeats
        upfront = scenarios["upfront"][key]
        assert upfront["text_forwards_per_pass"] == [1] * repeats
        assert not upfront["shared_across_scenarios"]
        assert _finite(upfront["max_abs_diff_vs_hf_fp32"])
    assert scenarios["upfront"]["torchmetrics"]["shared_across_scenarios"]


def test_markdown_table_lists_every_method_and_target(tiny_run: tuple[dict, str]) -> None:
    report, stdout = tiny_run
    assert report["markdown"] in stdout
    for key in FRESH_METHODS:
        assert f"| {key}" in stdout
    assert "### fresh prompts (every" in stdout and "### same prompt library again" in stdout
    assert "### fresh prompts encoded up front" in stdout
    assert "where ours spends its time" in stdout
    assert "adapter" in stdout  # the torchmetrics adapter is disclosed
    targets = report["targets"]
    assert len(targets) == 6  # the CPU targets
    for target in targets:
        assert _finite(target["value"]), target
        assert target["passed"] in (True, False)
        assert target["target"] in stdout


def test_environment_is_recorded(tiny_run: tuple[dict, str]) -> None:
    env = tiny_run[0]["environment"]
    for key in ("device", "device_name", "cpu_model", "torch_threads", "torch", "transformers", "torchmetrics"):
        assert env[key] not in (None, ""), key


def test_candidates_script_reports_finite_figures(tmp_path: Path) -> None:
    report, _ = run_script(ROOT / "benchmarks" / "bench_candidates.py", tmp_path, "--model", "tiny", "--repeats", "1")
    for section in ("image_tower_ms_per_batch", "text_tower_ms_per_batch", "preprocess_ms_per_batch",
                    "tokenize_ms_per_batch", "image_tower_max_score_diff", "preprocess_max_score_diff_vs_hf_processor"):
        assert report[section] and all(_finite(v) for v in report[section].values()), section


def test_text_benchmark_reports_every_batching(tmp_path: Path) -> None:
    report, stdout = run_script(ROOT / "benchmarks" / "bench_text.py", tmp_path, "--tiny")
    methods = report["methods"]
    assert set(methods) == {"torchmetrics-text", "update-batches", "cache-256-unsorted", "cache-unsorted", "cache-prompts"}
    for name, row in methods.items():
        assert _finite(row["ms_per_prompt"]) and row["ms_per_prompt"] > 0, name
        assert _finite(row["max_score_diff_vs_fp32"]), name
    # 160 prompts: 20 forwards in batches of 8, 1 of 256, 2 of 128 (cache_prompts' CPU default).
    assert methods["update-batches"]["text_forwards"] == 20
    assert methods["cache-256-unsorted"]["text_forwards"] == 1
    assert methods["cache-unsorted"]["text_forwards"] == 2
    assert methods["cache-prompts"]["text_forwards"] == 2
    assert report["token_lengths"]["max"] > 2 * report["token_lengths"]["min"]  # a mixed-length library
    assert "| cache-prompts |" in stdout
