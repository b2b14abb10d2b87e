"""Simulations of ``clip_metric.compare``'s own decisions: the error rates its docs promise, measured.

Fixed seeds and sizes that run in seconds; each bound is the target plus two binomial standard
errors of the number of repetitions, and each has a counterpart that shows the effect being
controlled is there (so the test can fail).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from clip_metric.compare import Evaluation, family_decisions, paired_difference

REPETITIONS = 400
PROMPTS = 100


def _keys(prompts: int, images: int = 1) -> tuple[tuple[str, str, int], ...]:
    # Several images of one prompt as clip-metric score writes them: an id per image, one caption.
    if images == 1:
        return tuple((f"id{i}", f"prompt {i}", i) for i in range(prompts))
    return tuple((f"id{i}-{k}", f"prompt {i}", k) for i in range(prompts) for k in range(images))


def _bound(rate: float, repetitions: int) -> float:
    return rate + 2 * math.sqrt(rate * (1 - rate) / repetitions)


def test_ten_runs_as_good_as_the_base_are_called_significant_at_most_at_the_family_error_rate():
    rng = np.random.default_rng(2026)
    keys = _keys(PROMPTS)
    any_unadjusted = any_adjusted = 0
    for _ in range(REPETITIONS):
        difficulty = rng.normal(0.32, 0.04, PROMPTS)  # the same prompts, equally hard for every run
        base, *runs = (Evaluation(1, Path(f"run{k}"), keys, difficulty + rng.normal(0, 0.01, PROMPTS)) for k in range(11))
        differences = [paired_difference(base, run) for run in runs]
        decisions = family_decisions(differences)
        assert {d.family for d in decisions} == {10}
        any_unadjusted += any(d.significant for d in differences)
        any_adjusted += any(d.significant for d in decisions)
    # Ten correlated 5% tests: about a quarter to a third of repetitions call one significant.
    assert any_unadjusted / REPETITIONS > 0.2
    assert any_adjusted / REPETITIONS <= _bound(0.05, REPETITIONS)


def test_holm_still_finds_a_run_that_is_better():
    rng = np.random.default_rng(7)
    keys = _keys(PROMPTS)
    found = 0
    for _ in range(100):
        difficulty = rng.normal(0.32, 0.04, PROMPTS)
        base, *runs = (Evaluation(1, Path(f"run{k}"), keys, difficulty + rng.normal(0, 0.01, PROMPTS)) for k in range(11))
        better = Evaluation(1, Path("better"), keys, difficulty + 0.006 + rng.normal(0, 0.01, PROMPTS))
        decisions = family_decisions([paired_difference(base, run) for run in [*runs[:-1], better]])
        found += decisions[-1].significant
    assert found >= 90  # a shift of 4 standard errors survives a family of 10


def test_several_images_per_prompt_keep_the_paired_interval_covering():
    # Each prompt's change varies between prompts; its images add a little noise of their own.
    # Counting 4 images as 4 prompts narrows the interval by about half and covers ~0.8.
    rng = np.random.default_rng(11)
    prompts, images = 60, 4
    keys = _keys(prompts, images)
    covered = 0
    for _ in range(REPETITIONS):
        difficulty = np.repeat(rng.normal(0.32, 0.04, prompts), images)
        change = np.repeat(rng.normal(0.0, 0.01, prompts), images)  # the population mean change is 0
        a = Evaluation(1, Path("a"), keys, difficulty + rng.normal(0, 0.004, prompts * images))
        b = Evaluation(1, Path("b"), keys, difficulty + change + rng.normal(0, 0.004, prompts * images))
        result = paired_difference(a, b)
        assert (result.shared, result.images) == (prompts, prompts * images)
        covered += result.low <= 0 <= result.high
    assert covered / REPETITIONS >= 1 - _bound(0.05, REPETITIONS)


def test_identical_images_of_a_prompt_give_the_interval_of_one_image_per_prompt():
    rng = np.random.default_rng(3)
    difficulty = rng.normal(0.32, 0.04, PROMPTS)
    a_scores, b_scores = difficulty, difficulty + 0.002 + rng.normal(0, 0.01, PROMPTS)
    one = paired_difference(*(Evaluation(1, Path(n), _keys(PROMPTS), s) for n, s in (("a", a_scores), ("b", b_scores))))
    four = paired_difference(
        *(Evaluation(1, Path(n), _keys(PROMPTS, 4), np.repeat(s, 4)) for n, s in (("a", a_scores), ("b", b_scores)))
    )
    assert four.shared == one.shared == PROMPTS and four.images == 4 * PROMPTS
    assert np.allclose((four.difference, four.low, four.high), (one.difference, one.low, one.high), rtol=0, atol=1e-12)
    evaluation = Evaluation(1, Path("b"), _keys(PROMPTS, 4), np.repeat(b_scores, 4))
    single = Evaluation(1, Path("b"), _keys(PROMPTS), b_scores)
    assert evaluation.prompts == PROMPTS
    assert np.allclose(evaluation.mean_interval(), single.mean_interval(), rtol=0, atol=1e-12)
    summary = evaluation.summary()
    assert summary["clip/prompts"] == PROMPTS and summary["clip/count"] == 4 * PROMPTS
    assert math.isclose(summary["clip/mean_ci"], single.summary()["clip/mean_ci"], rel_tol=1e-9)
