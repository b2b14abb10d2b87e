"""The stopping rule of adaptive evaluations (``target_ci``), from synced moments alone.

:class:`~clip_metric.evaluation.PromptEvaluator` renders the library in rounds and, after each,
asks :meth:`StoppingRule.decide` whether to go on. The rule sees only all-reduced sums, so every
rank takes the same decision, and it needs no model, so its coverage and cost are measured by
simulation (``tests/unittests/test_coverage_adaptive.py``, ``benchmarks/bench_adaptive.py``).

Two things make it more than "stop when the t interval is narrow enough":

* **Skewed changes.** A change often sits in a few prompts (a tenth of them start to work, the
  rest barely move). The per-prompt differences are then skewed, and a t interval over 64 of
  them covers the change about 86% of the time, not 95%. :func:`delta_half_width` widens the t
  half-width by the skewness correction of the studentized mean (the one-term Cornish-Fisher /
  Edgeworth correction, ``|g| s (2 t^2 + 1) / (6 n)`` with ``g`` the sample skewness): the
  third moment is one more synced sum.
* **Keeping the pairs.** Each evaluation pairs with the previous one on the prompts that one
  scored. An evaluation that stops as soon as its own change is narrow enough leaves the next
  one about as many pairs as it needs, so often too few. So an evaluation that stops renders on
  to the count the *next* evaluation is predicted to need, :func:`prompts_to_keep`: the smallest
  count whose interval, at the current spread and skewness of the differences, reaches the
  target, times a margin that covers the next evaluation's fresh estimate of the spread
  (:func:`keep_margin`). Where the pairs still run out, the evaluation renders
  to that count too (its own change misses the target, the next one's need not), instead of
  rendering on until ``clip/mean_ci`` reaches the target (several times the paired count).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from clip_metric.intervals import DEFAULT_LEVEL, MIN_PAIRS, delta_half_width, half_width, spread_and_skew, t_quantile

__all__ = [
    "KEEP_PAIRS_Z", "MIN_MEANINGFUL_PROMPTS", "MIN_MEANINGFUL_ROUND", "Decision", "StoppingRule",
    "delta_half_width", "keep_margin", "prompts_to_keep", "settings_warning",
]

KEEP_PAIRS_Z = 2.0
"""Standard errors of the next evaluation's spread estimate the kept pairs allow for (:func:`keep_margin`)."""

MIN_MEANINGFUL_PROMPTS = 32
"""Below this ``min_prompts`` the first check sees too few prompts for the spread (and, for a
skewed change, the third moment) behind an interval to be estimated."""

MIN_MEANINGFUL_ROUND = 8
"""Below this ``round_size`` the rule looks at the interval after nearly every prompt, and stops
on the first one that happens to be narrow (optional stopping): coverage falls below the level."""


def keep_margin(need: int, z: float = KEEP_PAIRS_Z) -> float:
    """Factor on a predicted need of ``need`` pairs that a stopping evaluation renders to.

    The next evaluation estimates the variance of its differences afresh. Two consecutive
    changes share a checkpoint (their differences correlate by about -0.5, their squares by
    0.25), so the ratio of the two variance estimates over ``n`` prompts has a relative standard
    error of about ``sqrt(3 / n)``; ``1 + z sqrt(3 / need)`` covers it ``z`` standard errors out
    (1.29 at 140 pairs, 1.49 at 50, 1.09 at 1,500).

    Example:
        >>> round(keep_margin(140), 2)
        1.29
    """
    return 1.0 + z * math.sqrt(3.0 / max(need, 2))


def prompts_to_keep(
    total: float, total_sq: float, total_cube: float, count: float, target_ci: float, *,
    margin: float | None = None, level: float = DEFAULT_LEVEL,
) -> int:
    """Prompts the next evaluation is predicted to need, from this evaluation's differences.

    The smallest ``n`` whose :func:`delta_half_width` at the differences' present spread and
    skewness is at most ``target_ci``, times ``margin`` (default :func:`keep_margin` of that
    ``n``), rounded up. ``count`` itself where the differences have no spread.
    """
    n, _, s, skew = spread_and_skew(total, total_sq, total_cube, count)
    if s == 0.0:
        return n

    def narrow_enough(n: int) -> bool:
        t = t_quantile(0.5 + level / 2, n - 1)
        return t * s / math.sqrt(n) + skew * s * (2 * t * t + 1) / (6 * n) <= target_ci

    low, high = 1, 2  # narrow_enough(low) is False (or low == 1), narrow_enough(high) is True
    while not narrow_enough(high):
        low, high = high, high * 2
    while high - low > 1:  # the width falls with n
        mid = (low + high) // 2
        low, high = (low, mid) if narrow_enough(mid) else (mid, high)
    need = high
    return math.ceil((keep_margin(need) if margin is None else margin) * need)


@dataclass(frozen=True)
class Decision:
    """What an evaluation does after a round.

    Attributes:
        stop: no more checks.
        render_to: prompts (over all ranks) the evaluation ends with; at least those scored.
        reached: whether the targeted interval is at most ``target_ci``.
    """

    stop: bool
    render_to: int
    reached: bool


class StoppingRule:
    """When an adaptive evaluation stops, and how far it renders past its stop.

    Args:
        target_ci: the half-width aimed at.
        target: ``"delta"``: the paired change since the previous evaluation (the mean when there
            is none); ``"mean"``: ``clip/mean_ci``.
        min_prompts: prompts scored before the first check.
        round_size: prompts added per round.
        margin: factor on the next evaluation's predicted need (default: :func:`keep_margin`).
        level: confidence level.

    Example:
        >>> rule = StoppingRule(0.01)
        >>> rule.bounds(200)
        [64, 96, 128, 160, 192, 200]
    """

    def __init__(
        self, target_ci: float, *, target: str = "delta", min_prompts: int = 64, round_size: int = 32,
        margin: float | None = None, level: float = DEFAULT_LEVEL,
    ) -> None:
        self.target_ci, self.target = target_ci, target
        self.min_prompts, self.round_size, self.margin, self.level = min_prompts, round_size, margin, level

    def describe(self) -> str:
        """The rule in a signature's subset string (the rule, not the stopping point)."""
        keep = ("" if self.target != "delta" else
                f",keep{self.margin:g}x" if self.margin is not None else f",keep+{KEEP_PAIRS_Z:g}se")
        return f"{self.target}-ci<={self.target_ci:g}(min{self.min_prompts},round{self.round_size}{keep},skew)"

    def as_dict(self) -> dict:
        """The rule's settings, for a score file's header."""
        return {
            "target": self.target, "target_ci": self.target_ci, "min_prompts": self.min_prompts,
            "round_size": self.round_size, "interval": "t+skewness",
            "keep_pairs": None if self.target != "delta" else (
                f"need*{self.margin:g}" if self.margin is not None else f"need*(1+{KEEP_PAIRS_Z:g}*sqrt(3/need))"
            ),
        }

    def bounds(self, library: int) -> list[int]:
        """Prompts scored after each checked round."""
        if library <= self.min_prompts:
            return [library] if library else []
        return [*range(self.min_prompts, library, self.round_size), library]

    def decide(
        self, scored: int, library: int, scores: Sequence[float], pairs: Sequence[float] | None, previous_count: int,
    ) -> Decision:
        """After a round: stop or go on, and where to end.

        Args:
            scored: prompts scored so far (over all ranks).
            library: prompts the evaluation may score at most.
            scores: ``(sum, sum of squares, count)`` of the scores.
            pairs: ``(sum, sum of squares, sum of cubes, count)`` of the paired differences, or None
                for an unpaired evaluation.
            previous_count: prompts the previous evaluation scored (0 when unpaired).
        """
        mean_reached = bool(half_width(*scores[:2], int(scores[2]), self.level) <= self.target_ci)
        if pairs is None or self.target == "mean":
            return Decision(mean_reached, scored, mean_reached)
        total, total_sq, total_cube, count = (float(v) for v in pairs)
        if count >= MIN_PAIRS:
            reached = bool(delta_half_width(total, total_sq, total_cube, count, self.level) <= self.target_ci)
            if reached or count >= previous_count:
                # Stopped, or out of pairs: leave the next evaluation the pairs it will need.
                keep = prompts_to_keep(total, total_sq, total_cube, count, self.target_ci,
                                       margin=self.margin, level=self.level)
                return Decision(True, min(library, max(scored, keep)), reached)
            return Decision(False, scored, False)
        if count < previous_count:
            return Decision(False, scored, False)  # more pairs to come
        # Too few pairs to estimate a spread: the mean's interval says how many the next one gets.
        return Decision(mean_reached, scored, False)


    def replay(self, scores: Sequence[float], previous: Sequence[float] | None = None) -> int:
        """How many of ``scores`` (per-prompt, in evaluation order) an evaluation renders after ``previous``.

        Asks :meth:`decide` after each round exactly as :class:`~clip_metric.evaluation.PromptEvaluator`
        does, from the moments of the prefix and of its differences with ``previous`` (the previous
        evaluation's scores, in the same order). For simulations of the rule without a model.

        Example:
            >>> StoppingRule(0.5, min_prompts=4, round_size=2).replay([0.3, 0.31, 0.29, 0.3, 0.32, 0.3])
            4
        """
        import numpy as np

        values = np.asarray(scores, dtype=np.float64)
        library = int(values.size)
        sums = np.cumsum(np.stack([values, values * values]), axis=1)  # moments of every prefix at once
        pair_sums, before = None, 0
        if previous is not None:
            prior = np.asarray(previous, dtype=np.float64)
            before = int(prior.size)
            diffs = values[:before] - prior[: min(before, library)]
            pair_sums = np.cumsum(np.stack([diffs, diffs**2, diffs**3]), axis=1)
        bounds = self.bounds(library)
        for bound in bounds:
            pairs = None
            if pair_sums is not None:
                m = min(bound, pair_sums.shape[1])
                pairs = (*(float(v) for v in pair_sums[:, m - 1]), m) if m else (0.0, 0.0, 0.0, 0)
            scored = (float(sums[0, bound - 1]), float(sums[1, bound - 1]), bound)
            decision = self.decide(bound, library, scored, pairs, before)
            if decision.stop or bound == bounds[-1]:
                return max(bound, decision.render_to)
        return library

def settings_warning(min_prompts: int, round_size: int) -> str | None:
    """Why ``min_prompts``/``round_size`` make the adaptive interval mean less than it says, or None."""
    problems = []
    if min_prompts < MIN_MEANINGFUL_PROMPTS:
        problems.append(
            f"min_prompts={min_prompts} is below {MIN_MEANINGFUL_PROMPTS}: the first check estimates the spread from "
            f"{min_prompts} prompts"
        )
    if round_size < MIN_MEANINGFUL_ROUND:
        problems.append(
            f"round_size={round_size} is below {MIN_MEANINGFUL_ROUND}: the interval is checked after nearly every "
            "prompt and the evaluation stops on the first one that happens to be narrow"
        )
    if not problems:
        return None
    return (
        "; ".join(problems)
        + ". The 95% intervals an evaluation stops on then cover less than 95% of the time; use "
        f"min_prompts>={MIN_MEANINGFUL_PROMPTS} and "
        f"round_size>={MIN_MEANINGFUL_ROUND} (defaults 64 and 32)"
    )
