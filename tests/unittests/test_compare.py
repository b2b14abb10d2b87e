"""Direct tests of ``clip_metric.compare``: paired differences, loading runs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from clip_metric.compare import (
    MIN_PAIRS,
    Evaluation,
    best_evaluation,
    find_runs,
    load_run,
    paired_difference,
    read_scores_file,
)
from clip_metric.records import ScoreRecord, write_scores

KEYS = tuple((f"id{i}", f"prompt {i}", 1000 + i) for i in range(60))


def _evaluation(scores, keys=KEYS, step=1, name="run") -> Evaluation:
    return Evaluation(step, Path(name), tuple(keys), np.asarray(scores, dtype=np.float64))


def _noisy(seed: int, n: int = 60) -> np.ndarray:
    return 0.3 + np.random.default_rng(seed).normal(0.0, 0.03, n)


def _save(run: Path, step: int, scores, keys=KEYS, name: str | None = None) -> Path:
    records = [ScoreRecord(k[0], k[1], float(s), seed=k[2]) for k, s in zip(keys, scores)]
    return write_scores(run / "clip_scores" / (name or f"step-{step:08d}.jsonl"), records, step=step)


# --------------------------------------------------------------------------- paired_difference


def test_a_known_shift_is_found_and_significant():
    a = _noisy(0)
    b = a + 0.02 + np.random.default_rng(1).normal(0.0, 0.005, a.size)
    result = paired_difference(_evaluation(a), _evaluation(b))
    assert result.difference == pytest.approx(float(np.mean(b - a)))
    assert result.difference == pytest.approx(0.02, abs=0.003)
    assert result.low < result.difference < result.high
    assert result.low > 0 and result.significant
    assert result.shared == 60 and result.level == 0.95


def test_a_negative_shift_is_significant_with_a_negative_interval():
    a = _noisy(0)
    result = paired_difference(_evaluation(a), _evaluation(a - 0.01 + _noisy(5) * 0.01))
    assert result.high < 0 and result.significant


def test_identical_runs_show_no_difference():
    a = _noisy(2)
    result = paired_difference(_evaluation(a), _evaluation(a.copy()))
    assert result.difference == 0.0 and result.low == 0.0 and result.high == 0.0
    assert not result.significant


def test_pure_noise_is_not_significant():
    a = _noisy(3)
    b = a + np.random.default_rng(4).normal(0.0, 0.01, a.size)
    b = b - (b - a).mean()  # noise around an exactly zero mean difference
    result = paired_difference(_evaluation(a), _evaluation(b))
    assert result.low < 0 < result.high and not result.significant


def test_pairing_follows_keys_not_row_order():
    a, b = _noisy(5), _noisy(6)
    order = np.random.default_rng(7).permutation(len(KEYS))
    shuffled = _evaluation(b[order], keys=[KEYS[i] for i in order])
    assert paired_difference(_evaluation(a), shuffled).difference == pytest.approx(float(np.mean(b - a)))


def test_only_shared_rows_are_compared():
    a = _evaluation(np.full(60, 0.3))
    # b holds the first 40 prompts of a, scored 0.05 higher, and 10 prompts a does not have
    keys_b = KEYS[:40] + tuple((f"other{i}", "x", 0) for i in range(10))
    b = _evaluation(np.concatenate([np.full(40, 0.35), np.full(10, -1.0)]), keys=keys_b)
    result = paired_difference(a, b)
    assert result.shared == 40
    assert result.difference == pytest.approx(0.05)


def test_the_same_prompt_from_another_seed_is_not_shared():
    a = _evaluation([0.3], keys=[("id", "a cat", 1)])
    b = _evaluation([0.4], keys=[("id", "a cat", 2)], name="other")
    with pytest.raises(ValueError, match="share no"):
        paired_difference(a, b)


def test_no_shared_rows_is_refused_naming_both():
    a = _evaluation([0.3, 0.2], keys=KEYS[:2], name="first")
    b = _evaluation([0.3, 0.2], keys=KEYS[2:4], name="second")
    with pytest.raises(ValueError, match=r"first and second share no \(prompt id, prompt, seed\) row"):
        paired_difference(a, b)


def test_the_interval_is_deterministic():
    a, b = _evaluation(_noisy(8)), _evaluation(_noisy(9))
    assert paired_difference(a, b) == paired_difference(a, b)


def test_a_wider_level_gives_a_wider_interval():
    a, b = _evaluation(_noisy(8)), _evaluation(_noisy(9))
    narrow, wide = paired_difference(a, b, level=0.5), paired_difference(a, b, level=0.99)
    assert wide.low < narrow.low and narrow.high < wide.high
    assert wide.level == 0.99


def test_the_interval_is_the_evaluators_skew_corrected_interval_around_scipys_t_interval():
    a, b = _noisy(10, 400), _noisy(11, 400)
    keys = tuple((f"id{i}", f"p{i}", i) for i in range(400))
    result = paired_difference(_evaluation(a, keys), _evaluation(b, keys), level=0.9)
    diffs = b - a
    low, high = stats.t.interval(0.9, diffs.size - 1, loc=diffs.mean(), scale=stats.sem(diffs))
    centered = diffs - diffs.mean()
    s = diffs.std(ddof=1)
    g = (centered**3).mean() / s**3  # third central moment over the sample spread cubed
    t = stats.t.ppf(0.95, diffs.size - 1)
    expected = (high - low) / 2 + abs(g) * s * (2 * t * t + 1) / (6 * diffs.size)
    assert result.half_width == pytest.approx(expected, rel=1e-9)
    assert result.low <= low and result.high >= high  # it contains the plain t interval
    assert (centered**3).sum() != 0  # the correction is exercised


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"level": 0}, "Expected `level`"),
        ({"level": 1.0}, "Expected `level`"),
        ({"level": 95}, "Expected `level`"),
        ({"level": "0.95"}, "Expected `level`"),
    ],
)
def test_the_level_is_checked(kwargs, match):
    a = _evaluation(_noisy(1))
    with pytest.raises(ValueError, match=match):
        paired_difference(a, a, **kwargs)


# --------------------------------------------------------------------------- Evaluation


def test_evaluation_summary_uses_population_std():
    evaluation = _evaluation([0.2, 0.4], keys=KEYS[:2])
    assert evaluation.summary() == pytest.approx(
        {"clip/mean": 0.3, "clip/mean_ci": 0.1 * math.sqrt(2) * stats.t.ppf(0.975, 1) / math.sqrt(2),
         "clip/min": 0.2, "clip/max": 0.4, "clip/std": 0.1, "clip/count": 2, "clip/prompts": 2}
    )
    assert evaluation.mean == pytest.approx(0.3)


def test_empty_evaluation_summary_is_nan():
    evaluation = _evaluation([], keys=())
    summary = evaluation.summary()
    assert summary["clip/count"] == 0 and math.isnan(summary["clip/mean"]) and math.isnan(evaluation.mean)


def test_mean_interval_covers_the_mean_and_is_degenerate_for_one_row():
    evaluation = _evaluation(_noisy(12))
    low, high = evaluation.mean_interval()
    assert low < evaluation.mean < high
    assert high - low == pytest.approx(2 * stats.t.ppf(0.975, 59) * evaluation.scores.std(ddof=1) / math.sqrt(60), rel=1e-9)
    one = _evaluation([0.3], keys=KEYS[:1])
    assert one.mean_interval() == (0.3, 0.3)


def test_best_evaluation_takes_the_highest_mean_and_the_earliest_on_ties():
    evaluations = [_evaluation([0.3], step=1), _evaluation([0.5], step=2), _evaluation([0.5], step=3)]
    assert best_evaluation(evaluations).step == 2


# --------------------------------------------------------------------------- files


def test_read_scores_file_keeps_step_keys_and_scores(tmp_path):
    path = _save(tmp_path, 40, [0.1, 0.2, 0.3], keys=KEYS[:3])
    evaluation = read_scores_file(path)
    assert evaluation.step == 40 and evaluation.path == path
    assert evaluation.keys == KEYS[:3]
    assert evaluation.scores.dtype == np.float64
    np.testing.assert_array_equal(evaluation.scores, [0.1, 0.2, 0.3])


def test_a_file_without_a_step_is_one_evaluation_at_step_0(tmp_path):
    path = write_scores(tmp_path / "no-step.jsonl", [ScoreRecord("a", "a cat", 0.2)])
    assert read_scores_file(path).step == 0


def test_runs_are_found_in_any_folder_of_score_files(tmp_path):
    run = tmp_path / "run"
    _save(run / "version_0", 10, [0.1], keys=KEYS[:1])
    path = _save(run / "version_0", 10, [0.2], keys=KEYS[:1])
    parti = path.parent / "clip-parti"  # a second callback's files (prefix "clip/parti/")
    write_scores(parti / "step-00000010.jsonl", [ScoreRecord("p", "a prompt", 0.3)], step=10)
    (run / "notes").mkdir()
    (run / "notes" / "step-1.jsonl").write_text("not a score file\n")
    assert set(find_runs(run)) == {"run/version_0", "run/version_0/clip-parti"}


def test_read_scores_file_refuses_an_incomplete_file(tmp_path):
    path = _save(tmp_path, 1, [0.1, 0.2], keys=KEYS[:2])
    path.write_text("\n".join(path.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(ValueError, match="incomplete score file"):
        read_scores_file(path)


def test_load_run_orders_by_step_not_by_name(tmp_path):
    run = tmp_path / "run"
    # File names sort differently from steps: a suffix for a second evaluation at one step, and
    # names written by hand without zero padding.
    _save(run, 1000, [0.4], keys=KEYS[:1], name="step-1000.jsonl")
    _save(run, 20, [0.2], keys=KEYS[:1], name="step-20.jsonl")
    _save(run, 20, [0.25], keys=KEYS[:1], name="step-20-1.jsonl")
    evaluations = load_run(run)
    assert [e.step for e in evaluations] == [20, 20, 1000]
    assert [float(e.scores[0]) for e in evaluations[:2]] == [0.2, 0.25]  # ties: in the order written


def test_each_scores_folder_is_its_own_run(tmp_path):
    run = tmp_path / "run"
    _save(run / "version_0", 10, [0.1], keys=KEYS[:1])
    _save(run / "version_1", 20, [0.2], keys=KEYS[:1])
    _save(run / "version_1" / "inner", 30, [0.3], keys=KEYS[:1])  # a run nested in another's folder
    runs = find_runs(run)
    assert {name: [e.step for e in evaluations] for name, evaluations in runs.items()} == {
        "run/version_0": [10], "run/version_1": [20], "run/version_1/inner": [30],
    }
    with pytest.raises(ValueError, match="holds 3 runs"):
        load_run(run)


def test_too_few_shared_prompts_get_no_interval(tmp_path):
    keys = tuple((f"id{i}", f"p{i}", i) for i in range(MIN_PAIRS - 1))
    a = Evaluation(1, tmp_path / "a", keys, np.full(len(keys), 0.3))
    b = Evaluation(1, tmp_path / "b", keys, np.full(len(keys), 0.4))
    with pytest.raises(ValueError, match=f"share only {MIN_PAIRS - 1} .* needs at least {MIN_PAIRS}"):
        paired_difference(a, b)


def test_load_run_ignores_other_files(tmp_path):
    run = tmp_path / "run"
    _save(run, 5, [0.2], keys=KEYS[:1])
    (run / "clip_scores" / "notes.jsonl").write_text("not a score file\n")
    (run / "step-00000009.jsonl").write_text("outside clip_scores\n")
    assert [e.step for e in load_run(run)] == [5]


def test_load_run_refuses_a_missing_directory_or_one_without_scores(tmp_path):
    with pytest.raises(FileNotFoundError, match="Run directory not found"):
        load_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No per-prompt score files"):
        load_run(tmp_path / "empty")


def test_load_run_reports_a_broken_file(tmp_path):
    run = tmp_path / "run"
    _save(run, 5, [0.2], keys=KEYS[:1])
    broken = run / "clip_scores" / "step-00000010.jsonl"
    broken.write_text('{"format": "clip-metric-scores", "version": 1, "rows": 1, "step": 10}\n{"score": NaN}\n')
    with pytest.raises(ValueError, match=rf"{broken}, line 2"):
        load_run(run)


def test_two_saved_runs_compare_paired(tmp_path):
    a, b = _noisy(20), _noisy(20) + 0.03
    _save(tmp_path / "a", 100, a)
    _save(tmp_path / "b", 100, b)
    (first,), (second,) = load_run(tmp_path / "a"), load_run(tmp_path / "b")
    result = paired_difference(first, second)
    assert result.difference == pytest.approx(0.03) and result.significant
