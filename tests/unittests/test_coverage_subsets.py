"""Coverage of the library mean by subsets and prefixes of the evaluation order, by simulation.

A library of uneven categories whose means differ (sd 0.02 between categories, per-prompt
noise sd 0.04 around them, like CLIP cosines) is scored many times with fixed seeds. Each draw
is one library's scores; the estimand is the mean over the whole library. The subset or prefix is
chosen by the package (``select_prompts`` / ``proportional_order``, as ``max_prompts`` and
``target_ci`` use them) and its interval computed by the package (``half_width``, the function
behind ``clip/mean_ci``; ``summarize_scores`` checked to agree). A subset that takes every
category equally often estimates the mean of equal categories instead and misses the library's.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clip_metric.functional import summarize_scores
from clip_metric.intervals import half_width
from clip_metric.prompts import Prompt, load_prompt_library, proportional_order, select_prompts

DRAWS = 2000
BETWEEN = 0.02  # sd of the category means
WITHIN = 0.04  # sd of a prompt's score around its category's mean
NOMINAL = 0.95
# One-sided binomial slack: three standard errors of a coverage of 0.95 over DRAWS draws.
SLACK = 3 * math.sqrt(NOMINAL * (1 - NOMINAL) / DRAWS)

# Sizes as uneven as Parti's and more (1,632 in all): a category of 600 and two of about 10.
UNEVEN = (600, 300, 200, 150, 100, 80, 60, 50, 40, 30, 12, 10)


def _uneven_library() -> list[Prompt]:
    prompts = [
        Prompt(f"c{c:02d}-{j:03d}", f"prompt {j} of category {c}", category=f"category-{c:02d}")
        for c, size in enumerate(UNEVEN)
        for j in range(size)
    ]
    return prompts[::7] + [p for i, p in enumerate(prompts) if i % 7]  # no order to rely on


LIBRARIES = {"parti": lambda: load_prompt_library("parti"), "uneven": _uneven_library}


def _scores(library: list[Prompt], seed: int) -> np.ndarray:
    """``(DRAWS, len(library))`` scores: a fresh set of category means and noise per draw."""
    rng = np.random.default_rng(seed)
    names = sorted({p.category for p in library})
    category = np.array([names.index(p.category) for p in library])
    means = 0.30 + BETWEEN * rng.standard_normal((DRAWS, len(names)))
    return means[:, category] + WITHIN * rng.standard_normal((DRAWS, len(library)))


def _positions(library: list[Prompt], chosen: list[Prompt]) -> np.ndarray:
    where = {id(p): i for i, p in enumerate(library)}
    return np.array([where[id(p)] for p in chosen])


def _coverage(scores: np.ndarray, columns: np.ndarray, counts: np.ndarray | None = None) -> float:
    """Share of draws whose interval of the mean of ``columns[:count]`` holds the library mean."""
    target = scores.mean(axis=1)
    picked = scores[:, columns]
    counts = np.full(len(scores), len(columns)) if counts is None else counts
    covered = 0
    for draw, n in enumerate(counts):
        values = picked[draw, :n]
        total, total_sq = float(values.sum()), float((values * values).sum())
        covered += abs(total / n - target[draw]) <= half_width(total, total_sq, int(n))
    return covered / len(scores)


def _assert_covers(coverage: float, what: str) -> None:
    assert coverage >= 0.93 and coverage >= NOMINAL - SLACK, (
        f"{what}: the 95% interval covers the library mean in {coverage:.3f} of {DRAWS} draws"
    )


def test_the_interval_is_clip_mean_ci_of_the_subset() -> None:
    library = load_prompt_library("parti")
    scores = _scores(library, seed=0)[:3]
    columns = _positions(library, select_prompts(library, 256))
    for row in scores:
        values = row[columns]
        stats = summarize_scores(torch.from_numpy(values))
        moments = float(values.sum()), float((values * values).sum()), len(values)
        assert float(stats["clip/mean_ci"]) == pytest.approx(half_width(*moments), rel=1e-12)
        assert float(stats["clip/mean"]) == pytest.approx(values.mean(), rel=1e-12)


@pytest.mark.parametrize("name", list(LIBRARIES))
def test_a_max_prompts_subset_covers_the_library_mean(name: str) -> None:
    library = LIBRARIES[name]()
    scores = _scores(library, seed=1)
    subset = select_prompts(library, 256)
    assert len(subset) == 256 and len(library) == 1632
    _assert_covers(_coverage(scores, _positions(library, subset)), f"max_prompts=256 of {name}")


@pytest.mark.parametrize("name", list(LIBRARIES))
def test_every_prefix_of_the_evaluation_order_covers_the_library_mean(name: str) -> None:
    library = LIBRARIES[name]()
    scores = _scores(library, seed=2)
    columns = _positions(library, proportional_order(library))
    for size in (64, 128, 256, 512, 1024):
        _assert_covers(_coverage(scores, columns[:size]), f"the first {size} prompts of {name}'s order")


@pytest.mark.parametrize("target_ci", [0.01, 0.006, 0.004])
def test_a_prefix_stopped_at_target_ci_covers_the_library_mean(target_ci: float) -> None:
    # The stopping rule of target="mean": rounds of 32 prompts after 64, stop at the first
    # round whose interval is at most target_ci. Checking after every round is a sequential test.
    library = load_prompt_library("parti")
    scores = _scores(library, seed=3)
    columns = _positions(library, proportional_order(library))
    ordered = scores[:, columns]
    sums, squares = np.cumsum(ordered, axis=1), np.cumsum(ordered * ordered, axis=1)
    boundaries = list(range(64, len(library), 32)) + [len(library)]
    counts = np.empty(DRAWS, dtype=int)
    for draw in range(DRAWS):
        counts[draw] = next(
            (n for n in boundaries if half_width(sums[draw, n - 1], squares[draw, n - 1], n) <= target_ci),
            len(library),
        )
    assert counts.min() < counts.max() or target_ci == 0.01  # the stop depends on the draw
    _assert_covers(_coverage(scores, columns, counts), f"target_ci={target_ci} prefixes of parti")
