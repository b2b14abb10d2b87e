#!/usr/bin/env python
"""How many rendered images does "did this checkpoint get better than the last one?" need?

The question is answered with an interval of +/- w on the change of ``clip/mean`` between two
consecutive checkpoints, three ways:

* **unpaired**: two independent means (other prompts or other seeds at each evaluation); the
  difference has standard error ``sqrt(s_a^2 / n + s_b^2 / n)``;
* **paired, full library**: the mean of per-prompt differences on the same prompts and seeds
  (``clip/delta``); the images needed follow from the measured spread of the differences;
* **paired, adaptive**: :class:`~clip_metric.evaluation.PromptEvaluator` with ``target_ci=w``,
  run for real: the images the second evaluation actually rendered before it stopped.

Two sources of scores:

* **the demo's training run**: :class:`~clip_metric.demos.text_to_image.ShapesTextToImage`
  trained on the CPU as ``clip-metric demo`` trains it, a checkpoint kept after each epoch, every
  checkpoint scored by the embedded CLIP on the same library of demo captions. The wall-clock
  time of the adaptive evaluation is measured against a full-library one, with the demo's
  generator;
* **score distributions with the spread the source document reports** (per-prompt scores from
  about 0.14 to 0.39 around 0.3, i.e. a standard deviation near 0.04) at several correlations
  between checkpoints, simulated (``--sim-trials`` draws each): images needed by formula and by
  the same stopping rule, and how often the adaptive interval covers the true change.

Examples::

    python benchmarks/bench_adaptive.py --json adaptive.json
    python benchmarks/bench_adaptive.py --tiny          # a short run: checks the plumbing
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import time
from typing import Any

import numpy as np
import torch
from harness.environment import environment, load_average, log
from harness.report import common_arguments, fmt, resolve_device, table, target, targets_table, write_report

from clip_metric.intervals import half_width, prompts_needed, t_quantile

# Half-widths asked for. The demo's per-prompt scores spread about twice as much as the source
# document's (std ~0.09 against ~0.04), so its widths are twice as wide: the same questions.
SIM_WIDTHS = (0.002, 0.003, 0.005)
DEMO_WIDTHS = (0.004, 0.006, 0.01)


def train_checkpoints(epochs: int, steps_per_epoch: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """The demo model's weights before training and after each epoch (the demo's recipe)."""
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    from clip_metric.demos.text_to_image import ShapesTextToImage, scene_dataset

    pl.seed_everything(seed, verbose=False)
    module = ShapesTextToImage()
    train = scene_dataset(module, steps_per_epoch * 64, seed=seed)
    states = [copy.deepcopy(module.state_dict())]

    class Keep(pl.Callback):
        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            states.append(copy.deepcopy(pl_module.state_dict()))

    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, callbacks=[Keep()],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    trainer.fit(module, DataLoader(train, batch_size=64, shuffle=True))
    return states


def demo_run(args: argparse.Namespace) -> dict[str, Any]:
    from clip_metric.demos.text_to_image import ShapesTextToImage, demo_prompts
    from clip_metric.demos.tiny_clip import embedded_model_path
    from clip_metric.evaluation import PromptEvaluator

    log(f"-- training the demo model: {args.epochs} epochs of {args.steps_per_epoch} steps")
    states = train_checkpoints(args.epochs, args.steps_per_epoch)
    module = ShapesTextToImage().eval()
    prompts = demo_prompts(args.prompts)

    def generator(state: dict[str, torch.Tensor]) -> Any:
        def generate(texts: list[str], seeds: list[int]) -> torch.Tensor:
            module.load_state_dict(state)
            return module.generate_images(texts, seeds)

        return generate

    full = PromptEvaluator(embedded_model_path(), prompts=prompts, precision="32", batch_size=64)
    full.load_encoder()
    log(f"-- scoring {len(states)} checkpoints on {len(prompts)} prompts")
    per_checkpoint = []
    for state in states:
        result = full.evaluate(generator(state))
        per_checkpoint.append(np.array([r.score for r in result.records]))
    pairs = []
    # Consecutive checkpoints once training is under way (the first epoch moves everything).
    for k in range(1, len(states) - 1):
        a, b = per_checkpoint[k], per_checkpoint[k + 1]
        d = b - a
        pairs.append({
            "checkpoints": [k, k + 1], "mean_a": float(a.mean()), "mean_b": float(b.mean()),
            "std_a": float(a.std(ddof=1)), "std_b": float(b.std(ddof=1)), "std_delta": float(d.std(ddof=1)),
            "correlation": float(np.corrcoef(a, b)[0, 1]), "delta": float(d.mean()),
        })
    k_a, k_b = len(states) - 2, len(states) - 1  # the last two checkpoints: the decision at the end of the run
    last = pairs[-1]
    widths = {}
    for w in args.demo_widths:
        unpaired = _unpaired_needed(last["std_a"], last["std_b"], w)
        paired = _needed(last["std_delta"], w)
        # Interleaved rounds, medians: an adaptive evaluation (after its previous one, whose cost is
        # already paid) against a full-library one of the same checkpoint.
        seconds: dict[str, list[float]] = {"adaptive": [], "full": []}
        for _ in range(args.repeats):
            adaptive = PromptEvaluator(
                full.encoder, prompts=prompts, batch_size=64, target_ci=w, min_prompts=args.min_prompts,
                round_size=args.round_size,
            )
            adaptive.evaluate(generator(states[k_a]))
            started = time.perf_counter()
            second = adaptive.evaluate(generator(states[k_b]))
            seconds["adaptive"].append(time.perf_counter() - started)
            started = time.perf_counter()
            full.evaluate(generator(states[k_b]))
            seconds["full"].append(time.perf_counter() - started)
        seconds_adaptive, seconds_full = (statistics.median(seconds[k]) for k in ("adaptive", "full"))
        count = int(second.values["clip/count"])
        reached = float(second.values.get("clip/delta_ci", math.nan))
        widths[str(w)] = {
            "unpaired": unpaired, "paired": paired, "adaptive": count, "adaptive_delta_ci": reached,
            "adaptive_reached": bool(reached <= w), "adaptive_rounds": second.rounds,
            "library": len(prompts), "seconds_adaptive": seconds_adaptive, "seconds_full_library": seconds_full,
            # Only a stop that reached w answers the question; a library used up does not.
            "images_ratio_adaptive_over_unpaired": count / unpaired if reached <= w else math.nan,
            "images_ratio_adaptive_over_full": count / len(prompts),
            "seconds_ratio_adaptive_over_full": seconds_adaptive / seconds_full,
        }
        log(f"   w={w}: unpaired {unpaired}, paired {paired}, adaptive {count} ({seconds_adaptive:.2f} s vs "
            f"{seconds_full:.2f} s for {len(prompts)})")
    return {"library": len(prompts), "checkpoints": len(states), "pairs": pairs, "last_pair": [k_a, k_b],
            "widths": widths}


def _needed(std: float, w: float) -> int:
    """Smallest n whose t interval of a mean with this spread is at most w."""
    return prompts_needed(std / math.sqrt(2), w, correlation=0.0)  # 2 (1 - 0) (std / sqrt 2)^2 = std^2


def _unpaired_needed(std_a: float, std_b: float, w: float) -> int:
    """Images per evaluation for a t interval of +/- w on the difference of two independent means."""
    return prompts_needed(math.sqrt((std_a**2 + std_b**2) / 2), w)


def _stopping_point(d: np.ndarray, w: float, min_prompts: int, round_size: int) -> int:
    """Where the adaptive rule stops on paired differences ``d`` (rounds of fixed size, then the library)."""
    bounds = [*range(min_prompts, d.size, round_size), d.size]
    for n in bounds:
        sums = d[:n]
        if half_width(float(sums.sum()), float((sums * sums).sum()), n) <= w:
            return n
    return d.size


def simulated(args: argparse.Namespace) -> dict[str, Any]:
    """Scores with the source document's spread: prompt effect plus checkpoint noise, mean ~0.3."""
    rng = np.random.default_rng(0)
    std, library, true_delta = 0.04, args.sim_library, 0.003
    out = {}
    for rho in args.correlations:
        rows = {}
        for w in args.sim_widths:
            stops, covered, clipped = [], 0, 0
            for _ in range(args.sim_trials):
                prompt = rng.normal(0.30, std * math.sqrt(rho), library)
                a = prompt + rng.normal(0, std * math.sqrt(1 - rho), library)
                b = prompt + true_delta + rng.normal(0, std * math.sqrt(1 - rho), library)
                clipped += int(((a < 0.14) | (a > 0.39)).sum())
                d = b - a
                n = _stopping_point(d, w, args.min_prompts, args.round_size)
                stops.append(n)
                half = half_width(float(d[:n].sum()), float((d[:n] ** 2).sum()), n)
                covered += int(abs(float(d[:n].mean()) - true_delta) <= half)
            unpaired = prompts_needed(std, w)
            paired = prompts_needed(std, w, correlation=rho)
            rows[str(w)] = {
                "unpaired": unpaired, "paired": paired, "adaptive_median": int(statistics.median(stops)),
                "adaptive_max": int(max(stops)), "coverage": covered / args.sim_trials,
                "ratio_adaptive_over_unpaired": statistics.median(stops) / unpaired,
                "share_outside_0.14_0.39": clipped / (args.sim_trials * library),
            }
        out[str(rho)] = rows
    return {"std": std, "library": library, "true_delta": true_delta, "trials": args.sim_trials,
            "correlations": out}


def build_markdown(report: dict[str, Any]) -> str:
    demo, sim = report["results"]["demo"], report["results"]["simulated"]
    s = report["settings"]
    lines = [
        "# Images per decision: unpaired, paired and adaptive", "",
        f"Demo training run: {demo['checkpoints']} checkpoints (before training and after each of "
        f"{s['epochs']} epochs of {s['steps_per_epoch']} steps), {demo['library']} demo captions, embedded CLIP "
        f"(fp32), rounds of {s['round_size']} after {s['min_prompts']}.", "",
        "Consecutive checkpoints (per-prompt scores on the same prompts and seeds):", "",
    ]
    lines += table(
        ["checkpoints", "mean a", "mean b", "std", "std of differences", "correlation", "delta"],
        [[f"{p['checkpoints'][0]} -> {p['checkpoints'][1]}", fmt(p["mean_a"], ".4f"), fmt(p["mean_b"], ".4f"),
          fmt(p["std_b"], ".4f"), fmt(p["std_delta"], ".4f"), fmt(p["correlation"], ".3f"), fmt(p["delta"], "+.4f")]
         for p in demo["pairs"]],
    )
    k_a, k_b = demo["last_pair"]
    lines += ["", f"Images the evaluation of checkpoint {k_b} needs for a 95% interval of +/- w on its change since "
              f"checkpoint {k_a} (library of {demo['library']}; adaptive: what PromptEvaluator(target_ci=w) rendered):", ""]
    lines += table(
        ["w", "unpaired", "paired", "adaptive", "adaptive / unpaired", "delta_ci reached", "seconds adaptive / full"],
        [[k, str(v["unpaired"]), str(v["paired"]), str(v["adaptive"]),
          fmt(v["images_ratio_adaptive_over_unpaired"], ".3f"), fmt(v["adaptive_delta_ci"], ".4f"),
          f"{fmt(v['seconds_adaptive'], '.3f')} / {fmt(v['seconds_full_library'], '.3f')} = "
          f"{fmt(v['seconds_ratio_adaptive_over_full'], '.3f')} (images {fmt(v['images_ratio_adaptive_over_full'], '.3f')})"]
         for k, v in demo["widths"].items()],
    )
    lines += ["", f"Simulated scores: std {sim['std']} around 0.30, true change {sim['true_delta']:+}, library of "
              f"{sim['library']}, {sim['trials']} draws per cell:", ""]
    rows = []
    for rho, cells in sim["correlations"].items():
        for w, v in cells.items():
            rows.append([rho, w, str(v["unpaired"]), str(v["paired"]), f"{v['adaptive_median']} (max {v['adaptive_max']})",
                         fmt(v["ratio_adaptive_over_unpaired"], ".3f"), fmt(v["coverage"], ".3f")])
    lines += table(["correlation", "w", "unpaired", "paired", "adaptive, median", "adaptive / unpaired", "coverage"], rows)
    lines += ["", "## Targets", ""]
    lines += targets_table(report["targets"], s["tiny"], context=("w",))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = common_arguments(
        argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter),
        tiny="2 short epochs, 96 prompts, few draws: checks the plumbing",
    )
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--steps-per-epoch", type=int, default=40)
    parser.add_argument("--prompts", type=int, default=2048, help="demo captions in the library")
    parser.add_argument("--min-prompts", type=int, default=64)
    parser.add_argument("--round-size", type=int, default=32)
    parser.add_argument("--sim-library", type=int, default=1632, help="prompts per simulated library (Parti's size)")
    parser.add_argument("--sim-trials", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds of the demo's evaluations (median)")
    args = parser.parse_args(argv)
    resolve_device(parser, args)
    args.demo_widths, args.sim_widths = list(DEMO_WIDTHS), list(SIM_WIDTHS)
    args.correlations = [0.5, 0.7, 0.8, 0.9, 0.95]
    if args.tiny:
        args.epochs, args.steps_per_epoch, args.prompts, args.sim_trials, args.sim_library = 2, 3, 96, 5, 200
        args.demo_widths, args.sim_widths, args.correlations, args.repeats = [0.01], [0.01], [0.8], 1
    torch.set_grad_enabled(False)
    env = environment(torch.device(args.device))
    started = time.perf_counter()
    results = {"demo": demo_run(args), "simulated": simulated(args)}
    targets = []
    for w, v in results["demo"]["widths"].items():
        targets.append(target("adaptive / unpaired images (demo)", v["images_ratio_adaptive_over_unpaired"], "<=", 0.25, w=w))
        targets.append(target("seconds over images, adaptive vs full (demo)",
                              v["seconds_ratio_adaptive_over_full"] / v["images_ratio_adaptive_over_full"], "<=", 1.5, w=w))
    report = {
        "benchmark": "adaptive", "environment": {**env, "load_average_at_end": load_average()},
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "markdown")},
        "results": results, "targets": targets, "seconds": time.perf_counter() - started,
        "t_975_at_63_dof": t_quantile(0.975, 63),
    }
    report["markdown"] = build_markdown(report)
    return write_report(report, args)


if __name__ == "__main__":
    main()
