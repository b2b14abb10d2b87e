"""Compare training runs by their saved per-prompt CLIP scores, with honest intervals.

``ClipScoreCallback`` writes one ``clip_scores/step-XXXXXXXX.jsonl`` per evaluation, in the
schema of :mod:`clip_metric.records` (as do ``PromptEvaluator``, ``clip-metric eval`` and
``clip-metric score --output``); :func:`find_runs` finds them by their header. Two runs evaluated on the same prompts and seeds can be compared
*paired*: the difference of means is the mean of per-prompt differences, and the *t* interval
of those differences (:mod:`clip_metric.intervals`, the statistics the callback logs as
``clip/delta`` and ``clip/delta_ci``) is its 95% interval: an interval for the mean difference over
the population of prompts the library samples, one number per prompt. Several images of one
prompt (the same prompt id or the same caption, e.g. ``parti-0001-1.png`` and
``parti-0001-2.png``) are one cluster: they are averaged into one prompt-level value before any
mean, interval or paired difference, so they do not count as independent prompts.

Comparing several runs with one base makes several tests at once: :func:`family_decisions`
adjusts them together (Holm's step-down), so that the chance of calling any of them
significant when none differs stays at ``1 - level``.
"""

from __future__ import annotations

import functools
import math
import os
import re
import stat
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from clip_metric.functional import cluster_means, prompt_cluster_labels
from clip_metric.intervals import DEFAULT_LEVEL, MIN_PAIRS, delta_half_width, delta_p_value, half_width, holm
from clip_metric.records import FORMAT, is_score_file, read_scores
from clip_metric.utilities.constants import SCORES_DIRNAME


def _cluster_means(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The mean of ``values`` within each cluster of ``labels``, in label order (:func:`cluster_means`)."""
    return cluster_means(values, labels.tolist()).means.numpy() if values.size else values


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of one run: its step and per-image rows.

    ``keys`` are ``(prompt id, prompt, seed)``; rows of one prompt (the same id or caption) are
    one cluster, and :attr:`prompt_scores` holds one mean per prompt: the values that
    :attr:`mean` and :meth:`mean_interval` are taken over.
    """

    step: int
    path: Path
    keys: tuple[tuple[str, str, int | None], ...]
    scores: np.ndarray
    signature: dict | None = None
    header: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @functools.cached_property
    def prompt_scores(self) -> np.ndarray:
        """One score per prompt: the mean of that prompt's images (its rows sharing a prompt id or caption)."""
        scores = np.asarray(self.scores, dtype=np.float64)
        if len(self.keys) != scores.size:  # rows without one key each: nothing says which share a prompt
            return scores
        return _cluster_means(scores, prompt_cluster_labels(self.keys))

    @property
    def prompts(self) -> int:
        """The number of distinct prompts (clusters of images)."""
        return int(self.prompt_scores.size)

    @property
    def mean(self) -> float:
        """The mean over prompts of each prompt's mean score (the mean over images when each prompt has as many)."""
        return float(self.prompt_scores.mean()) if self.scores.size else math.nan

    def summary(self) -> dict[str, float]:
        """``clip/mean``, ``clip/mean_ci``, ``clip/min``, ``clip/max``, ``clip/std`` (population) and ``clip/count``.

        The statistics the callback logs (:func:`clip_metric.functional.summarize_scores`); NaN
        but the count for an evaluation without rows, ``clip/mean_ci`` NaN below two. With
        several images of one prompt, ``clip/mean`` and ``clip/mean_ci`` are over prompt-level
        means and ``clip/prompts`` counts the prompts (``clip/count`` stays the images).
        """
        import torch

        from clip_metric.functional import summarize_scores

        summary = {k: float(v) for k, v in summarize_scores(torch.from_numpy(self.scores)).items()}
        summary["clip/count"] = int(summary["clip/count"])
        if self.prompts < self.scores.size:
            low, high = self.mean_interval()
            summary["clip/mean"] = self.mean
            summary["clip/mean_ci"] = (high - low) / 2 if self.prompts >= 2 else math.nan
        summary["clip/prompts"] = self.prompts
        return summary

    def mean_interval(self, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
        """The *t* interval of the mean over prompts (as ``clip/mean_ci``); a point below 2 prompts."""
        interval = mean_interval(self.prompt_scores, level)
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
        FileNotFoundError: if there is no file.
        ValueError: for a malformed or incomplete file, naming the file and line; for a path that
            is not a regular file (a FIFO, a device); for a malformed score signature, naming
            the fields.
    """
    from clip_metric.signature import ScoreSignature

    scores = read_scores(path)
    step = 0 if scores.step is None else scores.step  # files from clip-metric score: one evaluation
    keys = tuple(record.key for record in scores.records)
    values = np.asarray([record.score for record in scores.records], dtype=np.float64)
    signature = scores.header.get("signature")
    if signature is not None:
        # Checked here, once: a malformed signature is named with its file, not compared as text.
        if not isinstance(signature, Mapping):
            raise ValueError(f"{scores.path}: malformed score signature (expected an object but got {signature!r})")
        try:
            ScoreSignature.from_dict(signature)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{scores.path}: malformed score signature ({err})") from None
        signature = dict(signature)
    return Evaluation(step, scores.path, keys, values, signature, dict(scores.header))


# ``step-00000100.jsonl``, ``step-00000100-3.jsonl``: the evaluator's names, a suffix per
# further evaluation at one step, in the order they were written.
_STEP_NAME = re.compile(r"step-\d+(?:-(\d+))?\.[^.]+$")


def _write_order(path: Path) -> tuple[int, int, str]:
    """Where a file stands among its folder's evaluations at one step: suffix, then time written."""
    match = _STEP_NAME.fullmatch(path.name)
    suffix = int(match.group(1)) if match and match.group(1) else 0
    try:
        written = os.stat(path).st_mtime_ns
    except OSError:
        written = 0
    return suffix, written, path.name


def _score_files(root: Path) -> list[Path]:
    """Every score file under ``root`` (recognised by its header, whatever its name), sorted.

    Links to folders are followed once (a loop is not walked twice); a FIFO, a device, a socket
    or a dangling link is never opened and is skipped with a warning naming it; a file being
    written (the writer's hidden temporary) is left alone.
    """
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            info = os.stat(folder)
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError as err:
            warnings.warn(f"{folder} cannot be read ({err.strerror or err}); its score files are skipped", stacklevel=3)
            continue
        if (info.st_dev, info.st_ino) in seen:
            continue
        seen.add((info.st_dev, info.st_ino))
        for entry in entries:
            path = Path(entry.path)
            try:
                mode = os.stat(path).st_mode
            except OSError as err:
                kind = "a dangling symbolic link" if entry.is_symlink() else f"unreadable ({err.strerror or err})"
                warnings.warn(f"{path} is {kind}; skipped", stacklevel=3)
                continue
            if stat.S_ISDIR(mode):
                pending.append(path)
            elif not stat.S_ISREG(mode):
                kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
                warnings.warn(f"{path} is {kind}, not a regular file; skipped", stacklevel=3)
            elif entry.name.startswith(".") and entry.name.endswith(".tmp"):
                continue  # a score file being written (it is renamed into place when complete)
            elif is_score_file(path):
                found.append(path)
    return sorted(found)


def _paired_file(evaluation: Evaluation) -> tuple[str, int | None] | None:
    """The score file (and its step) this evaluation was paired with, from its header's ``paired_with``."""
    paired = evaluation.header.get("paired_with")
    if not isinstance(paired, Mapping) or not isinstance(paired.get("file"), str) or not paired["file"]:
        return None
    step = paired.get("step")
    return paired["file"], step if isinstance(step, int) and not isinstance(step, bool) else None


def _continued_runs(root: Path, folders: dict[Path, list[Evaluation]]) -> dict[Path, Path]:
    """``{folder: folder it continues}``: a folder whose first evaluation pairs with another folder's file.

    That is a resumed run: the evaluator reads the previous evaluation's score file back from the
    checkpoint, and the logger starts a new folder (``version_1``). The file is found by its path,
    or, for a tree moved since, by its path below ``root``. ``clip-metric eval`` pairs each
    pipeline with the one before: its folders stay separate runs.
    """
    by_path: dict[Path, tuple[Path, Evaluation]] = {}
    by_tail: dict[tuple[str, ...], tuple[Path, Evaluation]] = {}
    for folder, evaluations in folders.items():
        for evaluation in evaluations:
            by_path[evaluation.path.resolve()] = (folder, evaluation)
            by_tail[evaluation.path.relative_to(root).parts] = (folder, evaluation)
    continued = {}
    for folder, evaluations in folders.items():
        first = evaluations[0]
        paired = _paired_file(first)
        if paired is None or first.header.get("stage") == "eval":
            continue
        target = Path(paired[0])
        try:
            match = by_path.get(target.resolve())
        except (OSError, RuntimeError):  # a link loop
            match = None
        if match is None:
            tails = [target.parts[-k:] for k in range(len(target.parts), 0, -1)]
            match = next((by_tail[tail] for tail in tails if tail in by_tail), None)
        if match is None or match[0] == folder or (paired[1] is not None and paired[1] != match[1].step):
            continue
        continued[folder] = match[0]
    return continued


_SCORE_SUFFIXES = (".jsonl", ".csv")


def find_runs(path: str | os.PathLike) -> dict[str, list[Evaluation]]:
    """Every run saved under ``path``: one per folder of score files, evaluations in the order they were made.

    Score files are recognised by their header, whatever their name (the callback's
    ``step-XXXXXXXX.jsonl``, ``clip-metric score --output`` files of any name, ``.csv`` ones);
    ``path`` may also be one score file, a run of one evaluation.

    A logger's ``version_0``, ``version_1``, ... are separate runs, and so is a run nested inside
    another's folder, or the files of a second callback (``clip_scores/clip-parti``): each folder
    holding score files is one run, except a resumed run: a folder whose first evaluation was
    paired with a file of another folder found here (its header's ``paired_with``, written by
    the evaluator after a resume) continues that folder's run. With one run it is named after
    ``path``; with several, ``<path name>/<folder relative to path>`` (``clip_scores`` left out
    of the name; a continued run keeps its first folder's name).

    Evaluations are ordered by step; at one step, by the writer's suffix
    (``step-00000100.jsonl``, then ``-1``, ``-2``, ... ``-11``), then by the time written, and a
    continuing folder's after the folder it continues: the last one is the newest. A FIFO, a
    device or a dangling link among the files is skipped with a warning naming it.

    Raises:
        FileNotFoundError: if ``path`` does not exist or holds no score files.
        ValueError: for a malformed or incomplete score file, naming the file and line; for a
            ``path`` that is not a regular file or a folder.
    """
    path = Path(path)
    if not os.path.lexists(path):
        raise FileNotFoundError(f"Run directory not found: {path}")
    if not path.is_dir():
        if path.is_file() and path.suffix.lower() not in _SCORE_SUFFIXES and not is_score_file(path):
            # A file of another kind (a run's summary.json, a captions .tsv): named as such, not
            # parsed as a broken score file.
            raise ValueError(
                f"{path}: not a score file ({path.name}: score files are .jsonl or .csv with a {FORMAT!r} "
                "header; to compare the run it belongs to, give its folder)"
            )
        evaluation = read_scores_file(path)  # one file: refused with its reason if it is not a score file
        return {path.name: [evaluation]}
    folders: dict[Path, list[Evaluation]] = {}
    for file in _score_files(path):
        folders.setdefault(file.parent, []).append(read_scores_file(file))
    if not folders:
        raise FileNotFoundError(
            f"No per-prompt score files (files with a {FORMAT!r} header, in any folder) under {path}; they are "
            f"written by ClipScoreCallback(save_scores=True) into {SCORES_DIRNAME}/, PromptEvaluator(scores_dir=...), "
            "clip-metric eval --output-dir and clip-metric score --output"
        )
    for evaluations in folders.values():
        evaluations.sort(key=lambda e: (e.step, *_write_order(e.path)))
    continued = _continued_runs(path, folders)
    chains: dict[Path, list[Path]] = {}
    for folder in sorted(folders):
        first, seen = folder, [folder]
        while first in continued and continued[first] not in seen:  # a cycle ends where it closes
            first = continued[first]
            seen.append(first)
        chains.setdefault(first, []).append(folder)
    base = path.resolve().name or str(path)
    runs = {}
    for first, members in sorted(chains.items()):
        parts = [part for part in first.relative_to(path).parts if part != SCORES_DIRNAME]
        name = base if len(chains) == 1 or not parts else f"{base}/{'/'.join(parts)}"
        generation = {folder: len(_ancestors(folder, continued)) for folder in members}
        runs[name] = sorted(
            (e for folder in members for e in folders[folder]),
            key=lambda e: (e.step, generation[e.path.parent], *_write_order(e.path)),
        )
    return runs


def _ancestors(folder: Path, continued: dict[Path, Path]) -> list[Path]:
    chain = []
    while folder in continued and continued[folder] not in chain and continued[folder] != folder:
        folder = continued[folder]
        chain.append(folder)
    return chain


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
    """``b - a`` over the prompts both evaluations share, with its *t* interval and p-value.

    ``mean_a`` and ``mean_b`` are the two means over those shared prompts only, so that
    ``difference == mean_b - mean_a`` whatever else either evaluation holds. ``shared`` counts
    prompts (the interval's sample size), ``images`` the paired rows: more than ``shared`` when
    a prompt has several images. The interval, the p-value and :attr:`significant` are those of
    this one comparison, unadjusted: :func:`family_decisions` adjusts several together.
    """

    difference: float
    low: float
    high: float
    shared: int
    level: float
    mean_a: float = math.nan
    mean_b: float = math.nan
    p_value: float = math.nan
    images: int = 0

    @property
    def half_width(self) -> float:
        """Half the interval's width (``clip/delta_ci`` at the default level)."""
        return (self.high - self.low) / 2

    @property
    def significant(self) -> bool:
        """Whether the interval excludes zero: this comparison alone, not adjusted for others made with it."""
        return self.low > 0 or self.high < 0


def paired_difference(a: Evaluation, b: Evaluation, *, level: float = DEFAULT_LEVEL) -> PairedDifference:
    """Mean of per-prompt differences ``b - a`` on shared (prompt id, prompt, seed) rows, with its *t* interval.

    The statistics the callback logs as ``clip/delta`` and ``clip/delta_ci``. Rows are paired by
    their whole key; the paired rows of one prompt (the same prompt id or caption, several
    images) are averaged into one prompt-level difference, and the interval is the *t* interval
    of those, one per prompt.

    Raises:
        ValueError: if the evaluations share fewer than :data:`MIN_PAIRS` prompts, or for a
            ``level`` outside ``(0, 1)``.

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
    ia, ib = (np.asarray(x) for x in zip(*shared))
    labels = prompt_cluster_labels([b.keys[j] for j in ib])
    prompts = int(labels.max()) + 1
    if prompts < MIN_PAIRS:
        rows = f" ({len(shared)} (prompt id, prompt, seed) rows)" if len(shared) != prompts else ""
        raise ValueError(
            f"{a.path} and {b.path} share only {prompts} prompt(s){rows}; a paired interval needs at least {MIN_PAIRS}"
        )
    scores_a, scores_b = _cluster_means(a.scores[ia], labels), _cluster_means(b.scores[ib], labels)
    diffs = scores_b - scores_a
    # The evaluator's clip/delta_ci: the t interval widened for skewness (a change carried by a few
    # prompts), and the p-value of the same interval (below 1 - level exactly when it excludes 0).
    centered = diffs - diffs.mean()  # moments about the mean: no cancellation
    moments = (float(centered.sum()), float((centered**2).sum()), float((centered**3).sum()), diffs.size)
    half = delta_half_width(*moments, level)
    low, high = float(diffs.mean()) - half, float(diffs.mean()) + half
    p = delta_p_value(float(diffs.sum()), float((diffs**2).sum()), float((diffs**3).sum()), diffs.size)
    return PairedDifference(
        float(diffs.mean()), low, high, int(diffs.size), level,
        float(scores_a.mean()), float(scores_b.mean()), p, len(shared),
    )


@dataclass(frozen=True)
class Decision:
    """A comparison's decision after adjustment for the family it was made in.

    ``p_adjusted`` is Holm's adjusted p-value (NaN, and never significant, for a comparison
    without an interval); ``significant`` is ``p_adjusted < 1 - level``; ``family`` is the
    number of comparisons adjusted together.
    """

    p_adjusted: float
    significant: bool
    family: int


def family_decisions(
    differences: Sequence[PairedDifference | None], level: float = DEFAULT_LEVEL
) -> list[Decision]:
    """Holm's step-down adjustment over a family of paired comparisons, one :class:`Decision` each.

    The family is every comparison given (``None`` for one without an interval, too few shared
    prompts: it is not tested and does not count). Holm's method keeps the family-wise error
    rate, the chance of calling any comparison significant when no run differs, at ``1 - level``
    whatever the dependence between them (comparisons with one base are correlated), and it
    rejects at least what Bonferroni's ``p < (1 - level) / family`` would.

    Raises:
        ValueError: for a ``level`` outside ``(0, 1)``.

    Example:
        >>> import numpy as np
        >>> from pathlib import Path
        >>> keys = tuple((f"id{i}", f"p{i}", i) for i in range(50))
        >>> base = Evaluation(1, Path("base"), keys, np.full(50, 0.30))
        >>> spread = np.linspace(-0.01, 0.01, 50)
        >>> runs = [Evaluation(1, Path(f"r{k}"), keys, 0.30 + shift + spread) for k, shift in enumerate((0.0, 0.0017, 0.01))]
        >>> differences = [paired_difference(base, run) for run in runs]
        >>> [d.significant for d in differences]  # each alone
        [False, True, True]
        >>> [(d.family, d.significant, round(d.p_adjusted, 3)) for d in family_decisions(differences)]
        [(3, False, 1.0), (3, False, 0.098), (3, True, 0.0)]
    """
    adjusted = holm([math.nan if d is None else d.p_value for d in differences], level)
    family = sum(1 for d in differences if d is not None and not math.isnan(d.p_value))
    return [Decision(p, significant, family) for p, significant in adjusted]


def read_tensorboard_history(run_dir: str | os.PathLike, prefix: str = "clip/") -> list[dict[str, float]]:
    """The ``clip/*`` scalars logged to TensorBoard under ``run_dir``, one row per step.

    For runs without per-prompt score files (``save_scores=False``, or logs from elsewhere):
    enough for the last/best summary and the plot, not for a paired comparison.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rows: dict[int, dict[str, float]] = {}
    for events in sorted(Path(run_dir).rglob("events.out.tfevents.*")):
        # One file at a time, regular files only: a FIFO among them would block the reader.
        try:
            regular = stat.S_ISREG(os.stat(events).st_mode)
        except OSError:
            regular = False
        if not regular:
            warnings.warn(f"{events} is not a regular file; skipped", stacklevel=2)
            continue
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags().get("scalars", []):
            name = tag[len(prefix):]
            if tag.startswith(prefix) and name in ("mean", "min", "max", "std", "count"):
                for event in accumulator.Scalars(tag):
                    rows.setdefault(event.step, {"step": event.step})[f"clip/{name}"] = event.value
    return [rows[step] for step in sorted(rows) if "clip/mean" in rows[step]]


def signature_differences(a: Evaluation, b: Evaluation) -> list[str] | None:
    """``"field: a vs b"`` for each signature field that differs; None if either has no signature.

    Raises:
        ValueError: for a malformed signature, naming its file and the malformed fields.
    """
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


def mixed_signatures(evaluations: Sequence[Evaluation]) -> list[str]:
    """How a run's evaluations were scored differently from its last one: ``"step S: field: x vs y; ..."``.

    Empty when every evaluation with a signature has the last one's. A run whose evaluations
    differ (another CLIP model, precision, prompt set) has a best evaluation and a curve that
    are not comparable with its last.

    Raises:
        ValueError: for a malformed signature, naming its file and the malformed fields.
    """
    last = evaluations[-1]
    out = []
    for evaluation in evaluations[:-1]:
        differences = signature_differences(evaluation, last)
        if differences:
            out.append(f"step {evaluation.step} ({evaluation.path.name}): {'; '.join(differences)}")
    return out


def best_evaluation(evaluations: Sequence[Evaluation]) -> Evaluation:
    """The evaluation with the highest mean (the earliest on ties).

    A selection: the maximum of several noisy means is biased upward (a plateaued run's best
    is above its level by about the noise), so it is reported, never tested against another
    run; comparisons use the last evaluation.

    An evaluation without rows has no mean and is never the best, unless every one is empty
    (then the last is returned).
    """
    scored = [e for e in evaluations if e.scores.size]
    if not scored:
        return evaluations[-1]
    return max(scored, key=lambda e: (e.mean, -e.step))


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
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are integers: no 0.2 ticks
    low, high = axes.get_xlim()
    if high - low < 2:  # one step: a range holding whole numbers to tick
        middle = (low + high) / 2
        axes.set_xlim(middle - 1, middle + 1)
    axes.set_xlabel("step")
    axes.set_ylabel("clip/mean")
    axes.set_title(f"CLIP score per evaluation ({level * 100:g}% interval of the mean)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    try:
        _save_figure(figure, Path(out))
    finally:
        plt.close(figure)
    return Path(out)


def _save_figure(figure: Any, out: Path) -> None:
    """Save atomically: a temporary file beside ``out``, renamed over it (a link at ``out`` is replaced, never followed)."""
    from clip_metric.records import _create_temporary

    if out.is_dir():
        raise ValueError(f"Expected a file name for the plot but {out} is a directory")
    if os.path.lexists(out) and not out.is_symlink() and not out.is_file():
        raise ValueError(f"Expected a regular file (or a new name) for the plot but {out} is not a regular file")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"Expected an existing folder for the plot but {out.parent} is not one")
    kind = out.suffix[1:].lower() or "png"
    supported = figure.canvas.get_supported_filetypes()
    if kind not in supported:
        raise ValueError(f"Expected a plot file ending in one of {sorted(supported)} but got {out.name!r}")
    handle, temporary = _create_temporary(out.parent, out.name)
    try:
        with os.fdopen(handle, "wb") as stream:
            figure.savefig(stream, format=kind, dpi=120)
        os.replace(temporary, out)
    except BaseException:
        if os.path.lexists(temporary):
            os.unlink(temporary)
        raise
