"""``clip-metric compare``: compare runs' per-prompt scores with paired *t* intervals (as ``clip/delta_ci``).

Every run after the first is compared with the first: those comparisons are the family, and
their decisions are adjusted together by Holm's step-down method, so that with runs all as good
as the base the chance of calling any of them significant stays at ``1 - level``. The interval
printed for each is its own, unadjusted one.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from clip_metric.cli._common import CliError, Formatter, stderr
from clip_metric.cli._names import printable, shown

def _level(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1) but got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1) but got {text!r}")
    return value


class _Removed(argparse.Action):
    """An option that no longer exists, refused with why (not argparse's bare "unrecognized arguments")."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(
            f"{option_string} was removed: compare reports the t interval of the per-prompt differences, computed "
            "(not resampled), the interval the evaluator logs as clip/delta_ci"
        )


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "compare", help="compare runs' per-prompt scores with paired intervals", formatter_class=Formatter
    )
    parser.add_argument(
        "runs", nargs="+",
        help="run directories (searched for score files, any name, in any folder) or score files; the first is the base",
    )
    parser.add_argument(
        "--plot", help="write a plot of clip/mean against step for every run (PNG, or the format the extension names)"
    )
    parser.add_argument("--level", type=_level, default=0.95, help="interval level, in (0, 1)")
    parser.add_argument(
        "--allow-different-signatures", action="store_true",
        help="compare runs whose score signatures differ (each difference is printed as a warning)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    parser.add_argument("--bootstrap", nargs="?", action=_Removed, help=argparse.SUPPRESS)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from clip_metric.compare import (
        best_evaluation,
        family_decisions,
        find_runs,
        mixed_signatures,
        paired_difference,
        plot_runs,
        read_tensorboard_history,
        signature_differences,
    )

    if args.plot and Path(args.plot).is_dir():
        raise CliError(f"--plot {shown(args.plot)} is a directory; name a .png file")
    runs, logged, seen = {}, {}, set()
    for run_dir in args.runs:
        resolved = Path(run_dir).resolve()
        if resolved in seen:
            stderr(f"note: {run_dir} is given twice; it is listed once")
            continue
        seen.add(resolved)
        try:
            found = _warned(find_runs, run_dir)
        except FileNotFoundError:
            history = _warned(read_tensorboard_history, run_dir) if Path(run_dir).is_dir() else []
            if not history:
                raise
            found = {}
            logged[_unique(Path(run_dir).name or str(run_dir), runs, logged)] = history  # scalars only: no pairing
        for name, evaluations in found.items():
            fallback = str(run_dir) if len(found) == 1 else None
            runs[_unique(name, runs, logged, fallback=fallback)] = evaluations
    names = list(runs)
    for name, evaluations in runs.items():
        for evaluation in evaluations:
            if not evaluation.scores.size:
                stderr(f"warning: {name} step {evaluation.step} ({evaluation.path}) holds no scored prompts; "
                       "it has no mean and is never the best")
        mixed = mixed_signatures(evaluations)
        if mixed:
            stderr(f"warning: {name}'s evaluations were scored differently from its last (step "
                   f"{evaluations[-1].step}): {' | '.join(mixed)}; its best and its curve are not comparable "
                   "across those evaluations")
    if logged and names and next(iter(logged)) == _first_name(args.runs[0], logged):
        stderr(f"note: {args.runs[0]} has no per-prompt scores; the paired comparison uses {names[0]} as the base run")
    # Signatures first: numbers made differently are not compared unless the user says so.
    pairs: list[dict] = []
    tested: list = []
    for other in names[1:]:
        a, b = runs[names[0]][-1], runs[other][-1]
        differences = signature_differences(b, a)  # "theirs vs the base run"
        if differences is None:
            stderr(f"warning: {names[0]} or {other} has no score signature; cannot check they were scored alike")
        elif differences and not args.allow_different_signatures:
            raise CliError(
                f"{other} and {names[0]} were scored differently: {'; '.join(differences)} "
                "(pass --allow-different-signatures to compare them anyway)"
            )
        for difference in differences or []:
            stderr(f"warning: {other} vs {names[0]} signature differs: {difference}")
        entry: dict = {"run": other, "base": names[0], "step": b.step, "base_step": a.step}
        try:
            d = paired_difference(a, b, level=args.level)
        except ValueError as err:
            entry["error"] = str(err)
            tested.append(None)
        else:
            entry.update(difference=d.difference, half_width=d.half_width, low=d.low, high=d.high, shared=d.shared,
                         images=d.images, mean=d.mean_b, base_mean=d.mean_a, p_value=d.p_value,
                         significant_unadjusted=d.significant)
            tested.append(d)
        pairs.append(entry)
    # One family: every comparison printed with an interval, adjusted together (Holm).
    decisions = family_decisions(tested, level=args.level)
    family = decisions[0].family if decisions else 0
    for entry, decision in zip(pairs, decisions):
        if "error" not in entry:
            entry.update(p_adjusted=decision.p_adjusted, significant=decision.significant)
    plot = str(plot_runs(runs, args.plot, level=args.level, logged=logged)) if args.plot else None
    if args.json:
        import json

        report = {
            "runs": {
                name: {"last": {"step": e[-1].step, **e[-1].summary()},
                       "best": {"step": best_evaluation(e).step, **best_evaluation(e).summary(),
                                "selected_from": len(e)},
                       "signature": e[-1].signature}
                for name, e in runs.items()
            },
            "logged": {name: history for name, history in logged.items()},
            "level": args.level,
            "family": {"method": "holm", "size": family, "error_rate": 1 - args.level},
            "pairs": pairs, "plot": plot,
        }
        print(json.dumps(_finite(report)))
        return 0
    header = f"{'run':<24} {'eval':<5} {'step':>8} {'mean':>8} {'min':>8} {'max':>8} {'std':>8} {'count':>6}"
    _print(header)
    _print("-" * len(header))
    for name, evaluations in runs.items():
        for label, evaluation in (("last", evaluations[-1]), ("best", best_evaluation(evaluations))):
            _print_row(name, label, evaluation.step, evaluation.summary())
    for name, history in logged.items():
        best = max(history, key=lambda row: row["clip/mean"])
        for label, row in (("last", history[-1]), ("best", best)):
            _print_row(name, label, int(row["step"]), row)
    if logged:
        _print(f"(from TensorBoard scalars, no per-prompt scores: {', '.join(logged)})")
    selected = {name: len(e) for name, e in runs.items()} | {name: len(h) for name, h in logged.items()}
    if any(count > 1 for count in selected.values()):
        counts = sorted(set(selected.values()))
        over = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        _print(f"best: the evaluation with the highest mean among each run's {over} evaluations, selected after the fact: its "
              "mean is biased upward by the selection, and it is not compared (the comparisons use the last)")
    if pairs:
        _print()
        _print(f"paired difference of clip/mean at each run's last evaluation, over the rows (prompt id, text and seed) "
              f"both scored, several images of one prompt averaged, {args.level * 100:g}% t interval of the per-prompt "
              "differences (each comparison's own):")
        if family:
            _print(f"significance is decided after Holm's adjustment over the {family} comparison(s) below "
                  f"(family-wise error rate {(1 - args.level) * 100:g}%); p is each comparison's own, adj. p Holm's")
    for entry in pairs:
        other, base = entry["run"], entry["base"]
        if "error" in entry:
            _print(f"  {other} - {base}: not comparable ({entry['error']})")
            continue
        if entry["significant"]:
            verdict = "significant"
        elif entry["significant_unadjusted"]:
            verdict = "not significant after adjustment (its own interval excludes 0)"
        else:
            verdict = "not significant (the interval includes 0)"
        images = f", {entry['images']} images" if entry["images"] != entry["shared"] else ""
        _print(f"  {other} (step {entry['step']}) - {base} (step {entry['base_step']}): {entry['difference']:+.4f} "
              f"+/- {entry['half_width']:.4f} [{entry['low']:+.4f}, {entry['high']:+.4f}] over {entry['shared']} shared "
              f"prompts{images} (means {entry['mean']:.4f} vs {entry['base_mean']:.4f}), p {_p(entry['p_value'])}, "
              f"adj. p {_p(entry['p_adjusted'])}: {verdict}")
    if plot:
        _print(f"plot: {shown(plot)}")
    return 0


def _print(line: str = "") -> None:
    """A report line on stdout: run names and paths are the user's, their control characters escaped."""
    print(printable(line))


def _p(value: float) -> str:
    return f"{value:.2g}" if value >= 0.0001 else "<0.0001"


def _warned(read, path):
    """``read(path)``, its warnings (a FIFO skipped, ...) printed as ``warning: ...`` lines."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = read(path)
    for warning in caught:
        stderr(f"warning: {warning.message}")
    return result


def _finite(value):
    """``value`` with NaN and infinities as null: the report stays JSON any parser reads."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _first_name(run_dir: str, logged: dict) -> str | None:
    name = Path(run_dir).name or str(run_dir)
    return name if name in logged else None


def _unique(name: str, *taken: dict, fallback: str | None = None) -> str:
    """``name``, or a variant no run uses yet (two folders may share a name)."""
    if not any(name in t for t in taken):
        return name
    if fallback is not None and fallback != name and not any(fallback in t for t in taken):
        return fallback
    k = 2
    while any(f"{name} ({k})" in t for t in taken):
        k += 1
    return f"{name} ({k})"


def _print_row(name: str, label: str, step: int, s: dict) -> None:
    count = int(s.get("clip/count", 0))
    _print(f"{printable(name)[:24]:<24} {label:<5} {step:>8} {s['clip/mean']:>8.4f} {s.get('clip/min', math.nan):>8.4f} "
          f"{s.get('clip/max', math.nan):>8.4f} {s.get('clip/std', math.nan):>8.4f} {count:>6}")
