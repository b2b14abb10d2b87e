#!/usr/bin/env python
"""What CMMD costs: the package's blocked ``functional.cmmd`` next to a plain one-shot version.

CMMD (Jayasumana et al., 2024) compares the CLIP image embeddings of generated and reference
images through three full kernel matrices. A plain implementation (as the authors' code and its
PyTorch port do) builds each ``N x M`` matrix at once, in float32; ``clip_metric.functional.cmmd``
walks them in tiles with float64 accumulation. Side by side in one run, on the same embeddings:

* ``one-shot``: the three kernel matrices at once, float32 throughout (the plain implementation);
* ``blocked``: ``functional.cmmd`` as it is (float32 products, float64 tiles and sums).

Reported: median seconds of interleaved rounds and the ratio between them, peak extra memory
(CPU: peak resident set size; CUDA: the allocator's peak), and each value's distance from the
definition computed in float64 (one shot). A second part runs ``blocked`` alone at a size the
one-shot version cannot hold in bounded memory (``--large``, 30,000 x 30,000 of width 768 by
default) and reports its time and peak extra memory against the target of 1 GiB.

Examples::

    python benchmarks/bench_cmmd.py --device cpu --json cmmd.json
    python benchmarks/bench_cmmd.py --tiny        # a few seconds: plumbing check only
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import torch
from harness.environment import environment, load_average
from harness.report import common_arguments, fmt, resolve_device, table, target, targets_table, write_report
from harness.timing import measured, rounds

METHODS = ("one-shot", "blocked")
SIGMA, SCALE = 10.0, 1000.0


def one_shot(x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype = torch.float32) -> float:
    """The plain implementation: unit rows, three full Gaussian kernel matrices, their means."""
    x = torch.nn.functional.normalize(x.to(dtype), dim=-1)
    y = torch.nn.functional.normalize(y.to(dtype), dim=-1)
    gamma = 1.0 / (2.0 * SIGMA**2)
    xn, yn = (x * x).sum(1), (y * y).sum(1)
    k_xx = torch.exp(-gamma * (xn[:, None] + xn[None, :] - 2 * x @ x.T)).mean()
    k_yy = torch.exp(-gamma * (yn[:, None] + yn[None, :] - 2 * y @ y.T)).mean()
    k_xy = torch.exp(-gamma * (xn[:, None] + yn[None, :] - 2 * x @ y.T)).mean()
    return float(SCALE * (k_xx + k_yy - 2 * k_xy))


def embeddings(n: int, width: int, shift: float, seed: int, device: torch.device) -> torch.Tensor:
    """Clustered float32 rows (like CLIP image embeddings, which sit in a narrow cone)."""
    gen = torch.Generator().manual_seed(seed)
    centre = torch.randn(width, generator=torch.Generator().manual_seed(0))
    rows = 4.0 * centre + torch.randn(n, width, generator=gen) + shift
    return rows.to(device)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_arguments(parser, "300 x 300 of width 64 and a large run of 1,000: a few seconds (checks the plumbing)")
    parser.add_argument("--n", type=int, default=None, help="images per side, side by side (default 6,000 on CPU, 20,000 on CUDA)")
    parser.add_argument("--width", type=int, default=768, help="embedding width (768: ViT-L/14's projection)")
    parser.add_argument("--large", type=int, default=30_000, help="images per side of the blocked-only run (0: skip)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (median) after a warm-up round")
    args = parser.parse_args(argv)
    resolve_device(parser, args)
    if args.tiny:
        args.n, args.width, args.large, args.repeats = 300, 64, 1000, 1
    args.n = args.n or (20_000 if args.device == "cuda" else 6_000)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    report = measure(args, torch.device(args.device))
    report["markdown"] = markdown(report)
    return write_report(report, args)


def measure(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    from clip_metric.functional import cmmd

    env = environment(device)
    x = embeddings(args.n, args.width, 0.0, 1, device)
    y = embeddings(args.n, args.width, 0.05, 2, device)
    exact = one_shot(x.double(), y.double(), torch.float64)
    runners = {"one-shot": lambda: one_shot(x, y), "blocked": lambda: cmmd(x, y)}
    seconds: dict[str, list[float]] = {name: [] for name in METHODS}
    memory: dict[str, float | None] = {}
    values: dict[str, float] = {}
    for _, timed_round, order in rounds(METHODS, args.repeats):
        for name in order:
            holder: list[float] = []
            elapsed, peak = measured(lambda: holder.append(runners[name]()), device)
            values[name] = holder[0]
            if timed_round:
                seconds[name].append(elapsed)
                memory[name] = peak if memory.get(name) is None else max(memory[name] or 0.0, peak or 0.0)
    median = {name: statistics.median(v) for name, v in seconds.items()}
    methods = {
        name: {
            "seconds": median[name],
            "seconds_all": seconds[name],
            "x_one_shot": median["one-shot"] / median[name],
            "peak_extra_mib": memory[name],
            "value": values[name],
            "abs_error_vs_float64": abs(values[name] - exact),
        }
        for name in METHODS
    }
    large = None
    if args.large:
        del x, y
        xl = embeddings(args.large, args.width, 0.0, 3, device)
        yl = embeddings(args.large, args.width, 0.05, 4, device)
        holder = []
        elapsed, peak = measured(lambda: holder.append(cmmd(xl, yl)), device)
        embedding_mib = 2 * xl.numel() * xl.element_size() / 2**20
        large = {"n": args.large, "seconds": elapsed, "peak_extra_mib": peak, "embeddings_mib": embedding_mib,
                 "value": holder[0]}
    targets = [
        target("blocked within 1e-5 of the float64 definition", methods["blocked"]["abs_error_vs_float64"], "<=", 1e-5),
        target("blocked at least 0.8x the one-shot speed", methods["blocked"]["x_one_shot"], ">=", 0.8),
    ]
    if large is not None:
        # Peak RSS includes the embeddings' own pages only if they were not resident before; the
        # bound is on what CMMD adds.
        targets.append(target(f"blocked peak extra MiB at {args.large:,} per side", large["peak_extra_mib"], "<=", 1024.0))
    env["load_average_at_end"] = load_average()
    return {"environment": env, "n": args.n, "width": args.width, "repeats": args.repeats, "tiny": args.tiny,
            "float64_value": exact, "methods": methods, "large": large, "targets": targets}


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"CMMD of {report['n']:,} x {report['n']:,} embeddings of width {report['width']}, "
        f"{report['environment']['device_name']}, median of {report['repeats']} interleaved rounds",
        "",
    ]
    if report["tiny"]:
        lines += ["**--tiny: small sizes; checks the plumbing, the figures mean nothing**", ""]
    rows = [
        [name, fmt(row["seconds"], ".3f"), f"{row['x_one_shot']:.2f}x", fmt(row["peak_extra_mib"], ".0f"),
         f"{row['value']:.6f}", f"{row['abs_error_vs_float64']:.1e}"]
        for name, row in report["methods"].items()
    ]
    lines += table(["method", "seconds", "speed vs one-shot", "peak extra MiB", "CMMD", "error vs float64"], rows)
    large = report["large"]
    if large is not None:
        lines += ["", f"blocked alone at {large['n']:,} x {large['n']:,}: {large['seconds']:.1f} s, peak extra "
                  f"{fmt(large['peak_extra_mib'], '.0f')} MiB beyond {large['embeddings_mib']:.0f} MiB of embeddings"]
    lines += ["", *targets_table(report["targets"], report["tiny"])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
