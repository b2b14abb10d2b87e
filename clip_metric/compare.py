"""Compare training runs by their saved per-prompt CLIP scores, with honest intervals.

``ClipScoreCallback`` writes one ``clip_scores/step-XXXXXXXX.jsonl`` per evaluation, in the
schema of :mod:`clip_metric.records`. Two runs evaluated on the same prompts and seeds can be compared
*paired*: the difference of means is the mean of per-prompt differences, and the *t* interval
of those differences (:mod:`clip_metric.intervals`, the statistics the callback logs as
``clip/delta`` and ``clip/delta_ci``) is its 95% interval. That is what tells whether ``.33``
against ``.36`` is signal or the noise of a finite prompt set.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from clip_metric.intervals import DEFAULT_LEVEL, MIN_PAIRS, half_width
from clip_metric.records import is_score_file, read_scores
from clip_metric.utilities.constants import SCORES_DIRNAME


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of one run: its step and per-prompt rows."""

    step: int
    path: Path
    keys: tuple[tuple[str, str, int | None], ...]
    scores: np.ndarray
    signature: dict | None = None

    @property
    def mean(self) -> float:
        return float(self.scores.mean()) if self.scores.size else math.nan

    def summary(self) -> dict[str, float]:
        """``clip/mean``, ``clip/min``, ``clip/max``, ``clip/std`` (population) and ``clip/count``."""
        s = self.scores
        if not s.size:
            return {"clip/mean": math.nan, "clip/min": math.nan, "clip/max": math.nan, "clip/std": math.nan,
                    "clip/count": 0}
        return {"clip/mean": float(s.mean()), "clip/min": float(s.min()), "clip/max": float(s.max()),
                "clip/std": float(s.std()), "clip/count": int(s.size)}

    def mean_interval(self, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
        """The *t* interval of the mean over prompts (as ``clip/mean_ci``); a point below 2 prompts."""
        interval = mean_interval(self.scores, level)
        return (self.mean, self.mean) if interval is None else interval


def mean_interval(scores: Sequence[float] | np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[float, float] | None:
    """``mean -/+ t * s / sqrt(n)`` with the sample std ``s``; None below two samples (no spread).

    The same interval as ``clip/mean_ci`` (:func:`clip_metric.intervals.half_width`).

    Example:
        >>> low, high = mean_interval([0.30, 0.32, 0.34])
        >>> round(low, 4), round(high, 4)
        (0.2703, 0.3697)
    """
    values = np.asarray(scores, dtype=np.float64)
    if values.size < 2:
        return None
    mean = float(values.mean())
    centered = values - mean  # moments about the mean: no cancellation in the variance
    half = half_width(float(centered.sum()), float((centered * centered).sum()), values.size, level)
    return (mean - half, mean + half)


def read_scores_file(path: str | os.PathLike) -> Evaluation:
    """Read one score file (see :mod:`clip_metric.records`) as an :class:`Evaluation`.

    Raises:
        ValueError: for a malformed or incomplete file, naming the file and line.
    """
    scores = read_scores(path)
    step = 0 if scores.step is None else scores.step  # files from clip-metric score: one evaluation
    keys = tuple(record.key for record in scores.records)
    values = np.asarray([record.score for record in scores.records], dtype=np.float64)
    signature = scores.header.get("signature")
    return Evaluation(step, scores.path, keys, values, dict(signature) if isinstance(signature, dict) else None)


def find_runs(path: str | os.PathLike) -> dict[str, list[Evaluation]]:
    """Every run saved under ``path``: one per ``clip_scores`` folder, evaluations ordered by step.

    A logger's ``version_0``, ``version_1``, ... are separate runs, and so is a run nested inside
    another's folder, or the files of a second callback (``clip_scores/clip-parti``): each folder
    holding score files is one run. With one run it is named after ``path``; with several,
    ``<path name>/<folder relative to path>`` (``clip_scores`` left out of the name).

    Raises:
        FileNotFoundError: if ``path`` does not exist or holds no score files.
        ValueError: for a malformed or incomplete score file, naming the file and line.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Run directory not found: {path}")
    folders: dict[Path, list[Path]] = {}
    for file in sorted(path.rglob("step-*.jsonl")):
        if is_score_file(file):  # a callback's prefix sub-folder, a custom scores_dir: any folder counts
            folders.setdefault(file.parent, []).append(file)
    if not folders:
        raise FileNotFoundError(
            f"No per-prompt score files (step-*.jsonl, in any folder) under {path}; they are written by "
            f"ClipScoreCallback(save_scores=True) into {SCORES_DIRNAME}/, PromptEvaluator(scores_dir=...), "
            "clip-metric eval --output-dir and clip-metric score --output"
        )
    base = path.resolve().name or str(path)
    runs = {}
    for folder, files in sorted(folders.items()):
        parts = [part for part in folder.relative_to(path).parts if part != SCORES_DIRNAME]
        name = base if len(folders) == 1 or not parts else f"{base}/{'/'.join(parts)}"
        runs[name] = sorted((read_scores_file(f) for f in files), key=lambda e: (e.step, str(e.path)))
    return runs


def load_run(run_dir: str | os.PathLike) -> list[Evaluation]:
    """The evaluations of the one run saved under ``run_dir``, ordered by step.

    Raises:
        FileNotFoundError: if ``run_dir`` does not exist or holds no score files.
        ValueError: if ``run_dir`` holds several runs (use :func:`find_runs`).
    """
    runs = find_runs(run_dir)
    if len(runs) > 1:
        raise ValueError(f"{run_dir} holds {len(runs)} runs ({', '.join(runs)}); load them with find_runs")
    return next(iter(runs.values()))


@dataclass(frozen=True)
class PairedDifference:
    """``b - a`` over the prompts both evaluations share, with its *t* interval.

    ``mean_a`` and ``mean_b`` are the two means over those shared prompts only, so that
    ``difference == mean_b - mean_a`` whatever else either evaluation holds.
    """

    difference: float
    low: float
    high: float
    shared: int
    level: float
    mean_a: float = math.nan
    mean_b: float = math.nan

    @property
    def half_width(self) -> float:
        """Half the interval's width (``clip/delta_ci`` at the default level)."""
        return (self.high - self.low) / 2

    @property
    def significant(self) -> bool:
        """Whether the interval excludes zero."""
        return self.low > 0 or self.high < 0


def paired_difference(a: Evaluation, b: Evaluation, *, level: float = DEFAULT_LEVEL) -> PairedDifference:
    """Mean of per-prompt differences ``b - a`` on shared (prompt id, prompt, seed) rows, with its *t* interval.

    The statistics the callback logs as ``clip/delta`` and ``clip/delta_ci``.

    Raises:
        ValueError: if the evaluations share fewer than :data:`MIN_PAIRS` (prompt id, prompt,
            seed) rows, or for a ``level`` outside ``(0, 1)``.

    Example:
        >>> import numpy as np
        >>> from pathlib import Path
        >>> keys = tuple((f"id{i}", f"p{i}", i) for i in range(50))
        >>> a = Evaluation(1, Path("a"), keys, np.full(50, 0.30))
        >>> b = Evaluation(1, Path("b"), keys, np.full(50, 0.30) + np.linspace(0.01, 0.03, 50))
        >>> result = paired_difference(a, b)
        >>> round(result.difference, 3), result.significant
        (0.02, True)
    """
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"Expected `level` to be a number strictly between 0 and 1 but got {level!r}")
    index_a = {key: i for i, key in enumerate(a.keys)}
    shared = [(index_a[key], j) for j, key in enumerate(b.keys) if key in index_a]
    if not shared:
        raise ValueError(f"{a.path} and {b.path} share no (prompt id, prompt, seed) row: they cannot be compared paired")
    if len(shared) < MIN_PAIRS:
        raise ValueError(
            f"{a.path} and {b.path} share only {len(shared)} (prompt id, prompt, seed) row(s); a paired interval "
            f"needs at least {MIN_PAIRS}"
        )
    ia, ib = (np.asarray(x) for x in zip(*shared))
    diffs = b.scores[ib] - a.scores[ia]
    low, high = mean_interval(diffs, level)  # type: ignore[misc]  # MIN_PAIRS >= 2
    return PairedDifference(
        float(diffs.mean()), low, high, int(diffs.size), level,
        float(a.scores[ia].mean()), float(b.scores[ib].mean()),
    )


def read_tensorboard_history(run_dir: str | os.PathLike, prefix: str = "clip/") -> list[dict[str, float]]:
    """The ``clip/*`` scalars logged to TensorBoard under ``run_dir``, one row per step.

    For runs without per-prompt score files (``save_scores=False``, or logs from elsewhere):
    enough for the last/best summary and the plot, not for a paired comparison.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rows: dict[int, dict[str, float]] = {}
    for events in sorted({p.parent for p in Path(run_dir).rglob("events.out.tfevents.*")}):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags().get("scalars", []):
            name = tag[len(prefix):]
            if tag.startswith(prefix) and name in ("mean", "min", "max", "std", "count"):
                for event in accumulator.Scalars(tag):
                    rows.setdefault(event.step, {"step": event.step})[f"clip/{name}"] = event.value
    return [rows[step] for step in sorted(rows) if "clip/mean" in rows[step]]


def signature_differences(a: Evaluation, b: Evaluation) -> list[str] | None:
    """``"field: a vs b"`` for each signature field that differs; None if either has no signature."""
    from clip_metric.signature import ScoreSignature

    if a.signature is None or b.signature is None:
        return None
    signatures = []
    for evaluation in (a, b):
        try:
            signatures.append(ScoreSignature.from_dict(evaluation.signature))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{evaluation.path}: malformed score signature ({err})") from None
    return signatures[0].differences(signatures[1])


def best_evaluation(evaluations: Sequence[Evaluation]) -> Evaluation:
    """The evaluation with the highest mean (the earliest on ties)."""
    return max(evaluations, key=lambda e: (e.mean, -e.step))


def plot_runs(
    runs: dict[str, list[Evaluation]],
    out: str | os.PathLike,
    level: float = DEFAULT_LEVEL,
    logged: dict[str, list[dict[str, float]]] | None = None,
) -> Path:
    """Draw ``clip/mean`` against step for every run, with the interval of the mean.

    Each run has its own marker and line style, so identical runs stay visible on top of each
    other; intervals are error bars (a band needs two evaluations, a bar shows with one).
    ``logged`` runs (TensorBoard scalars only) are drawn without intervals.

    Raises:
        ImportError: if matplotlib is missing (``pip install clip-metric[plot]``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("Plotting needs matplotlib: pip install 'clip-metric[plot]'") from err
    figure, axes = plt.subplots(figsize=(7, 4))
    markers, styles = "osD^vP*X", ["-", "--", "-.", ":"]
    for k, (name, evaluations) in enumerate(runs.items()):
        steps = [e.step for e in evaluations]
        means = [e.mean for e in evaluations]
        lows, highs = zip(*(e.mean_interval(level) for e in evaluations))
        errors = [[m - lo for m, lo in zip(means, lows)], [hi - m for m, hi in zip(means, highs)]]
        drawn = axes.errorbar(
            steps, means, yerr=errors, marker=markers[k % len(markers)], linestyle=styles[k % len(styles)],
            capsize=3, markersize=8 - 4 * (k % 2), alpha=0.85, label=name,
        )
        if len(steps) > 1:
            axes.fill_between(steps, lows, highs, alpha=0.12, color=drawn[0].get_color())
    for k, (name, history) in enumerate((logged or {}).items(), start=len(runs)):
        axes.plot([r["step"] for r in history], [r["clip/mean"] for r in history], marker=markers[k % len(markers)],
                  linestyle=styles[k % len(styles)], label=f"{name} (no interval)")
    axes.set_xlabel("step")
    axes.set_ylabel("clip/mean")
    axes.set_title(f"CLIP score per evaluation ({level * 100:g}% interval of the mean)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    out = Path(out)
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out
