#!/usr/bin/env python
"""How long do large prompt libraries and caption tables take to load, and does the cost grow linearly?

It also times the bundled libraries (Parti Prompts, GenEval) loaded from their packaged files,
and a balanced subset of Parti.

For every format a library can come in (``.txt``, ``.json`` as an object, ``.json`` as a list,
``.jsonl``, ``.csv``, ``.tsv``) and for a ``metadata.jsonl`` caption table, the script writes a
file of N prompts (mixed lengths, unicode, commas and quotes) at two sizes and times loading it
with the package's own loaders (:func:`clip_metric.prompts.load_prompt_library`,
``clip_metric.cli.captions.read_caption_table``), median of ``--repeats`` interleaved rounds after
a warm-up. The ratio of the two times over the ratio of the sizes says how the cost grows: about
1 is linear, the size ratio itself would be quadratic.

Examples::

    python benchmarks/bench_loaders.py --json loaders.json       # 10,000 and 100,000 prompts
    python benchmarks/bench_loaders.py --tiny                     # 500 and 2,000: checks the plumbing
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
from harness.environment import environment, load_average, log
from harness.report import common_arguments, fmt, resolve_device, table, target, targets_table, write_report
from harness.timing import rounds

FORMATS = ("txt", "json-object", "json-list", "jsonl", "csv", "tsv", "captions-jsonl")


def _text(i: int) -> str:
    # Mixed lengths, a comma, a quote and a non-ASCII word now and then: what real libraries hold.
    extra = " with a long tail of words describing the scene" * (i % 4)
    return f"prompt {i}: a photo of a caf\u00e9, \"sign\" number {i}{extra}"


def write_library(kind: str, n: int, folder: Path) -> Path:
    """A file of ``n`` prompts in format ``kind``."""
    texts = [_text(i) for i in range(n)]
    if kind == "txt":
        path = folder / f"{n}.txt"
        path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    elif kind == "json-object":
        path = folder / f"{n}-object.json"
        path.write_text(json.dumps({f"p{i}": {"prompt": t, "category": f"c{i % 12}"} for i, t in enumerate(texts)}))
    elif kind == "json-list":
        path = folder / f"{n}-list.json"
        path.write_text(json.dumps([{"prompt": t, "category": f"c{i % 12}"} for i, t in enumerate(texts)]))
    elif kind in ("jsonl", "captions-jsonl"):
        path = folder / (f"{n}.jsonl" if kind == "jsonl" else f"{n}-metadata.jsonl")
        key = "prompt" if kind == "jsonl" else "text"
        rows = ({"file_name": f"{i}.png", key: t} if kind == "captions-jsonl" else {key: t, "category": f"c{i % 12}"}
                for i, t in enumerate(texts))
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    else:
        delimiter = "," if kind == "csv" else "\t"
        path = folder / f"{n}.{kind}"
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL if kind == "csv" else csv.QUOTE_NONE,
                                escapechar=None if kind == "csv" else "\\")
            writer.writerow(["Prompt", "Category"])
            for i, t in enumerate(texts):
                writer.writerow([t if kind == "csv" else t.replace("\t", " "), f"c{i % 12}"])
    return path


def loader(kind: str, path: Path) -> Callable[[], int]:
    from clip_metric.cli.captions import read_caption_table
    from clip_metric.prompts import load_prompt_library

    if kind == "captions-jsonl":
        return lambda: len(read_caption_table(path))
    return lambda: len(load_prompt_library(path))


def measure(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    sizes = (500, 2000) if args.tiny else (10_000, 100_000)
    cells = []
    for kind in FORMATS:
        for n in sizes:
            path = write_library(kind, n, folder)
            cells.append((kind, n, path, loader(kind, path)))
            log(f"   wrote {path.name} ({path.stat().st_size / 1e6:.1f} MB)")
    seconds: dict[tuple[str, int], list[float]] = {(kind, n): [] for kind, n, _, _ in cells}
    for index, timed_round, order in rounds(cells, args.repeats, warmup=not args.tiny):
        log(f"   round {index}{'' if timed_round else ' (warm-up)'}")
        for kind, n, _, load in order:
            started = time.perf_counter()
            count = load()
            elapsed = time.perf_counter() - started
            if count != n:
                raise RuntimeError(f"{kind}: loaded {count} prompts, expected {n}")
            if timed_round:
                seconds[(kind, n)].append(elapsed)
    small, large = sizes
    formats = {}
    for kind in FORMATS:
        t_small = statistics.median(seconds[(kind, small)])
        t_large = statistics.median(seconds[(kind, large)])
        formats[kind] = {
            "seconds": {str(small): t_small, str(large): t_large},
            "us_per_prompt": {str(small): 1e6 * t_small / small, str(large): 1e6 * t_large / large},
            # 1.0: linear; large/small (10 here): quadratic.
            "growth_over_linear": (t_large / t_small) / (large / small),
        }
    return {"sizes": list(sizes), "formats": formats, "bundled": measure_bundled(args)}


def measure_bundled(args: argparse.Namespace) -> dict[str, float]:
    """Milliseconds to load each bundled library from its file (cache cleared), and to take a subset."""
    from clip_metric import prompts

    variants = {
        "parti": lambda: prompts.load_prompt_library("parti"),
        "geneval": lambda: prompts.load_prompt_library("geneval"),
        "parti, max_prompts=256": lambda: prompts.load_prompt_library("parti", max_prompts=256),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _, timed_round, order in rounds(list(variants), max(args.repeats, 3), warmup=not args.tiny):
        for name in order:
            prompts._builtin.cache_clear()  # from the packaged file, every time
            started = time.perf_counter()
            variants[name]()
            if timed_round:
                times[name].append(1000.0 * (time.perf_counter() - started))
    return {name: statistics.median(values) for name, values in times.items()}


def build_markdown(report: dict[str, Any]) -> str:
    small, large = report["results"]["sizes"]
    rows = [
        [kind, fmt(f["seconds"][str(small)], ".3f"), fmt(f["seconds"][str(large)], ".3f"),
         fmt(f["us_per_prompt"][str(large)], ".1f"), fmt(f["growth_over_linear"], ".2f")]
        for kind, f in report["results"]["formats"].items()
    ]
    lines = [f"### Loading prompt libraries of {small:,} and {large:,} prompts", ""]
    lines += table(["format", f"{small:,} (s)", f"{large:,} (s)", "us per prompt", "growth / linear"], rows)
    lines += ["", "growth / linear: (time ratio) / (size ratio); 1 is linear, "
              f"{large // small} would be quadratic.", ""]
    lines += ["", "### Bundled libraries (loaded from the packaged file each time)", ""]
    lines += table(["library", "ms"], [[name, fmt(ms, ".1f")] for name, ms in report["results"]["bundled"].items()])
    lines += [""]
    lines += targets_table(report["targets"], report["settings"]["tiny"], context=("format",))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = common_arguments(
        argparse.ArgumentParser(description=__doc__.split("\n")[0]), tiny="500 and 2,000 prompts, no warm-up"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (median reported)")
    args = parser.parse_args(argv)
    resolve_device(parser, args)
    if args.tiny:
        args.repeats = 1
    device = torch.device(args.device)
    report: dict[str, Any] = {"environment": environment(device), "settings": {"tiny": args.tiny, "repeats": args.repeats}}
    with tempfile.TemporaryDirectory() as folder:
        report["results"] = measure(args, Path(folder))
    report["environment"]["load_average_at_end"] = load_average()
    large = str(report["results"]["sizes"][1])
    report["targets"] = [
        target(f"seconds to load {int(large):,} prompts", f["seconds"][large], "<=", 10.0, format=kind)
        for kind, f in report["results"]["formats"].items()
    ] + [
        target("cost growth over linear", f["growth_over_linear"], "<=", 2.0, format=kind)
        for kind, f in report["results"]["formats"].items()
    ] + [
        target("milliseconds to load and subset Parti", report["results"]["bundled"]["parti, max_prompts=256"], "<=",
               100.0, format="parti")
    ]
    report["markdown"] = build_markdown(report)
    return write_report(report, args)


if __name__ == "__main__":
    main()
