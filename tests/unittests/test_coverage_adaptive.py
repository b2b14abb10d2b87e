"""Coverage and cost of adaptive evaluations, by simulation of the package's own stopping rule.

The rule (:class:`clip_metric.adaptive.StoppingRule`) sees only synced moments, so simulated
scores drive it exactly as :class:`~clip_metric.evaluation.PromptEvaluator` does after each round
(the last test checks, with the embedded CLIP, that the evaluator follows it). Seeds are fixed;
each assertion leaves several binomial standard errors between the measured rate and the bound.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from clip_metric.adaptive import StoppingRule, delta_half_width, prompts_to_keep
from clip_metric.demos.tiny_clip import embedded_model_path
from clip_metric.evaluation import PromptEvaluator
from clip_metric.intervals import half_width, prompts_needed
from clip_metric.prompts import proportional_order, load_prompt_library
from clip_metric.utilities.constants import DEFAULT_MIN_PROMPTS, DEFAULT_ROUND_SIZE


def _moments(d: np.ndarray) -> tuple[float, float, float, int]:
    return float(d.sum()), float((d * d).sum()), float((d**3).sum()), int(d.size)


def _evaluate(rule: StoppingRule, scores: np.ndarray, previous: np.ndarray | None) -> tuple[int, float]:
    """What an evaluation of ``scores`` (in evaluation order) renders, and its delta_ci, after ``previous``."""
    n = rule.replay(scores, previous)
    if previous is None:
        return n, math.nan
    m = min(n, previous.size)
    return n, delta_half_width(*_moments(scores[:m] - previous[:m])) if m >= 10 else math.nan


def _skewed_change(rng: np.random.Generator, n: int) -> np.ndarray:
    """A tenth of the prompts gain 0.05-0.1 (they start to work), the rest barely move."""
    flips = rng.random(n) < 0.1
    return flips * rng.uniform(0.05, 0.1, n) + rng.normal(0.0, 0.001, n)


SKEWED_MEAN = 0.1 * 0.075


def _skewed_coverage(rule: StoppingRule, trials: int, seed: int) -> tuple[float, float]:
    """How often the delta_ci an evaluation stops with covers the true change, and the mean count rendered."""
    rng = np.random.default_rng(seed)
    covered, rendered = 0, 0
    for _ in range(trials):
        previous = rng.normal(0.3, 0.04, 1632)
        change = _skewed_change(rng, 1632)
        n, ci = _evaluate(rule, previous + change, previous)
        covered += abs(float(change[:n].mean()) - SKEWED_MEAN) <= ci
        rendered += n
    return covered / trials, rendered / trials


@pytest.mark.parametrize("target_ci", [0.005, 0.008, 0.012])  # stops past the floor, near it, at it
def test_a_gain_carried_by_a_tenth_of_the_prompts_keeps_delta_ci_coverage(target_ci):
    rule = StoppingRule(target_ci, min_prompts=DEFAULT_MIN_PROMPTS, round_size=DEFAULT_ROUND_SIZE)
    coverage, rendered = _skewed_coverage(rule, 1000, seed=7)
    # 0.95-0.97 measured; the binomial standard error of 1,000 draws is 0.007.
    assert coverage >= 0.93, (coverage, rendered)


def test_the_plain_t_interval_under_covers_a_gain_carried_by_a_tenth_of_the_prompts():
    # What the skewness correction is for: the t interval of 64 such differences covers ~0.9.
    rng = np.random.default_rng(8)
    trials, covered = 2000, 0
    for _ in range(trials):
        d = _skewed_change(rng, 64)
        covered += abs(float(d.mean()) - SKEWED_MEAN) <= half_width(float(d.sum()), float((d * d).sum()), 64)
    corrected = 0
    rng = np.random.default_rng(8)
    for _ in range(trials):
        d = _skewed_change(rng, 64)
        corrected += abs(float(d.mean()) - SKEWED_MEAN) <= delta_half_width(*_moments(d))
    assert covered / trials < 0.93 <= corrected / trials


def _steady_run(rho: float, target_ci: float, evaluations: int, runs: int, seed: int, library: int = 1632):
    """Images of every evaluation of ``runs`` whole runs, and whether each paired one missed the target."""
    rng = np.random.default_rng(seed)
    rule = StoppingRule(target_ci)
    std = 0.04
    images, misses = [], []
    for _ in range(runs):
        prompt = rng.normal(0.3, std * math.sqrt(rho), library)
        previous = None
        run = []
        for k in range(evaluations):
            scores = prompt + 0.001 * k + rng.normal(0.0, std * math.sqrt(1 - rho), library)
            n, ci = _evaluate(rule, scores, previous)
            run.append(n)
            if previous is not None:
                misses.append(not ci <= target_ci)
            previous = scores[:n]
        images.append(run)
    return np.array(images), np.array(misses)


def test_a_steady_adaptive_run_renders_close_to_the_paired_formula_and_meets_the_target():
    paired = prompts_needed(0.04, 0.003, correlation=0.9)  # 140
    images, misses = _steady_run(0.9, 0.003, evaluations=20, runs=20, seed=3)
    after_first = images[:, 1:].mean()
    # Every evaluation after the first: ~1.3x measured (rounds of 32, and the margin kept for the next).
    assert after_first <= 1.4 * paired, after_first / paired
    # The first evaluation has no pairs: it targets the mean (~5x the paired count), which the
    # whole-run average carries as (first + (N - 1) * later) / N.
    assert images[:, 0].mean() > 3 * paired
    # The pairs run out (delta_ci above the target) in ~2.6% of paired evaluations; the
    # binomial standard error of 380 evaluations is 0.008.
    assert misses.mean() <= 0.05, misses.mean()


def test_without_keeping_pairs_a_steady_run_runs_out_of_them():
    # What the margin is for: stopping at the own need leaves the next one too few pairs.
    rule_images, rule_misses = _steady_run(0.9, 0.003, evaluations=12, runs=10, seed=4)
    rng = np.random.default_rng(4)
    bare = StoppingRule(0.003, margin=0.0)  # renders nothing past its stop
    misses = []
    for _ in range(10):
        prompt = rng.normal(0.3, 0.04 * math.sqrt(0.9), 1632)
        previous = None
        for k in range(12):
            scores = prompt + 0.001 * k + rng.normal(0.0, 0.04 * math.sqrt(0.1), 1632)
            n, ci = _evaluate(bare, scores, previous)
            if previous is not None:
                misses.append(not ci <= 0.003)
            previous = scores[:n]
    assert np.mean(misses) > 0.1 > rule_misses.mean()


def test_the_next_evaluation_is_left_the_predicted_need_times_the_margin():
    rng = np.random.default_rng(5)
    d = rng.normal(0.0, 0.018, 200)
    need = prompts_to_keep(*_moments(d), 0.003, margin=1.0)
    kept = prompts_to_keep(*_moments(d), 0.003)
    # The smallest count whose interval, at these differences' spread and skewness, reaches 0.003.
    s, skew = float(d.std(ddof=1)), float(np.mean((d - d.mean()) ** 3)) / float(d.std(ddof=1)) ** 3

    def width(n):
        t = stats.t.ppf(0.975, n - 1)
        return t * s / math.sqrt(n) + abs(skew) * s * (2 * t * t + 1) / (6 * n)

    assert width(need) <= 0.003 < width(need - 1) and kept == math.ceil((1 + 2 * math.sqrt(3 / need)) * need)


@pytest.mark.parametrize(("settings", "number"), [
    ({"min_prompts": 2}, "min_prompts=2 is below 32"),
    ({"round_size": 1}, "round_size=1 is below 8"),
])
def test_too_small_adaptive_settings_warn_with_the_number(settings, number):
    with pytest.warns(UserWarning, match=number):
        PromptEvaluator(embedded_model_path(), prompts=[f"prompt {i}" for i in range(100)], target_ci=0.01,
                        **settings)


def test_default_adaptive_settings_do_not_warn(recwarn):
    PromptEvaluator(embedded_model_path(), prompts=[f"prompt {i}" for i in range(100)], target_ci=0.01)
    assert not [w for w in recwarn if "below" in str(w.message)]


def _generator(k: int):
    def generate(prompts, seeds):
        images = []
        for seed in seeds:
            gen = torch.Generator().manual_seed(seed)
            base, drift = torch.randn(3, 32, 32, generator=gen), torch.randn(3, 32, 32, generator=gen)
            images.append(torch.sigmoid(base + 0.3 * k * drift))
        return torch.stack(images)

    return generate


def test_the_evaluator_stops_and_renders_on_as_the_stopping_rule_decides():
    texts = [f"a photo of {n} {c} shapes" for n in range(1, 11) for c in ("red", "green", "blue", "black")] * 1
    texts += [f"a drawing of {n} {c} shapes" for n in range(1, 11) for c in ("red", "green", "blue", "black")]
    texts += [f"a painting of {n} {c} shapes" for n in range(1, 11) for c in ("red", "green", "blue", "black")]
    texts += [f"a sketch of {n} {c} shapes" for n in range(1, 11) for c in ("red", "green", "blue", "black")]
    texts += [f"a render of {n} {c} shapes" for n in range(1, 11) for c in ("red", "green", "blue", "black")]
    full = PromptEvaluator(embedded_model_path(), prompts=texts, precision="32", batch_size=50)
    order = [p.text for p in proportional_order(load_prompt_library(texts))]
    by_text = [{r.prompt: r.score for r in full.evaluate(_generator(k)).records} for k in (1, 2)]
    a, b = (np.array([scores[t] for t in order]) for scores in by_text)
    # A target between the floor's interval and the library's: the evaluation stops in between.
    d = b - a
    target = 0.5 * (delta_half_width(*_moments(d[:64])) + delta_half_width(*_moments(d)))
    adaptive = PromptEvaluator(full.encoder, prompts=texts, precision="32", batch_size=50, target_ci=1e-9)
    first = adaptive.evaluate(_generator(1))
    assert int(first.values["clip/count"]) == len(texts)
    adaptive.target_ci = target
    second = adaptive.evaluate(_generator(2))
    expected, ci = _evaluate(StoppingRule(target), b, a)
    assert int(second.values["clip/count"]) == expected == int(second.values["clip/delta_count"])
    assert float(second.values["clip/delta_ci"]) == pytest.approx(ci, abs=1e-6)
    assert second.stopped_early == (expected < len(texts))
