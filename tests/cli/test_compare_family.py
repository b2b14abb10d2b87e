"""``clip-metric compare`` with many runs: one family of comparisons, adjusted together, and the best row a selection."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clip_metric.cli import main
from clip_metric.records import ScoreRecord, write_scores

PROMPTS = 40
SPREAD = np.linspace(-0.01, 0.01, PROMPTS)  # per-prompt changes around a run's shift


def _save(path, step, scores, images=1):
    if images == 1:
        rows = [ScoreRecord(f"p{i}", f"prompt {i}", float(s), seed=i) for i, s in enumerate(scores)]
    else:  # as clip-metric score writes a folder of parti-0001-1.png, parti-0001-2.png, ...: one caption
        rows = [ScoreRecord(f"p{i}-{k}", f"prompt {i}", float(s), seed=None)
                for i, s in enumerate(scores) for k in range(images)]
    return write_scores(path, rows, step=step, header={"scale": "cosine"})


def _family(tmp_path, shifts, images=1):
    """A base at 0.3 and one run per shift; each run's own p-value is set by its shift."""
    _save(tmp_path / "base" / "step-00000010.jsonl", 10, np.full(PROMPTS, 0.3), images)
    for k, shift in enumerate(shifts):
        _save(tmp_path / f"run{k}" / "step-00000010.jsonl", 10, 0.3 + SPREAD + shift, images)
    return [str(tmp_path / "base"), *(str(tmp_path / f"run{k}") for k in range(len(shifts)))]


def test_a_run_significant_alone_is_not_significant_in_a_family_of_ten(tmp_path, capsys):
    # run0's own interval excludes 0 (p about 0.01); among 10 comparisons Holm's adjusted p is 10x that.
    runs = _family(tmp_path, [0.0025] + [0.0] * 9)
    assert main(["compare", *runs, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["family"] == {"method": "holm", "size": 10, "error_rate": pytest.approx(0.05)}
    first = report["pairs"][0]
    assert first["low"] > 0 and first["significant_unadjusted"] is True
    assert first["significant"] is False
    assert first["p_adjusted"] == pytest.approx(10 * first["p_value"])
    assert first["p_value"] < 0.05 < first["p_adjusted"]

    assert main(["compare", *runs]) == 0
    out = capsys.readouterr().out
    assert "Holm's adjustment over the 10 comparison(s)" in out
    line = next(line for line in out.splitlines() if line.strip().startswith("run0 (step 10) - base"))
    assert line.endswith("not significant after adjustment (its own interval excludes 0)")


def test_a_clear_gain_stays_significant_after_adjustment(tmp_path, capsys):
    runs = _family(tmp_path, [0.004] + [0.0] * 9)
    assert main(["compare", *runs, "--json"]) == 0
    first = json.loads(capsys.readouterr().out)["pairs"][0]
    assert first["significant"] is True and first["p_adjusted"] < 0.05


def test_comparisons_without_an_interval_are_not_counted_in_the_family(tmp_path, capsys):
    runs = _family(tmp_path, [0.004, 0.0])
    _save(tmp_path / "few" / "step-00000010.jsonl", 10, np.full(3, 0.31))  # 3 shared prompts: no interval
    assert main(["compare", *runs, str(tmp_path / "few"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["family"]["size"] == 2
    assert "error" in report["pairs"][2] and "significant" not in report["pairs"][2]


def test_several_images_per_prompt_are_compared_as_one_prompt_each(tmp_path, capsys):
    one = _family(tmp_path / "one", [0.003])
    four = _family(tmp_path / "four", [0.003], images=4)
    assert main(["compare", *one, "--json"]) == 0
    single = json.loads(capsys.readouterr().out)
    assert main(["compare", *four, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    pair, reference = report["pairs"][0], single["pairs"][0]
    assert (pair["shared"], pair["images"]) == (PROMPTS, 4 * PROMPTS)
    assert pair["half_width"] == pytest.approx(reference["half_width"], rel=1e-9)
    last = report["runs"]["run0"]["last"]
    assert last["clip/prompts"] == PROMPTS and last["clip/count"] == 4 * PROMPTS
    assert last["clip/mean_ci"] == pytest.approx(single["runs"]["run0"]["last"]["clip/mean_ci"], rel=1e-9)
    assert main(["compare", *four]) == 0
    assert f"over {PROMPTS} shared prompts, {4 * PROMPTS} images" in capsys.readouterr().out


def test_the_best_row_is_labelled_as_a_selection_over_the_evaluations(tmp_path, capsys):
    # A plateaued run evaluated 50 times: its best is the maximum of 50 noisy means.
    rng = np.random.default_rng(0)
    difficulty = rng.normal(0.3, 0.03, PROMPTS)
    for step in range(1, 51):
        _save(tmp_path / "plateau" / f"step-{step:08d}.jsonl", step, difficulty + rng.normal(0, 0.01, PROMPTS))
    assert main(["compare", str(tmp_path / "plateau"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["runs"]["plateau"]
    assert report["best"]["selected_from"] == 50
    assert report["best"]["clip/mean"] > report["last"]["clip/mean"]
    assert main(["compare", str(tmp_path / "plateau")]) == 0
    out = capsys.readouterr().out
    assert "highest mean among each run's 50 evaluations, selected after the fact" in out
    assert "it is not compared (the comparisons use the last)" in out
