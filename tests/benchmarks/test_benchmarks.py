"""Every benchmark script runs end to end (``--tiny``) and reports every method with finite figures.

Nothing here asserts on speed: timings depend on the machine. What is checked is that each
script's plumbing works (every method and scenario measured, numbers finite, the markdown report
complete), that the repeated-library scenario really reads text embeddings from the cache (no
text forward on the second pass), and that the scripts keep to their layout (a README line each,
the harness imported as a sibling, no ``sys.path`` changes).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
# Each script's --tiny run, with what it needs besides --device cpu --tiny --json.
TINY_ARGS = {
    # Batches of 2 for 4 images: two updates per pass, so encoding up front differs from per update.
    "bench_throughput": ["--batch-size", "2"],
    "bench_text": [],
    "bench_candidates": [],
    "bench_imports": [],
    "bench_loaders": [],
    "bench_adaptive": [],
    "bench_score_folder": [],
    "bench_cmmd": [],
}
# Most of a tiny run is single-threaded Python (imports, model loading): a few side by side
# shorten the wall time on CI's 2 cores without running out of memory. One torch thread each: on
# a busy machine two threads meeting after every tiny operation more than double a run's time.
PARALLEL = 3
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

FRESH_METHODS = {
    "ours-default", "ours-fp32", "torchmetrics", "per-image", "floor-fp32", "floor-default", "floor-autocast"
}
SCORED_METHODS = {"ours-default", "ours-fp32", "torchmetrics", "per-image"}
TEXT_METHODS = {"torchmetrics-text", "update-batches", "cache-256-unsorted", "cache-unsorted", "cache-prompts"}
IMPORT_VARIANTS = {"python", "torchmetrics", "ClipScore", "clip_metric", "lightning", "cli-help"}


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    report: dict | None

    def check(self) -> dict:
        assert self.returncode == 0, self.stderr[-4000:]
        assert self.report is not None
        return self.report


def _run(argv: list[str], out: Path | None) -> Run:
    done = subprocess.run(argv, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    report = json.loads(out.read_text()) if out is not None and out.is_file() else None
    return Run(done.returncode, done.stdout, done.stderr, report)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Every script's ``--tiny`` run (keyed by name) and ``--help`` (keyed ``name --help``)."""
    out_dir = tmp_path_factory.mktemp("bench")
    jobs = {}
    for name, extra in TINY_ARGS.items():
        script = str(BENCHMARKS / f"{name}.py")
        out = out_dir / f"{name}.json"
        jobs[name] = ([sys.executable, script, "--device", "cpu", "--tiny", *extra, "--json", str(out)], out)
        jobs[f"{name} --help"] = ([sys.executable, script, "--help"], None)
    with ThreadPoolExecutor(PARALLEL) as pool:
        futures = {key: pool.submit(_run, argv, out) for key, (argv, out) in jobs.items()}
        return {key: future.result() for key, future in futures.items()}


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# --------------------------------------------------------------------------------------- layout
def test_every_script_has_a_tiny_run_and_a_readme_line() -> None:
    scripts = {path.stem for path in BENCHMARKS.glob("*.py")}
    assert scripts == set(TINY_ARGS)
    readme = (BENCHMARKS / "README.md").read_text()
    for name in scripts:
        assert f"`{name}.py`" in readme and f"python benchmarks/{name}.py --device cpu --json" in readme, name


def test_no_benchmark_changes_the_import_path() -> None:
    for path in BENCHMARKS.rglob("*.py"):
        assert "sys.path" not in path.read_text(), path


@pytest.mark.parametrize("name", sorted(TINY_ARGS))
def test_help_lists_the_common_options(runs: dict[str, Run], name: str) -> None:
    run = runs[f"{name} --help"]
    assert run.returncode == 0, run.stderr[-4000:]
    for option in ("--device", "--json", "--markdown", "--tiny"):
        assert option in run.stdout, (name, option)


@pytest.mark.parametrize("name", sorted(TINY_ARGS))
def test_environment_is_recorded(runs: dict[str, Run], name: str) -> None:
    report = runs[name].check()
    env = report["environment"]
    for key in ("device", "device_name", "cpu_model", "torch_threads", "torch", "transformers", "torchmetrics",
                "clip_metric", "package_sources_sha256", "command"):
        assert env[key] not in (None, ""), (name, key)
    assert "load_average_at_start" in env and "load_average_at_end" in env
    assert report["markdown"] in runs[name].stdout  # the report printed is the one saved


# --------------------------------------------------------------------------------------- throughput
@pytest.fixture(scope="module")
def throughput(runs: dict[str, Run]) -> tuple[dict, str]:
    return runs["bench_throughput"].check(), runs["bench_throughput"].stdout


def test_every_method_is_measured_with_finite_numbers(throughput: tuple[dict, str]) -> None:
    report, _ = throughput
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


def test_scores_agree_across_methods(throughput: tuple[dict, str]) -> None:
    # Same model, same images and prompts: every method scores alike (bf16 and resampling aside).
    report, _ = throughput
    for scenario in report["models"]["tiny"]["scenarios"].values():
        for key in SCORED_METHODS:
            if not scenario[key]["shared_across_scenarios"]:
                assert scenario[key]["max_abs_diff_vs_ours_fp32"] < 0.05, key


def test_second_pass_of_a_repeated_library_runs_no_text_forward(throughput: tuple[dict, str]) -> None:
    report, _ = throughput
    scenarios = report["models"]["tiny"]["scenarios"]
    for key in ("ours-default", "ours-fp32"):
        assert scenarios["repeated"][key]["text_forwards_per_pass"] == [0] * report["settings"]["repeats"]
        assert all(n >= 1 for n in scenarios["fresh"][key]["text_forwards_per_pass"])


def test_upfront_scenario_encodes_each_pass_in_one_text_batch(throughput: tuple[dict, str]) -> None:
    # 4 new prompts per pass in batches of 2 per update: fresh runs 1 forward per update, the
    # up-front path 1 per cache_prompts batch; both score the same prompts as torchmetrics.
    report, _ = throughput
    scenarios = report["models"]["tiny"]["scenarios"]
    repeats = report["settings"]["repeats"]
    for key in ("ours-default", "ours-fp32"):
        assert scenarios["fresh"][key]["text_forwards_per_pass"] == [2] * repeats
        upfront = scenarios["upfront"][key]
        assert upfront["text_forwards_per_pass"] == [1] * repeats
        assert not upfront["shared_across_scenarios"]
        assert _finite(upfront["max_abs_diff_vs_hf_fp32"])
    assert scenarios["upfront"]["torchmetrics"]["shared_across_scenarios"]


def test_markdown_table_lists_every_method_and_target(throughput: tuple[dict, str]) -> None:
    report, stdout = throughput
    for key in FRESH_METHODS:
        assert f"| {key}" in stdout
    assert "### fresh prompts (every" in stdout and "### same prompt library again" in stdout
    assert "### fresh prompts encoded up front" in stdout
    assert "where ours spends its time" in stdout
    assert "adapter" in stdout  # the torchmetrics adapter is disclosed
    breakdown = report["models"]["tiny"]["breakdown"]
    assert set(breakdown) == {"ours-default", "ours-fp32"}
    for row in breakdown.values():
        assert all(_finite(v) for v in row["ms_per_batch"].values())
    targets = report["targets"]
    assert len(targets) == 6  # the CPU targets
    for target in targets:
        assert _finite(target["value"]), target
        assert target["passed"] in (True, False)
        assert target["target"] in stdout


# --------------------------------------------------------------------------------------- text, candidates
def test_text_benchmark_reports_every_batching(runs: dict[str, Run]) -> None:
    report = runs["bench_text"].check()
    methods = report["methods"]
    assert set(methods) == TEXT_METHODS
    for name, row in methods.items():
        assert _finite(row["ms_per_prompt"]) and row["ms_per_prompt"] > 0, name
        assert _finite(row["max_score_diff_vs_fp32"]), name
    # 160 prompts: 20 forwards in batches of 8, 1 of 256, 2 of 128 (cache_prompts' CPU default).
    assert methods["update-batches"]["text_forwards"] == 20
    assert methods["cache-256-unsorted"]["text_forwards"] == 1
    assert methods["cache-unsorted"]["text_forwards"] == 2
    assert methods["cache-prompts"]["text_forwards"] == 2
    assert report["token_lengths"]["max"] > 2 * report["token_lengths"]["min"]  # a mixed-length library
    assert "| cache-prompts |" in runs["bench_text"].stdout


def test_candidates_script_reports_finite_figures(runs: dict[str, Run]) -> None:
    report = runs["bench_candidates"].check()
    for section in ("image_tower_ms_per_batch", "text_tower_ms_per_batch", "preprocess_ms_per_batch",
                    "tokenize_ms_per_batch", "image_tower_max_score_diff", "text_tower_max_score_diff",
                    "preprocess_max_abs_pixel_diff_vs_hf_processor", "preprocess_max_score_diff_vs_hf_processor"):
        assert report[section] and all(_finite(v) for v in report[section].values()), section
    for variant in report["image_tower_ms_per_batch"]:
        assert f"| {variant} |" in runs["bench_candidates"].stdout


# --------------------------------------------------------------------------------------- imports
def test_import_cost_of_every_variant_is_measured(runs: dict[str, Run]) -> None:
    report = runs["bench_imports"].check()
    variants = report["variants"]
    assert set(variants) == IMPORT_VARIANTS
    for name, row in variants.items():
        assert len(row["seconds_all"]) == report["settings"]["repeats"], name
        for field in ("seconds", "seconds_min", "net_seconds", "x_torchmetrics"):
            assert _finite(row[field]), (name, field)
        assert row["seconds"] > 0 and isinstance(row["heavy_modules"], list), name
        assert isinstance(row["modules_loaded"], int) and row["modules_loaded"] > 0, name
        assert f"`{row['command']}`" in runs["bench_imports"].stdout
    # The module listing works: the interpreter alone loads none of them, torchmetrics loads torch.
    assert variants["python"]["heavy_modules"] == []
    assert "torch" in variants["torchmetrics"]["heavy_modules"]
    assert "lightning" in variants["lightning"]["heavy_modules"]
    assert variants["torchmetrics"]["beyond_torchmetrics"] == []
    assert "clip_metric" in variants["ClipScore"]["beyond_torchmetrics"]
    assert all(_finite(value) for value in report["ratios"].values())
    assert len(report["foreign_cpu_share_per_round"]) == report["settings"]["repeats"]
    targets = report["targets"]
    assert len(targets) == 4
    for target in targets:
        assert _finite(target["value"]) and target["passed"] in (True, False), target
        assert target["target"] in runs["bench_imports"].stdout


# --------------------------------------------------------------------------------------- loaders
def test_loaders_benchmark_times_every_format_at_two_sizes(runs: dict[str, Run]) -> None:
    report = runs["bench_loaders"].check()
    formats = report["results"]["formats"]
    assert set(formats) == {"txt", "json-object", "json-list", "jsonl", "csv", "tsv", "captions-jsonl"}
    for figures in formats.values():
        assert all(_finite(v) for v in figures["seconds"].values()) and _finite(figures["growth_over_linear"])
    assert set(report["results"]["bundled"]) == {"parti", "geneval", "parti, max_prompts=256"}
    assert all(_finite(ms) for ms in report["results"]["bundled"].values())
    assert len(report["targets"]) == 2 * len(formats) + 1


# --------------------------------------------------------------------------------------- adaptive
def test_adaptive_benchmark_reports_images_per_evaluation_over_whole_runs(runs: dict[str, Run]) -> None:
    report = runs["bench_adaptive"].check()
    demo, simulated, skewed = (report["results"][k] for k in ("demo", "simulated", "skewed"))
    assert demo["pairs"] and all(-1 <= p["correlation"] <= 1 and _finite(p["std_delta"]) for p in demo["pairs"])
    assert demo["measured_rho"] == [p["correlation"] for p in demo["pairs"]]
    for row in demo["widths"].values():
        # Every checkpoint evaluated adaptively, the first included.
        assert [e["checkpoint"] for e in row["evaluations"]] == list(range(demo["checkpoints"]))
        assert all(1 <= e["images"] <= demo["library"] for e in row["evaluations"])
        assert row["evaluations"][0]["paired_formula"] is None
        assert all(e["paired_formula"] >= 2 and e["unpaired_formula"] >= 2 for e in row["evaluations"][1:])
        assert 0 < row["ratio_over_full_library"] <= 1 and _finite(row["ratio_over_unpaired"])
        assert 0 <= row["reached"] <= row["paired_evaluations"] == demo["checkpoints"] - 1
    for cells in simulated["correlations"].values():
        for cell in cells.values():
            assert 0 <= cell["coverage"] <= 1 and 0 <= cell["miss_rate"] <= 1
            assert cell["paired_formula"] <= cell["unpaired_formula"] and _finite(cell["ratio_over_paired"])
    for cells in skewed["stopped"].values():
        assert set(cells) == {"plain t", "skew-corrected"} and all(0 <= c["coverage"] <= 1 for c in cells.values())
    assert "Images per evaluation over whole adaptive runs" in report["markdown"]


# --------------------------------------------------------------------------------------- score folder
def test_score_folder_benchmark_compares_decoding_workers(runs: dict[str, Run]) -> None:
    report = runs["bench_score_folder"].check()
    variants = report["results"]["variants"]
    assert set(variants) == {"workers=0", "workers=2"}
    for row in variants.values():
        assert _finite(row["seconds"]) and row["seconds"] > 0 and _finite(row["images_per_s"])
    assert variants["workers=0"]["speedup_vs_no_workers"] == 1.0
    assert len(report["targets"]) == 1


# --------------------------------------------------------------------------------------- cmmd
def test_cmmd_benchmark_compares_blocked_with_one_shot(runs: dict[str, Run]) -> None:
    report = runs["bench_cmmd"].check()
    assert set(report["methods"]) == {"one-shot", "blocked"}
    for row in report["methods"].values():
        assert _finite(row["seconds"]) and row["seconds"] > 0 and _finite(row["value"])
    # The blocked value is the float64 definition's, whatever the machine's speed.
    assert report["methods"]["blocked"]["abs_error_vs_float64"] < 1e-6
    assert report["large"]["n"] == 1000 and _finite(report["large"]["seconds"])
    assert len(report["targets"]) == 3
    assert "| blocked |" in runs["bench_cmmd"].stdout
