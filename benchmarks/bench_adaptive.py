#!/usr/bin/env python
"""Images per evaluation over whole adaptive runs: paired, adaptive, against the full library.

A training run evaluates checkpoint after checkpoint. With ``target_ci=w`` every evaluation is
adaptive, the first included: the first has no previous one to pair with and targets
``clip/mean_ci``; each later one stops when its paired ``clip/delta_ci`` reaches ``w`` and
renders on to the pairs the next one is predicted to need
(:class:`~clip_metric.adaptive.StoppingRule`). What is measured, per evaluation and over the
whole run, against:

* **full library**: rendering every prompt at every evaluation (what ``target_ci=None`` does);
* **unpaired formula**: the images a +/- w interval on the change of two independent means needs;
* **paired formula**: :func:`~clip_metric.intervals.prompts_needed` at the measured correlation.

Three sources of scores:

* **the demo's training run**: :class:`~clip_metric.demos.text_to_image.ShapesTextToImage`
  trained on the CPU as ``clip-metric demo`` trains it, a checkpoint kept after each epoch,
  every checkpoint scored by the embedded CLIP on the whole library (the measured correlation
  rho of consecutive checkpoints) and then by one adaptive ``PromptEvaluator`` run over all of
  them, for each w;
* **simulated steady runs** at rho 0.5-0.95 (scores with sd 0.04 around 0.3, the source
  document's spread; a change of +0.001 per evaluation), the package's stopping rule driven
  with them: images per evaluation, how often ``delta_ci`` misses w, how often it covers;
* **a skewed change** (a tenth of the prompts gain 0.05-0.1, the rest barely move): coverage of
  ``delta_ci`` when an evaluation stops by the rule, plain t interval against the skew-corrected one.

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

from clip_metric.adaptive import KEEP_PAIRS_Z, StoppingRule, delta_half_width
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
    log(f"-- scoring {len(states)} checkpoints on {len(prompts)} prompts (the full library each time)")
    per_checkpoint = []
    started = time.perf_counter()
    for state in states:
        result = full.evaluate(generator(state))
        per_checkpoint.append(np.array([r.score for r in result.records]))
    seconds_full = time.perf_counter() - started
    pairs = []
    for k in range(len(states) - 1):
        a, b = per_checkpoint[k], per_checkpoint[k + 1]
        d = b - a
        pairs.append({
            "checkpoints": [k, k + 1], "mean_a": float(a.mean()), "mean_b": float(b.mean()),
            "std_a": float(a.std(ddof=1)), "std_b": float(b.std(ddof=1)), "std_delta": float(d.std(ddof=1)),
            "correlation": float(np.corrcoef(a, b)[0, 1]), "delta": float(d.mean()),
        })
    # Once training is under way: the first epoch moves everything (rho of untrained weights).
    later = pairs[1:] if len(pairs) > 1 else pairs
    widths = {}
    for w in args.demo_widths:
        adaptive = PromptEvaluator(
            full.encoder, prompts=prompts, batch_size=64, precision="32", target_ci=w, min_prompts=args.min_prompts,
            round_size=args.round_size,
        )
        evaluations = []
        started = time.perf_counter()
        for k, state in enumerate(states):
            result = adaptive.evaluate(generator(state))
            ci = float(result.values.get("clip/delta_ci", math.nan))
            pair = pairs[k - 1] if k else None
            evaluations.append({
                "checkpoint": k, "images": int(result.values["clip/count"]), "delta_ci": ci,
                "reached": bool(ci <= w) if k else bool(float(result.values["clip/mean_ci"]) <= w),
                "paired_formula": None if pair is None else _needed(pair["std_delta"], w),
                "unpaired_formula": None if pair is None else _unpaired_needed(pair["std_a"], pair["std_b"], w),
            })
        seconds_adaptive = time.perf_counter() - started
        images = [e["images"] for e in evaluations]
        paired = [e["paired_formula"] for e in evaluations[1:]]
        unpaired = [e["unpaired_formula"] for e in evaluations[1:]]
        widths[str(w)] = {
            "evaluations": evaluations, "library": len(prompts),
            "images_per_evaluation": statistics.mean(images),
            "images_per_evaluation_after_first": statistics.mean(images[1:]),
            "paired_formula_mean": statistics.mean(paired), "unpaired_formula_mean": statistics.mean(unpaired),
            "ratio_over_full_library": statistics.mean(images) / len(prompts),
            "ratio_over_unpaired": statistics.mean(images) / statistics.mean([min(u, len(prompts)) for u in unpaired]),
            "ratio_over_paired_after_first": statistics.mean(images[1:]) / statistics.mean(paired),
            "reached": sum(e["reached"] for e in evaluations[1:]), "paired_evaluations": len(evaluations) - 1,
            "seconds_adaptive_run": seconds_adaptive, "seconds_full_library_run": seconds_full,
        }
        log(f"   w={w}: {statistics.mean(images):.0f} images per evaluation (library {len(prompts)}), "
            f"{widths[str(w)]['reached']} of {len(evaluations) - 1} deltas reached w")
    return {"library": len(prompts), "checkpoints": len(states), "pairs": pairs,
            "measured_rho": [p["correlation"] for p in pairs],
            "measured_rho_median_after_first_epoch": statistics.median(p["correlation"] for p in later),
            "widths": widths}


def _needed(std: float, w: float) -> int:
    """Smallest n whose t interval of a mean with this spread is at most w."""
    return prompts_needed(std / math.sqrt(2), w, correlation=0.0)  # 2 (1 - 0) (std / sqrt 2)^2 = std^2


def _unpaired_needed(std_a: float, std_b: float, w: float) -> int:
    """Images per evaluation for a t interval of +/- w on the difference of two independent means."""
    return prompts_needed(math.sqrt((std_a**2 + std_b**2) / 2), w)


def _moments(d: np.ndarray) -> tuple[float, float, float, int]:
    return float(d.sum()), float((d * d).sum()), float((d**3).sum()), int(d.size)


def _evaluate(rule: StoppingRule, scores: np.ndarray, previous: np.ndarray | None) -> tuple[int, float, float]:
    """What an evaluation of ``scores`` (in evaluation order) renders after ``previous``: count, delta, delta_ci."""
    n = rule.replay(scores, previous)  # the rule asked after each round, as PromptEvaluator asks it
    if previous is None:
        return n, math.nan, math.nan
    m = min(n, previous.size)
    d = scores[:m] - previous[:m]
    return n, float(d.mean()), delta_half_width(*_moments(d)) if m >= 10 else math.nan


def simulated(args: argparse.Namespace) -> dict[str, Any]:
    """Whole steady runs: prompt effect plus checkpoint noise, mean ~0.3, a change of +0.001 per evaluation."""
    std, library, step_delta = 0.04, args.sim_library, 0.001
    out = {}
    for rho in args.correlations:
        rows = {}
        for w in args.sim_widths:
            rng = np.random.default_rng(0)
            rule = StoppingRule(w, min_prompts=args.min_prompts, round_size=args.round_size)
            firsts, later, misses, covered = [], [], 0, 0
            for _ in range(args.sim_runs):
                prompt = rng.normal(0.30, std * math.sqrt(rho), library)
                previous = None
                for k in range(args.sim_evaluations):
                    scores = prompt + step_delta * k + rng.normal(0, std * math.sqrt(1 - rho), library)
                    n, delta, ci = _evaluate(rule, scores, previous)
                    if previous is None:
                        firsts.append(n)
                    else:
                        later.append(n)
                        misses += not ci <= w
                        covered += abs(delta - step_delta) <= ci
                    previous = scores[:n]
            paired = prompts_needed(std, w, correlation=rho)
            unpaired = prompts_needed(std, w)
            every = (sum(firsts) + sum(later)) / (len(firsts) + len(later))
            rows[str(w)] = {
                "paired_formula": paired, "unpaired_formula": unpaired, "first": statistics.mean(firsts),
                "after_first": statistics.mean(later), "images_per_evaluation": every,
                "ratio_after_first_over_paired": statistics.mean(later) / paired,
                "ratio_over_paired": every / paired, "ratio_over_unpaired": every / min(unpaired, library),
                "ratio_over_full_library": every / library,
                "miss_rate": misses / len(later), "coverage": covered / len(later),
            }
        out[str(rho)] = rows
    return {"std": std, "library": library, "delta_per_evaluation": step_delta, "runs": args.sim_runs,
            "evaluations_per_run": args.sim_evaluations, "keep_pairs_z": KEEP_PAIRS_Z,
            "correlations": out}


def skewed(args: argparse.Namespace) -> dict[str, Any]:
    """Coverage of the delta_ci an evaluation stops with when a tenth of the prompts carry the change."""
    library, true = args.sim_library, 0.1 * 0.075
    rows = {}
    for w in args.skew_widths:
        cells = {}
        for name, rule in (("plain t", None), ("skew-corrected", StoppingRule(w, min_prompts=args.min_prompts,
                                                                            round_size=args.round_size))):
            rng = np.random.default_rng(1)
            covered, images = 0, []
            for _ in range(args.skew_trials):
                d = (rng.random(library) < 0.1) * rng.uniform(0.05, 0.1, library) + rng.normal(0, 0.001, library)
                if rule is None:  # the t interval, stopping where it first reaches w
                    n = next((b for b in range(args.min_prompts, library, args.round_size)
                              if half_width(float(d[:b].sum()), float((d[:b] ** 2).sum()), b) <= w), library)
                    ci = half_width(float(d[:n].sum()), float((d[:n] ** 2).sum()), n)
                else:
                    previous = np.zeros(library)
                    n, _, ci = _evaluate(rule, d, previous)
                covered += abs(float(d[:n].mean()) - true) <= ci
                images.append(n)
            cells[name] = {"coverage": covered / args.skew_trials, "images_mean": statistics.mean(images)}
        rows[str(w)] = cells
    fixed = {}
    rng = np.random.default_rng(2)
    for n in (64, 128, 256):
        t_cov = skew_cov = 0
        for _ in range(args.skew_trials):
            d = (rng.random(n) < 0.1) * rng.uniform(0.05, 0.1, n) + rng.normal(0, 0.001, n)
            t_cov += abs(float(d.mean()) - true) <= half_width(float(d.sum()), float((d * d).sum()), n)
            skew_cov += abs(float(d.mean()) - true) <= delta_half_width(*_moments(d))
        fixed[str(n)] = {"plain t": t_cov / args.skew_trials, "skew-corrected": skew_cov / args.skew_trials}
    return {"true_delta": true, "trials": args.skew_trials, "stopped": rows, "fixed_count": fixed}


def build_markdown(report: dict[str, Any]) -> str:
    demo, sim, skew = (report["results"][k] for k in ("demo", "simulated", "skewed"))
    s = report["settings"]
    lines = [
        "# Images per evaluation over whole adaptive runs", "",
        f"Demo training run: {demo['checkpoints']} checkpoints (before training and after each of "
        f"{s['epochs']} epochs of {s['steps_per_epoch']} steps), {demo['library']} demo captions, embedded CLIP "
        f"(fp32), rounds of {s['round_size']} after {s['min_prompts']}. Every checkpoint scored on the whole library:",
        "",
    ]
    lines += table(
        ["checkpoints", "mean a", "mean b", "std", "std of differences", "rho", "delta"],
        [[f"{p['checkpoints'][0]} -> {p['checkpoints'][1]}", fmt(p["mean_a"], ".4f"), fmt(p["mean_b"], ".4f"),
          fmt(p["std_b"], ".4f"), fmt(p["std_delta"], ".4f"), fmt(p["correlation"], ".3f"), fmt(p["delta"], "+.4f")]
         for p in demo["pairs"]],
    )
    lines += ["", f"Measured rho of consecutive checkpoints after the first epoch: median "
              f"{fmt(demo['measured_rho_median_after_first_epoch'], '.3f')}.", "",
              "One adaptive PromptEvaluator(target_ci=w) run over every checkpoint (the first evaluation included); "
              "formulas at each pair's measured spread:", ""]
    lines += table(
        ["w", "images per evaluation", "after the first", "paired formula", "unpaired formula", "full library",
         "after first / paired", "all / unpaired", "all / full library", "deltas that reached w"],
        [[k, fmt(v["images_per_evaluation"], ".0f"), fmt(v["images_per_evaluation_after_first"], ".0f"),
          fmt(v["paired_formula_mean"], ".0f"), fmt(v["unpaired_formula_mean"], ".0f"), str(v["library"]),
          fmt(v["ratio_over_paired_after_first"], ".2f"), fmt(v["ratio_over_unpaired"], ".2f"),
          fmt(v["ratio_over_full_library"], ".2f"), f"{v['reached']} of {v['paired_evaluations']}"]
         for k, v in demo["widths"].items()],
    )
    lines += ["", f"Simulated steady runs: std {sim['std']} around 0.30, a change of +{sim['delta_per_evaluation']} "
              f"per evaluation, library of {sim['library']}, {sim['runs']} runs of {sim['evaluations_per_run']} "
              "evaluations per cell, pairs kept for the next evaluation: its predicted need n times "
              f"1 + {sim['keep_pairs_z']:g} sqrt(3 / n):", ""]
    rows = []
    for rho, cells in sim["correlations"].items():
        for w, v in cells.items():
            rows.append([rho, w, str(v["paired_formula"]), str(v["unpaired_formula"]), fmt(v["first"], ".0f"),
                         fmt(v["after_first"], ".0f"), fmt(v["ratio_after_first_over_paired"], ".2f"),
                         fmt(v["ratio_over_paired"], ".2f"), fmt(v["ratio_over_unpaired"], ".2f"),
                         fmt(v["ratio_over_full_library"], ".2f"), fmt(v["miss_rate"], ".3f"), fmt(v["coverage"], ".3f")])
    lines += table(["rho", "w", "paired formula", "unpaired formula", "first evaluation", "later evaluations",
                    "later / paired", "whole run / paired", "whole run / unpaired", "whole run / full library",
                    "delta_ci > w", "coverage"], rows)
    lines += ["", f"A change carried by a tenth of the prompts (+0.05 to +0.1; the rest move by sd 0.001; true change "
              f"{skew['true_delta']}), {skew['trials']} draws per cell. Coverage of delta_ci where the evaluation "
              "stops:", ""]
    lines += table(["w", "plain t: coverage", "plain t: images", "skew-corrected: coverage", "skew-corrected: images"],
                   [[w, fmt(c["plain t"]["coverage"], ".3f"), fmt(c["plain t"]["images_mean"], ".0f"),
                     fmt(c["skew-corrected"]["coverage"], ".3f"), fmt(c["skew-corrected"]["images_mean"], ".0f")]
                    for w, c in skew["stopped"].items()])
    lines += ["", "At a fixed count of pairs:", ""]
    lines += table(["pairs", "plain t", "skew-corrected"],
                   [[n, fmt(c["plain t"], ".3f"), fmt(c["skew-corrected"], ".3f")] for n, c in skew["fixed_count"].items()])
    lines += ["", "## Targets", ""]
    lines += targets_table(report["targets"], s["tiny"], context=("rho", "w"))
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
    parser.add_argument("--sim-runs", type=int, default=40, help="simulated runs per (rho, w)")
    parser.add_argument("--sim-evaluations", type=int, default=20, help="evaluations per simulated run")
    parser.add_argument("--skew-trials", type=int, default=2000)
    args = parser.parse_args(argv)
    resolve_device(parser, args)
    args.demo_widths, args.sim_widths = list(DEMO_WIDTHS), list(SIM_WIDTHS)
    args.correlations = [0.5, 0.7, 0.8, 0.9, 0.95]
    args.skew_widths = [0.005, 0.008, 0.012]
    if args.tiny:
        args.skew_widths = [0.008]
        args.epochs, args.steps_per_epoch, args.prompts, args.sim_library = 2, 3, 96, 200
        args.sim_runs, args.sim_evaluations, args.skew_trials = 2, 4, 20
        args.demo_widths, args.sim_widths, args.correlations = [0.01], [0.01], [0.8]
    torch.set_grad_enabled(False)
    env = environment(torch.device(args.device))
    started = time.perf_counter()
    results = {"demo": demo_run(args), "simulated": simulated(args), "skewed": skewed(args)}
    targets = []
    for w, v in results["demo"]["widths"].items():
        targets.append(target("images per evaluation / full library (demo run)", v["ratio_over_full_library"], "<=",
                              0.5, rho="measured", w=w))
    for rho, cells in results["simulated"]["correlations"].items():
        for w, v in cells.items():
            if rho == "0.9" and w == "0.003":
                targets.append(target("later evaluations / paired formula", v["ratio_after_first_over_paired"], "<=",
                                      1.4, rho=rho, w=w))
            targets.append(target("share of evaluations whose delta_ci misses w", v["miss_rate"], "<=", 0.05,
                                  rho=rho, w=w))
    for w, cells in results["skewed"]["stopped"].items():
        targets.append(target("delta_ci coverage, a change in a tenth of the prompts",
                              cells["skew-corrected"]["coverage"], ">=", 0.93, rho="skewed", w=w))
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
