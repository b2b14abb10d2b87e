"""``clip-metric compare`` on what the package writes: any score file, resumed runs, odd files among them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clip_metric.cli import main
from clip_metric.intervals import MIN_PAIRS
from clip_metric.records import ScoreRecord, write_scores
from clip_metric.signature import SEED_RULE, ScoreSignature

ROOT = Path(__import__("clip_metric").__file__).parent.parent
SIGNATURE = ScoreSignature("0.1.0", "local:abc", "32,bicubic+aa,crop32", "32", "cosine", "p#00,n40,all", SEED_RULE, 1)


def _rows(mean: float, n: int = 40, seed: int = 0) -> list[ScoreRecord]:
    base = np.random.default_rng(0).normal(0.3, 0.03, n)  # the same prompts, equally hard in every run
    scores = base - 0.3 + mean + np.random.default_rng(seed + 1).normal(0, 0.005, n)
    return [ScoreRecord(f"p{i}", f"prompt {i}", float(s), seed=i) for i, s in enumerate(scores)]


def _save(path, step, mean, n=40, seed=0, **header):
    return write_scores(path, _rows(mean, n, seed), step=step, header={"scale": "cosine", **header})


def _strict_json(text: str):
    def refuse(name):
        raise ValueError(f"{name} in the report")

    return json.loads(text, parse_constant=refuse)


def test_score_output_files_of_any_name_compare_as_files_or_folders(tmp_path, tiny_clip_dir, capsys):
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(MIN_PAIRS):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
        (folder / f"{i:02d}.txt").write_text(f"caption {i}")
    outputs = [tmp_path / "a" / "scores.jsonl", tmp_path / "b" / "scores.csv"]
    for output in outputs:
        assert main(["score", str(folder), "--model", str(tiny_clip_dir), "--precision", "32", "--quiet",
                     "--output", str(output)]) == 0
    capsys.readouterr()
    for argv in ([str(p) for p in outputs], [str(tmp_path / "a"), str(tmp_path / "b")]):
        assert main(["compare", *argv]) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        assert f"+0.0000 +/- 0.0000 [+0.0000, +0.0000] over {MIN_PAIRS} shared prompts" in out


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_and_a_link_to_dev_zero_among_score_files_neither_block_nor_fill_memory(tmp_path):
    folder = tmp_path / "run" / "clip_scores"
    _save(folder / "step-00000001.jsonl", 1, 0.3)
    os.mkfifo(folder / "step-00000002.jsonl")
    (folder / "step-00000003.jsonl").symlink_to("/dev/zero")
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))\n"
        "from clip_metric.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", code, "compare", str(tmp_path / "run"), "--json"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"warning: {folder / 'step-00000002.jsonl'} is a FIFO, not a regular file; skipped" in result.stderr
    assert f"warning: {folder / 'step-00000003.jsonl'} is a device, not a regular file; skipped" in result.stderr
    assert _strict_json(result.stdout)["runs"]["run"]["last"]["step"] == 1


def test_a_resumed_lightning_run_is_one_run(tmp_path, capsys):
    v0 = tmp_path / "exp" / "lightning_logs" / "version_0" / "clip_scores"
    v1 = tmp_path / "exp" / "lightning_logs" / "version_1" / "clip_scores"
    _save(v0 / "step-00000100.jsonl", 100, 0.30, stage="fit")
    last = _save(v0 / "step-00000200.jsonl", 200, 0.31, stage="fit",
                 paired_with={"step": 100, "file": str((v0 / "step-00000100.jsonl").resolve())})
    _save(v1 / "step-00000300.jsonl", 300, 0.32, stage="fit", paired_with={"step": 200, "file": str(last.resolve())})
    _save(tmp_path / "base" / "clip_scores" / "step-00000300.jsonl", 300, 0.30)
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "exp"), "--json"]) == 0
    report = _strict_json(capsys.readouterr().out)
    assert sorted(report["runs"]) == ["base", "exp"]
    assert report["runs"]["exp"]["last"]["step"] == 300 and report["runs"]["exp"]["best"]["step"] == 300
    (pair,) = report["pairs"]
    assert pair["run"] == "exp" and pair["step"] == 300 and pair["difference"] == pytest.approx(0.02, abs=0.003)


def test_the_newest_of_several_evaluations_at_one_step_is_the_last(tmp_path, capsys):
    folder = tmp_path / "run" / "clip_scores"
    _save(folder / "step-00000100.jsonl", 100, 0.30)
    for k in range(1, 12):
        _save(folder / f"step-00000100-{k}.jsonl", 100, 0.30 + k / 100, seed=k)
    assert main(["compare", str(tmp_path / "run"), "--json"]) == 0
    last = _strict_json(capsys.readouterr().out)["runs"]["run"]["last"]
    assert last["clip/mean"] == pytest.approx(0.41, abs=0.003)


@pytest.mark.slow
def test_eval_twice_into_one_folder_compares_the_newer_evaluation(tmp_path, capsys):
    pytest.importorskip("diffusers")
    from _helpers.diffusion import build_tiny_pipeline

    pipeline = tmp_path / "checkpoint-100"
    build_tiny_pipeline(seed=0).save_pretrained(pipeline)
    common = ["eval", str(pipeline), "--max-prompts", "12", "--num-inference-steps", "2", "--accelerator", "cpu",
              "--precision", "32", "--quiet", "--json", "--output-dir", str(tmp_path / "evals")]
    assert main([*common, "--num-inference-steps", "2"]) == 0
    assert main([*common, "--num-inference-steps", "3"]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["pipelines"][0]
    assert second["score_file"].endswith("step-00000100-1.jsonl")
    assert main(["compare", str(tmp_path / "evals"), "--json"]) == 0
    last = _strict_json(capsys.readouterr().out)["runs"]["evals"]["last"]
    assert last["clip/mean"] == pytest.approx(second["clip/mean"], abs=1e-6)


def test_an_empty_evaluation_is_never_the_best(tmp_path, capsys):
    folder = tmp_path / "run" / "clip_scores"
    write_scores(folder / "step-00000100.jsonl", [], step=100, header={"scale": "cosine"})
    _save(folder / "step-00000200.jsonl", 200, 0.30)
    assert main(["compare", str(tmp_path / "run"), "--json"]) == 0
    captured = capsys.readouterr()
    report = _strict_json(captured.out)  # no NaN in the report
    assert report["runs"]["run"]["best"]["step"] == 200
    assert "step 100" in captured.err and "holds no scored prompts" in captured.err


def test_a_run_scored_with_another_model_before_its_last_evaluation_is_flagged(tmp_path, capsys):
    folder = tmp_path / "mixed" / "clip_scores"
    _save(folder / "step-00000100.jsonl", 100, 0.35, signature={**SIGNATURE.as_dict(), "model": "other@main"})
    _save(folder / "step-00000200.jsonl", 200, 0.31, signature=SIGNATURE.as_dict())
    _save(tmp_path / "base" / "clip_scores" / "step-00000100.jsonl", 100, 0.30, signature=SIGNATURE.as_dict())
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "mixed")]) == 0
    err = capsys.readouterr().err
    assert "warning: mixed's evaluations were scored differently from its last (step 200)" in err
    assert "step 100 (step-00000100.jsonl): model: other@main vs local:abc" in err
    assert "not comparable" in err


@pytest.mark.parametrize(
    ("changes", "named"),
    [({"model": 5, "images_per_prompt": "1"}, ["model=5 (int)", "images_per_prompt='1' (str)"]),
     ({"images_per_prompt": "1"}, ["images_per_prompt='1' (str)"])],
)
def test_a_malformed_signature_is_an_error_naming_its_fields(tmp_path, capsys, changes, named):
    _save(tmp_path / "a" / "clip_scores" / "step-00000001.jsonl", 1, 0.30, signature=SIGNATURE.as_dict())
    bad = _save(tmp_path / "b" / "clip_scores" / "step-00000001.jsonl", 1, 0.31,
                signature={**SIGNATURE.as_dict(), **changes})
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--allow-different-signatures"]) == 2
    err = capsys.readouterr().err
    assert f"error: {bad}: malformed score signature" in err
    for text in named:
        assert text in err
    assert "1 vs 1" not in err


def test_plot_onto_a_link_replaces_the_link_and_keeps_its_target(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    _save(tmp_path / "a" / "clip_scores" / "step-00000100.jsonl", 100, 0.30)
    target = tmp_path / "elsewhere.png"
    target.write_bytes(b"not to be touched")
    link = tmp_path / "clip.png"
    link.symlink_to(target)
    assert main(["compare", str(tmp_path / "a"), "--plot", str(link)]) == 0
    assert target.read_bytes() == b"not to be touched"
    assert not link.is_symlink() and link.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("shared", [MIN_PAIRS - 1, MIN_PAIRS])
def test_compare_gives_an_interval_from_the_same_pair_count_as_the_evaluator(tmp_path, capsys, shared):
    _save(tmp_path / "a" / "clip_scores" / "step-00000001.jsonl", 1, 0.30, n=shared)
    _save(tmp_path / "b" / "clip_scores" / "step-00000001.jsonl", 1, 0.32, n=shared, seed=1)
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert (f"over {shared} shared prompts" in out) == (shared >= MIN_PAIRS)
    assert ("not comparable" in out) == (shared < MIN_PAIRS)
