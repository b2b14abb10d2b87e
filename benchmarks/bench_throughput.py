#!/usr/bin/env python
"""Throughput, memory and accuracy of ``clip_metric.ClipScore`` against its peers, side by side.

One command measures, on the same images, prompts and batch size, in one process:

* ``ours-default``: this package's :class:`~clip_metric.ClipScore` at its default precision
  (``"auto"``: bf16 autocast for the image tower on CUDA and on CPUs with AMX/AVX512-BF16);
* ``ours-fp32``: the same at ``precision="32"``;
* ``torchmetrics``: torchmetrics' ``CLIPScore`` as users run it (uint8 images, one ``update``
  per batch). torchmetrics 1.9 cannot use a transformers 5 model directly (``get_*_features``
  return output objects, torchmetrics calls ``.norm()`` on them) and only accepts allow-listed
  hub names as strings, so the model is passed through its callable ``model_name_or_path``
  argument, wrapped in a thin adapter that returns the pooled embedding tensors;
* ``per-image``: torchmetrics' functional ``clip_score`` called once per image, loading the
  model and processor from disk on every call (what its string argument does), on fewer images;
* ``floor-fp32`` / ``floor-default`` / ``floor-autocast``: the bare image tower,
  ``model.get_image_features`` on already resized and normalised pixel tensors, without text, in
  fp32 and at the precision ``ours-default`` resolves to (with the weights stored in that
  precision, or autocast over fp32 weights).

Three scenarios: ``fresh`` (every prompt is new in every pass, each batch's prompts encoded
in its ``update``); ``upfront`` (the same new prompts, encoded by ``ClipEncoder.cache_prompts``
at the start of the pass, timed, then the image loop: what the Lightning callback and
``clip-metric score`` do; the peers have no such path and keep their fresh figures); and
``repeated`` (the same prompt library evaluated again: a fresh ``ClipScore`` per pass sharing
one ``ClipEncoder``, as the callback does; the timed passes are second passes, whose text
embeddings all come from the cache). All methods are measured in the same rounds, interleaved (on CPU batch by
batch, in lockstep; see ``--interleave``), so that load from elsewhere on a noisy machine hits
every method alike; each figure is the median over ``--repeats`` rounds, after an untimed
warm-up round.

The peers, timing, environment record and report writing are in ``harness/``; models are random
weights of the released architectures (:mod:`harness.workload`).

Examples::

    python benchmarks/bench_throughput.py --device cpu --json cpu.json
    python benchmarks/bench_throughput.py --device cuda --json gpu.json
    python benchmarks/bench_throughput.py --tiny            # a few seconds: plumbing check only
"""

from __future__ import annotations

import argparse
import gc
import math
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch
from harness.environment import environment, load_average, log, quiet_transformers
from harness.peers import (
    ADAPTER_NOTE,
    FLOOR_NOTE,
    PER_IMAGE_NOTE,
    Floor,
    Ours,
    OursUpfront,
    PerImage,
    TorchmetricsCLIPScore,
    half_matmul_weights,
)
from harness.report import common_arguments, fmt, resolve_device, table, target, targets_table, write_report
from harness.timing import MIB, Cell, ForeignLoad, Method, rounds, run_round, synchronize, timed
from harness.workload import SPECS, ModelSpec, build_model_dir, fresh_prompts, library_prompts, make_batches, make_images
from torch import Tensor


# --------------------------------------------------------------------------------------- one model
def benchmark_model(spec: ModelSpec, args: argparse.Namespace, device: torch.device, workdir: Path) -> dict[str, Any]:
    from transformers import AutoModel

    n_images = args.images[spec.key]
    n_per_image = min(args.per_image[spec.key], n_images)
    log(f"\n== {spec.name}: building a random-weight model dir ({spec.reference} architecture)")
    model_dir = build_model_dir(spec, workdir / spec.key, seed=args.seed)

    images = [image.to(device) for image in make_images(n_images, args.image_size, args.odd_size, seed=args.seed)]
    library = library_prompts(n_images)

    log(f"   loading methods from {model_dir}")
    ours_default = Ours("ours-default", model_dir, "auto", device)
    ours_fp32 = Ours("ours-fp32", model_dir, "32", device)
    # Their own encoders, so that the fresh scenario's cache cannot serve them.
    upfront_default = OursUpfront("ours-default", model_dir, "auto", device)
    upfront_fp32 = OursUpfront("ours-fp32", model_dir, "32", device)
    tm = TorchmetricsCLIPScore(model_dir, device)
    per_image = PerImage(model_dir, n_per_image)
    bare = AutoModel.from_pretrained(model_dir).eval().requires_grad_(False).to(device)
    pixels = [ours_fp32.encoder.preprocess(batch.images) for batch in make_batches(images, library, args.batch_size)]
    floor_fp32 = Floor("floor-fp32", bare, pixels, "32", device)
    floor_default = Floor("floor-default", half_matmul_weights(model_dir, ours_default.precision, device), pixels,
                          ours_default.precision, device)
    floor_default.label += ", matmul weights stored in half precision"
    floor_autocast = Floor("floor-autocast", bare, pixels, ours_default.precision, device)
    floor_autocast.label += ", autocast over fp32 weights"

    def cell(scenario: str, method: Method, count: int = n_images) -> Cell:
        return Cell(scenario, method, count)

    # Each cell has its own runner; the two scenarios share the loaded models (and our encoders).
    cells = [
        cell("fresh", ours_default),
        cell("fresh", ours_fp32),
        cell("fresh", tm),
        cell("fresh", per_image, n_per_image),
        cell("upfront", upfront_default),
        cell("upfront", upfront_fp32),
        cell("repeated", ours_default.sharing_encoder()),
        cell("repeated", ours_fp32.sharing_encoder()),
        cell("repeated", tm.sharing_model()),
        cell("any", floor_fp32),
        cell("any", floor_default),
        cell("any", floor_autocast),
    ]
    repeats = args.repeats_for(spec.key)
    foreign: list[float | None] = []
    for round_index, timed_round, order in rounds(cells, repeats):
        warmup = not timed_round
        log(f"   round {round_index}/{repeats}{' (warm-up)' if warmup else ''}")
        fresh = make_batches(images, fresh_prompts(n_images, f"r{round_index}"), args.batch_size)
        repeated = make_batches(images, library, args.batch_size)
        work = []
        for c in order:
            batches = repeated if c.scenario == "repeated" else fresh  # upfront scores the fresh prompts
            if warmup and c.scenario != "repeated":
                batches = batches[:1]  # the repeated scenario's first pass is whole: it fills the cache
            work.append((c, batches))
        per_image.count = 1 if warmup else n_per_image
        with ForeignLoad() as load:
            outcomes = run_round(work, device, args.interleave)
        if warmup:
            continue
        foreign.append(load.share)
        for (c, _), (elapsed, peak) in zip(work, outcomes):
            c.times.append(elapsed)
            c.peaks.append(peak)
            c.scores.append(c.method.scores() if c.method.has_scores else None)
            c.forwards.append(c.method.text_forwards())

    result: dict[str, Any] = {
        "name": spec.name,
        "reference_architecture": spec.reference,
        "parameters_millions": round(sum(p.numel() for p in bare.parameters()) / 1e6, 1),
        "images": n_images,
        "per_image_images": n_per_image,
        "repeats": repeats,
        "foreign_cpu_share_per_round": foreign,
        "default_precision": ours_default.precision,
        "torchmetrics_image_processor": tm.processor_class,
        "scenarios": {},
    }
    floors = {c.method.key: c for c in cells if c.scenario == "any"}
    fresh_cells = {c.method.key: c for c in cells if c.scenario == "fresh"}
    for scenario in ("fresh", "upfront", "repeated"):
        rows = {c.method.key: c for c in cells if c.scenario == scenario}
        # per-image has no cache: its work is the same with a repeated library (measured once); the
        # peers have no up-front path: with fresh prompts they do the fresh scenario's work.
        shared = {"repeated": ["per-image"], "upfront": ["torchmetrics", "per-image"]}.get(scenario, [])
        rows.update({key: fresh_cells[key] for key in shared})
        rows.update(floors)
        result["scenarios"][scenario] = summarize(rows, scenario)

    if args.breakdown_for(spec.key):
        log("   time breakdown")
        result["breakdown"] = {
            method.key: breakdown(method, images, args, device, tm.metric.processor)
            for method in (ours_default, ours_fp32)
        }
    if args.offload_check:
        if device.type == "cuda":
            result["offload"] = offload_check(ours_default, images, library, args.batch_size, device)
        else:
            result["offload"] = {"skipped": "needs a CUDA device"}
    return result


def summarize(rows: dict[str, Cell], scenario: str) -> dict[str, Any]:
    """Median time, throughput, peak memory, score differences and ratios of each method."""
    out: dict[str, Any] = {}
    for key, c in rows.items():
        seconds = statistics.median(c.times)
        peaks = [p for p in c.peaks if p is not None]
        out[key] = {
            "label": c.method.label,
            "precision": c.method.precision,
            "images": c.count,
            "seconds": seconds,
            "seconds_all": c.times,
            "seconds_min": min(c.times),
            "images_per_s": c.count / seconds,
            "ms_per_image": 1000.0 * seconds / c.count,
            "peak_mem_mib": max(peaks) if peaks else None,
            "text_forwards_per_pass": c.forwards if c.method.text_forwards() is not None else None,
            "shared_across_scenarios": c.scenario != scenario,
        }

    def max_diff(key: str, reference: str) -> float | None:
        if key not in rows or reference not in rows or not rows[key].method.has_scores:
            return None
        if rows[key].scenario != scenario:  # shown, not measured, in this scenario
            return None
        if {rows[key].scenario, rows[reference].scenario} - {scenario, "fresh" if scenario == "upfront" else scenario}:
            return None  # scored other prompts
        worst = 0.0
        for mine, ref in zip(rows[key].scores, rows[reference].scores):
            n = min(len(mine), len(ref))
            worst = max(worst, float((mine[:n] - ref[:n]).abs().max()))
        return worst

    for key, row in out.items():
        row["max_abs_diff_vs_ours_fp32"] = max_diff(key, "ours-fp32")
        row["max_abs_diff_vs_hf_fp32"] = max_diff(key, "torchmetrics")
        row["speedup_vs"] = {
            peer: row["images_per_s"] / out[peer]["images_per_s"]
            for peer in ("torchmetrics", "per-image")
            if peer in out
        }
        row["time_vs_floor"] = {
            floor: row["ms_per_image"] / out[floor]["ms_per_image"]
            for floor in ("floor-fp32", "floor-default")
            if floor in out
        }
    return out


def breakdown(method: Ours, images: list[Tensor], args: argparse.Namespace, device: torch.device, hf_processor: Any):
    """Where one ClipScore pass spends its time (fresh prompts), per batch of ``--batch-size``.

    For every batch, the components are timed one by one (the device synchronised after each) in
    the order ``ClipEncoder.score`` runs them, then the whole ``ClipScore.update`` is timed on the
    same images with other fresh prompts (``total``; plus ``compute()`` once per pass), so both
    see the same machine load. ``other`` is what the components do not account for; on a GPU it
    can be negative, since a whole update overlaps host work with device work and the
    synchronised components cannot.
    """
    from clip_metric import ClipScore
    from clip_metric.utilities.precision import weight_dtype

    encoder = method.encoder
    parts = ["preprocess", "tokenize", "text tower", "image tower"]
    runs: dict[str, list[float]] = {name: [] for name in parts + ["total", "hf_processor_images"]}

    for round_index in range(args.repeats + 1):
        batches = make_batches(images, fresh_prompts(len(images), f"b{round_index}"), args.batch_size)
        others = make_batches(images, fresh_prompts(len(images), f"t{round_index}"), args.batch_size)
        sums = dict.fromkeys(runs, 0.0)
        metric = ClipScore(encoder)
        for batch, other in zip(batches, others):
            pixels, t = timed(lambda: encoder.preprocess(batch.images), device)
            sums["preprocess"] += t
            # The package's own tokenisation: one tokenizer call, cut to the context, padded.
            tokens, t = timed(lambda: encoder.text_inputs(encoder.token_ids(batch.prompts)), device)
            sums["tokenize"] += t
            _, t = timed(lambda: encoder._forward("get_text_features", **tokens), device)
            sums["text tower"] += t
            dtype = weight_dtype(encoder.active_precision)
            _, t = timed(lambda: encoder._forward("get_image_features", pixel_values=pixels.to(dtype)), device)
            sums["image tower"] += t
            _, t = timed(lambda: metric.update(other.images, other.prompts), device)
            sums["total"] += t
            cpu_images = [image.cpu() for image in batch.images]
            _, t = timed(lambda: hf_processor(images=cpu_images, return_tensors="pt"), device)
            sums["hf_processor_images"] += t
        _, t = timed(metric.compute, device)
        sums["total"] += t
        if round_index > 0:  # round 0 warms up
            for name, value in sums.items():
                runs[name].append(value)

    n_batches = math.ceil(len(images) / args.batch_size)
    ms = {name: 1000.0 * statistics.median(values) / n_batches for name, values in runs.items()}
    ms["other (scoring, metric, glue)"] = ms["total"] - sum(ms[name] for name in parts)
    return {
        "precision": method.precision,
        "batch_size": args.batch_size,
        "batches": n_batches,
        "ms_per_batch": ms,
        "share_of_total": {name: ms[name] / ms["total"] for name in parts + ["other (scoring, metric, glue)"]},
    }


def offload_check(method: Ours, images: list[Tensor], prompts: list[str], batch_size: int, device: torch.device):
    """Does ``metric.to("cpu")`` + ``torch.cuda.empty_cache()`` give the encoder's GPU memory back?"""
    gc.collect()
    torch.cuda.empty_cache()
    batches = make_batches(images, prompts, batch_size)
    metric = method.metric
    metric.reset()
    metric.update(batches[0].images, batches[0].prompts)
    first = metric.per_sample()[1].clone()
    synchronize(device)
    weights = sum(p.numel() * p.element_size() for p in method.encoder.model.parameters())
    on_gpu = torch.cuda.memory_allocated(device)
    metric.to("cpu")
    torch.cuda.empty_cache()
    off = torch.cuda.memory_allocated(device)
    reserved_off = torch.cuda.memory_reserved(device)
    metric.to(device)
    metric.reset()
    metric.update(batches[0].images, batches[0].prompts)
    again = metric.per_sample()[1]
    returned = on_gpu - off
    return {
        "weights_mib": weights / MIB,
        "allocated_before_mib": on_gpu / MIB,
        "allocated_after_mib": off / MIB,
        "reserved_after_mib": reserved_off / MIB,
        "returned_mib": returned / MIB,
        "returned_fraction_of_weights": returned / weights,
        "max_score_change_after_round_trip": float((first.cpu() - again.cpu()).abs().max()),
        "passed": returned >= 0.99 * weights,
    }


# --------------------------------------------------------------------------------------- targets
def evaluate_targets(models: dict[str, Any], device: torch.device, tiny: bool) -> list[dict[str, Any]]:
    """Pass/fail of the performance targets for this device (informational in --tiny mode)."""

    def get(model: str, scenario: str, method: str) -> dict[str, Any] | None:
        return models.get(model, {}).get("scenarios", {}).get(scenario, {}).get(method)

    def row(name: str, model: str, scenario: str, value: float | None, op: str, threshold: float) -> dict[str, Any]:
        return target(name, value, op, threshold, model=model, scenario=scenario)

    rows = []
    if device.type == "cpu":
        model = "tiny" if tiny else "b32"
        fresh = get(model, "fresh", "ours-default")
        rep = get(model, "repeated", "ours-fp32")
        upfront = get(model, "upfront", "ours-default")
        for scenario, measured_row in (("fresh", fresh), ("upfront", upfront)):
            rows.append(row("default precision: x torchmetrics CLIPScore throughput", model, scenario,
                            measured_row and measured_row["speedup_vs"].get("torchmetrics"), ">=", 3.0))
        worst = None
        if fresh:
            diffs = [get(model, s, "ours-default")["max_abs_diff_vs_ours_fp32"] for s in ("fresh", "upfront", "repeated")]
            worst = max(d for d in diffs if d is not None)
        rows.append(row("default precision: max |score - fp32 score| (cosine)", model, "all", worst, "<=", 2e-3))
        rows.append(row("default precision: x per-image pattern throughput", model, "fresh",
                        fresh and fresh["speedup_vs"].get("per-image"), ">=", 20.0))
        rep_default = get(model, "repeated", "ours-default")
        rows.append(row("default precision: x per-image pattern throughput", model, "repeated",
                        rep_default and rep_default["speedup_vs"].get("per-image"), ">=", 20.0))
        rows.append(row("fp32: time / fp32 floor time", model, "repeated",
                        rep and rep["time_vs_floor"].get("floor-fp32"), "<=", 1.10))
    else:
        model = "tiny" if tiny else "l14-336"
        for scenario in ("fresh", "upfront", "repeated"):
            measured_row = get(model, scenario, "ours-default")
            rows.append(row("default precision: x torchmetrics CLIPScore throughput", model, scenario,
                            measured_row and measured_row["speedup_vs"].get("torchmetrics"), ">=", 10.0))
            rows.append(row("default precision: time / floor time at the same precision", model, scenario,
                            measured_row and measured_row["time_vs_floor"].get("floor-default"), "<=", 1.2))
    return rows


# --------------------------------------------------------------------------------------- report
ORDER = ["ours-default", "ours-fp32", "torchmetrics", "per-image", "floor-fp32", "floor-default", "floor-autocast"]
TITLES = {
    "fresh": "fresh prompts (every prompt new: text tower runs for every batch)",
    "upfront": "fresh prompts encoded up front (ours: `cache_prompts` on the pass's prompts, timed, "
    "then the image loop, as the callback and `clip-metric score` do)",
    "repeated": "same prompt library again (second pass: ours reads text embeddings from its cache)",
}
COLUMNS = [
    "method", "precision", "images/s", "ms/image", "x torchmetrics", "x per-image", "time / floor fp32",
    "time / floor default", "peak mem (MiB)", "max abs diff vs ours fp32", "max abs diff vs HF fp32",
    "text forwards per pass",
]


def _shares(model: dict[str, Any]) -> str:
    shares = model.get("foreign_cpu_share_per_round") or []
    return ", ".join("n/a" if v is None else f"{100 * v:.0f}%" for v in shares) or "n/a"


def _method_row(key: str, r: dict[str, Any]) -> list[str]:
    forwards = r["text_forwards_per_pass"]
    return [
        f"{key}{' (shared)' if r['shared_across_scenarios'] else ''}", r["precision"],
        fmt(r["images_per_s"], ".1f"), fmt(r["ms_per_image"], ".1f"),
        fmt(r["speedup_vs"].get("torchmetrics"), ".2f", "x"), fmt(r["speedup_vs"].get("per-image"), ".1f", "x"),
        fmt(r["time_vs_floor"].get("floor-fp32"), ".3f"), fmt(r["time_vs_floor"].get("floor-default"), ".3f"),
        fmt(r["peak_mem_mib"], ".0f"), fmt(r["max_abs_diff_vs_ours_fp32"], ".2e"),
        fmt(r["max_abs_diff_vs_hf_fp32"], ".2e"), "-" if forwards is None else str(max(forwards)),
    ]


def _breakdown_table(breakdowns: dict[str, Any]) -> list[str]:
    names = list(next(iter(breakdowns.values()))["share_of_total"]) + ["total"]
    rows = []
    for name in names:
        cells = []
        for b in breakdowns.values():
            share = b["share_of_total"].get(name)
            percent = f" ({100 * share:.0f}%)" if share is not None else ""
            cells.append(f"{b['ms_per_batch'][name]:.1f}{percent}")
        rows.append([name, *cells])
    rows.append(["for comparison: HF CLIPProcessor on the same images (torchmetrics' preprocessing)",
                 *(f"{b['ms_per_batch']['hf_processor_images']:.1f}" for b in breakdowns.values())])
    return table(["component", *(f"{k} ({b['precision']})" for k, b in breakdowns.items())], rows)


def markdown(report: dict[str, Any]) -> str:
    env, settings = report["environment"], report["settings"]
    lines = [
        f"# clip_metric throughput ({env['device']}: {env['device_name']})",
        "",
        f"- torch {env['torch']}, transformers {env['transformers']}, torchmetrics {env['torchmetrics']}, "
        f"Python {env['python']}",
        f"- CPU: {env['cpu_model']} ({env['cpu_count']} logical CPUs, torch threads {env['torch_threads']}, "
        f"AMX {env['cpu_amx']}, AVX512-BF16 {env['cpu_avx512_bf16']})",
        f"- command: `{env['command']}`; clip_metric sources sha256 {env.get('package_sources_sha256')}",
        f"- load average (1/5/15 min) at start {env['load_average_at_start']}, at end {env.get('load_average_at_end')}",
        f"- batch size {settings['batch_size']}, the median of several rounds after a warm-up round, "
        f"methods interleaved by {settings['interleave']}; images {settings['image_size']} uint8 plus some "
        f"{settings['odd_size']}",
    ]
    if settings["tiny"]:
        lines.append("- **--tiny: 2-layer toy model; checks the plumbing, the figures mean nothing**")
    lines += ["", "Notes:", ""] + [f"- {note}" for note in report["notes"]]
    for model in report["models"].values():
        lines += [
            "",
            f"## {model['name']} ({model['parameters_millions']}M parameters, architecture of "
            f"{model['reference_architecture']}, random weights)",
            "",
            f"{model['images']} images ({model['per_image_images']} for per-image), median of {model['repeats']} "
            f"rounds; share of the CPUs used by other processes per round: {_shares(model)}; default precision "
            f"resolves to `{model['default_precision']}`; torchmetrics' image processor: "
            f"`{model['torchmetrics_image_processor']}`.",
        ]
        for scenario, rows in model["scenarios"].items():
            lines += ["", f"### {TITLES[scenario]}", ""]
            lines += table(COLUMNS, (_method_row(key, rows[key]) for key in ORDER if key in rows), "ll" + "r" * 10)
        if "breakdown" in model:
            lines += ["", "### where ours spends its time (fresh prompts, ms per batch)", ""]
            lines += _breakdown_table(model["breakdown"])
        if "offload" in model:
            off = model["offload"]
            lines += ["", "### offload (`metric.to('cpu')` + `torch.cuda.empty_cache()`)", ""]
            if "skipped" in off:
                lines.append(f"skipped: {off['skipped']}")
            else:
                lines.append(
                    f"allocated {off['allocated_before_mib']:.0f} MiB -> {off['allocated_after_mib']:.0f} MiB: "
                    f"returned {off['returned_mib']:.0f} MiB = {100 * off['returned_fraction_of_weights']:.1f}% of "
                    f"the {off['weights_mib']:.0f} MiB of weights; largest score change after moving back: "
                    f"{off['max_score_change_after_round_trip']:.1e}; {'PASS' if off['passed'] else 'FAIL'}"
                )
    lines += ["", "## targets", ""] + targets_table(report["targets"], settings["tiny"], ("model", "scenario"))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------- CLI
def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW like 383x517 but got {text!r}") from None
    return height, width


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Throughput ratios taken in the same run are what count; absolute figures vary from run to run.",
    )
    common_arguments(parser, "2-layer toy model, 4 images, 1 repeat: a few seconds on CPU (checks the plumbing)")
    parser.add_argument("--models", default="b32,l14-336", help="comma-separated from: b32, l14-336 (default: both)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (median reported) after one warm-up round")
    parser.add_argument("--repeats-l14", type=int, default=None,
                        help="timed rounds for ViT-L/14-336 (default: 3 on CPU, --repeats on CUDA)")
    parser.add_argument("--images-b32", type=int, default=None,
                        help="images for ViT-B/32 (default: 32 on CPU, 256 on CUDA)")
    parser.add_argument("--images-l14", type=int, default=None,
                        help="images for ViT-L/14-336 (default: 8 on CPU, 128 on CUDA)")
    parser.add_argument("--per-image-b32", type=int, default=None,
                        help="images for the per-image pattern, ViT-B/32 (default: 6 on CPU, 16 on CUDA)")
    parser.add_argument("--per-image-l14", type=int, default=None,
                        help="images for the per-image pattern, ViT-L/14-336 (default: 2 on CPU, 8 on CUDA)")
    parser.add_argument("--image-size", type=_size, default=(512, 512),
                        help="size of most images, HxW (default 512x512)")
    parser.add_argument("--odd-size", type=_size, default=(383, 517),
                        help="size of every 16th image, HxW (default 383x517)")
    parser.add_argument("--breakdown", choices=("auto", "all", "none"), default="auto",
                        help="time breakdown of ours: auto = every model on CUDA, ViT-B/32 only on CPU")
    parser.add_argument("--interleave", choices=("auto", "batch", "pass"), default="auto",
                        help="how timed passes are interleaved: batch = all methods in lockstep, batch by batch "
                        "(robust to load from elsewhere on a shared machine); pass = whole passes in turn, no "
                        "synchronisation between batches; auto = batch on CPU, pass on CUDA")
    parser.add_argument("--offload", action="store_true", help="offload check (always on with CUDA)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where to save the models (default: a temp dir, removed)")
    args = parser.parse_args(argv)

    resolve_device(parser, args)
    cuda = args.device == "cuda"
    if args.tiny:
        args.model_keys = ["tiny"]
        args.repeats = 1
        args.images = {"tiny": 4}
        args.per_image = {"tiny": 2}
    else:
        args.model_keys = [k.strip() for k in args.models.split(",") if k.strip()]
        unknown = [k for k in args.model_keys if k not in ("b32", "l14-336")]
        if unknown or not args.model_keys:
            parser.error(f"--models: unknown {unknown}; choose from b32, l14-336")
        pick = lambda value, cpu, gpu: value if value is not None else (gpu if cuda else cpu)  # noqa: E731
        args.images = {"b32": pick(args.images_b32, 32, 256), "l14-336": pick(args.images_l14, 8, 128)}
        args.per_image = {"b32": pick(args.per_image_b32, 6, 16), "l14-336": pick(args.per_image_l14, 2, 8)}
    repeats_l14 = args.repeats_l14 if args.repeats_l14 is not None else (args.repeats if cuda else min(args.repeats, 3))
    args.repeats_for = lambda key: repeats_l14 if key == "l14-336" else args.repeats
    if min(args.repeats, repeats_l14) < 1 or args.batch_size < 1 or min(args.images.values()) < 1:
        parser.error("--repeats, --batch-size and image counts must be positive")
    if args.interleave == "auto":
        args.interleave = "pass" if cuda else "batch"
    args.offload_check = args.offload or cuda
    args.breakdown_for = lambda key: args.breakdown == "all" or (
        args.breakdown == "auto" and (cuda or key in ("b32", "tiny"))
    )
    return args


NOTES = [
    ADAPTER_NOTE,
    PER_IMAGE_NOTE,
    FLOOR_NOTE,
    "Random weights with the real architectures: the same FLOPs as the released checkpoints; the "
    "score differences are those of random embeddings, not of a trained model.",
    "Rows marked (shared) are measured once per round and shown in several scenarios: the floors take no "
    "text, and per-image has no cache, so their work does not depend on the scenario; torchmetrics has "
    "no way to encode prompts up front, so its fresh-prompt row is shown in the up-front scenario.",
    "Up-front scenario: the same new prompts as the fresh scenario, scored by ours through separate "
    "encoders whose caches hold no earlier prompts; ClipEncoder.cache_prompts (one tokenizer call, "
    "prompts grouped by token length, text-tower batches of 128 on CPU and 256 on CUDA) is timed as "
    "part of the pass. With batch interleaving it runs before the lockstep loop, each method's "
    "up-front encoding in turn, so it is not shielded from load bursts as the batches are.",
    "Score differences are of cosines (torchmetrics' scale is 100x). 'HF fp32' is the torchmetrics "
    "path: Hugging Face CLIPProcessor + fp32 model. 'x peer' is images/s over the peer's images/s; "
    "'time / floor' is time per image over the floor's time per image.",
]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    quiet_transformers()

    report: dict[str, Any] = {
        "environment": environment(device),
        "settings": {
            "batch_size": args.batch_size,
            "repeats": args.repeats,
            "image_size": "x".join(map(str, args.image_size)),
            "odd_size": "x".join(map(str, args.odd_size)),
            "odd_every": "every 16th image, starting with the 4th",
            "images": {k: args.images[k] for k in args.model_keys},
            "per_image_images": {k: args.per_image[k] for k in args.model_keys},
            "tiny": args.tiny,
            "interleave": args.interleave,
        },
        "notes": NOTES,
        "models": {},
    }
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="clip-bench-"))
    try:
        for key in args.model_keys:
            report["models"][key] = benchmark_model(SPECS[key], args, device, workdir)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    report["environment"]["load_average_at_end"] = load_average()
    report["targets"] = evaluate_targets(report["models"], device, args.tiny)
    report["markdown"] = markdown(report)
    return write_report(report, args)


if __name__ == "__main__":
    main()
