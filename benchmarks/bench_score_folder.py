#!/usr/bin/env python
"""How fast does ``clip-metric score`` go through a large folder of PNGs, decoding in 0 or N workers?

The script writes a folder of PNG images (512x512 by default: smooth colour fields with fine
noise, so each file is a few hundred KB, like a generated image) with a caption beside each,
then runs the command's own entry point (``clip_metric.cli.main(["score", ...])``) on it with
``--workers 0`` (decode in the scoring process) and ``--workers N``, in interleaved rounds after
a warm-up, and reports images per second (median). The CLIP model is the embedded demo model by
default, so the figure is what decoding costs next to a model that costs little (on a GPU even
ViT-L/14 scores faster than one core decodes PNGs); ``--clip b32`` scores with a random ViT-B/32
instead.

Examples::

    python benchmarks/bench_score_folder.py --device cpu --json score-folder.json
    python benchmarks/bench_score_folder.py --tiny     # 16 small images: checks the plumbing
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from harness.environment import environment, load_average, log, quiet_transformers
from harness.report import common_arguments, fmt, resolve_device, table, target, targets_table, write_report
from harness.timing import rounds


def write_folder(folder: Path, n: int, size: int) -> int:
    """``n`` PNGs of ``size`` x ``size`` with ``.txt`` captions; returns the bytes written."""
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    total = 0
    for i in range(n):
        phase = rng.uniform(0, 2 * np.pi, 3)
        field = np.stack([np.sin(2 * np.pi * (x * (1 + k) + y * (2 - k)) + phase[k]) for k in range(3)], -1)
        pixels = np.clip(127.5 * (field + 1) + rng.normal(0, 6, field.shape), 0, 255).astype(np.uint8)
        path = folder / f"image-{i:05d}.png"
        Image.fromarray(pixels).save(path)
        (folder / f"image-{i:05d}.txt").write_text(f"a smooth colour field number {i}")
        total += path.stat().st_size
    return total


def model_dir(kind: str, folder: Path) -> str:
    if kind == "embedded":
        from clip_metric.demos.tiny_clip import embedded_model_path

        return embedded_model_path()
    from clip_metric.testing import ARCHITECTURES, build_clip

    return str(build_clip(folder / "clip-b32", ARCHITECTURES["b32"]))


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from clip_metric.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp, "images")
        folder.mkdir()
        log(f"-- writing {args.images} PNGs of {args.size}x{args.size}")
        size_bytes = write_folder(folder, args.images, args.size)
        model = model_dir(args.clip, Path(tmp))
        variants = {f"workers={w}": w for w in args.workers}
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        for index, timed_round, order in rounds(list(variants), args.repeats, warmup=not args.tiny):
            log(f"   round {index}{'' if timed_round else ' (warm-up)'}")
            for name in order:
                argv = ["score", str(folder), "--model", model, "--precision", args.precision, "--quiet",
                        "--batch-size", str(args.batch_size), "--workers", str(variants[name]),
                        "--accelerator", args.device]
                started = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):  # the command's summary, not the report's
                    code = main(argv)
                elapsed = time.perf_counter() - started
                if code != 0:
                    raise RuntimeError(f"clip-metric score exited with {code} ({name})")
                if timed_round:
                    seconds[name].append(elapsed)
    results = {}
    for name, values in seconds.items():
        median = statistics.median(values)
        results[name] = {"seconds": median, "images_per_s": args.images / median, "rounds": values}
    base = results[f"workers={args.workers[0]}"]["seconds"]
    for row in results.values():
        row["speedup_vs_no_workers"] = base / row["seconds"]
    return {"images": args.images, "size": args.size, "mean_file_kib": size_bytes / args.images / 1024,
            "variants": results}


def build_markdown(report: dict[str, Any]) -> str:
    r, s = report["results"], report["settings"]
    lines = [
        "# clip-metric score on a folder of PNGs", "",
        f"{r['images']} PNGs of {r['size']}x{r['size']} (mean {r['mean_file_kib']:.0f} KiB), CLIP `{s['clip']}` at "
        f"precision {s['precision']}, batch {s['batch_size']}, {s['device']}; median of {s['repeats']} interleaved "
        "rounds of the whole command.", "",
    ]
    lines += table(
        ["decoding", "seconds", "images / s", "speed-up over workers=0"],
        [[name, fmt(v["seconds"], ".2f"), fmt(v["images_per_s"], ".1f"), fmt(v["speedup_vs_no_workers"], ".2f")]
         for name, v in r["variants"].items()],
    )
    lines += ["", "## Targets", ""] + targets_table(report["targets"], s["tiny"])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = common_arguments(
        argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter),
        tiny="16 images of 64x64, one round: checks the plumbing",
    )
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="decoding workers to compare")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--clip", choices=("embedded", "b32"), default="embedded")
    parser.add_argument("--precision", default="32")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    resolve_device(parser, args)
    if args.tiny:
        args.images, args.size, args.repeats = 16, 64, 1
    quiet_transformers()
    env = environment(torch.device(args.device))
    started = time.perf_counter()
    results = measure(args)
    most = results["variants"][f"workers={args.workers[-1]}"]
    report = {
        "benchmark": "score_folder", "environment": {**env, "load_average_at_end": load_average()},
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "markdown")},
        "results": results, "seconds": time.perf_counter() - started,
        "targets": [target(f"speed-up of {args.workers[-1]} decoding workers over {args.workers[0]}",
                           most["speedup_vs_no_workers"], ">=", 1.3)],
    }
    report["markdown"] = build_markdown(report)
    return write_report(report, args)


if __name__ == "__main__":
    main()
