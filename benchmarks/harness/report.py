"""Reports: the options every script has, markdown tables, targets, and the JSON/markdown files.

Every script takes ``--device``, ``--json``, ``--markdown`` and ``--tiny`` (:func:`common_arguments`),
builds one JSON-serialisable dict whose ``"markdown"`` entry is its human-readable report, and
hands it to :func:`write_report`.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

from torch import Tensor


def common_arguments(parser: argparse.ArgumentParser, tiny: str) -> argparse.ArgumentParser:
    """Add ``--device``, ``--json``, ``--markdown`` and ``--tiny`` (whose help is ``tiny``)."""
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available")
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON to this path")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the markdown report to this path")
    parser.add_argument("--tiny", action="store_true", help=tiny)
    return parser


def resolve_device(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``args.device``: the one asked for, else cuda where available; an error if it is not."""
    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")


def fmt(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    """``value`` formatted, or ``n/a`` where there is none (or it is not finite)."""
    return "n/a" if value is None or not math.isfinite(value) else f"{value:{spec}}{suffix}"


def table(header: Sequence[str], rows: Iterable[Sequence[str]], align: str | None = None) -> list[str]:
    """A markdown table's lines; ``align`` has one ``l`` or ``r`` per column (default: the first
    column left, the others right)."""
    align = align or "l" + "r" * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "".join("---:|" if a == "r" else "---|" for a in align)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


# --------------------------------------------------------------------------------------- targets
def target(name: str, value: float | None, op: str, threshold: float, **context: Any) -> dict[str, Any]:
    """One target's row: passed is ``None`` where nothing was measured."""
    passed = None if value is None else (value >= threshold if op == ">=" else value <= threshold)
    return dict(target=name, **context, value=value, op=op, threshold=threshold, passed=passed)


def _spec(threshold: float) -> str:
    if isinstance(threshold, int):
        return "g"
    return ".2e" if threshold < 0.01 else ".3f"


def targets_table(targets: Sequence[dict[str, Any]], tiny: bool, context: Sequence[str] = ()) -> list[str]:
    """The targets as a markdown table, ``context`` naming the extra columns (e.g. model, scenario)."""
    rows = []
    for t in targets:
        spec = _spec(t["threshold"])
        result = "n/a" if t["passed"] is None else ("PASS" if t["passed"] else "FAIL")
        if tiny and t["passed"] is not None:
            result += " (tiny: not meaningful)"
        cells = [t["target"], *(str(t[key]) for key in context), fmt(t["value"], spec), f"{t['op']} {t['threshold']:{spec}}"]
        rows.append(cells + [result])
    return table(["target", *context, "measured", "target", "result"], rows, "l" * (1 + len(context)) + "rrl")


# --------------------------------------------------------------------------------------- files
def json_default(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_report(report: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Print the markdown report; write the JSON (``--json``) and the markdown (``--markdown``)."""
    print(report["markdown"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=json_default))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(report["markdown"])
    return report
