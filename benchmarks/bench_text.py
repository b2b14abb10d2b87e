#!/usr/bin/env python
"""What encoding a whole prompt library costs, per prompt, by each way of batching the text tower.

An evaluation over thousands of new prompts (Parti Prompts has about 1,600, the source document
runs about 5,000) pays the text tower once per prompt. This benchmark encodes the same library,
from an empty cache each time, in five ways, side by side in one run:

* ``torchmetrics-text``: the text half of torchmetrics' ``CLIPScore.update``: the tokenizer with
  ``padding=True, truncation=True`` and the fp32 text tower, one batch per image batch
  (``--batch-size``, 8 by default);
* ``update-batches``: this package's ``ClipEncoder.encode_texts`` on the same image-batch-sized
  chunks (what ``ClipScore.update`` does with new prompts in a custom loop);
* ``cache-256-unsorted``: ``encode_texts`` on chunks of 256 in library order (what
  ``ClipEncoder.cache_prompts`` did before it grouped prompts by length);
* ``cache-unsorted``: ``encode_texts`` on chunks of ``cache_prompts``' default batch size for the
  device, in library order: the same batches as ``cache-prompts`` without the grouping;
* ``cache-prompts``: ``ClipEncoder.cache_prompts`` as it is (one tokenizer call, prompts grouped
  by token length, its default batch size for the device).

``torchmetrics-text`` runs in fp32; ours at the package's default precision (``"auto"``), so the
ratios to it include the precision as well as the batching. Accuracy is reported as the largest
change of the CLIP score (cosine) from ``torchmetrics-text``'s fp32 embeddings, over every pair
of a library prompt and one of 16 images (the benchmark's images, through the fp32 image tower).

The library mixes short and long prompts, like Parti Prompts: prompt ``i`` joins 1 to 4 prompts
of the package's built-in library, so token lengths run from about 10 to over 60 tokens.

Examples::

    python benchmarks/bench_text.py --device cpu --json text.json
    python benchmarks/bench_text.py --tiny        # a few seconds: plumbing check only
"""

from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from harness.environment import environment, load_average, quiet_transformers
from harness.peers import pooled, torchmetrics_text
from harness.report import common_arguments, resolve_device, table, write_report
from harness.timing import rounds, timed
from harness.workload import SPECS, build_model_dir, chunks, library_prompts, make_images

METHODS = ("torchmetrics-text", "update-batches", "cache-256-unsorted", "cache-unsorted", "cache-prompts")


def mixed_length_library(n: int, tag: str) -> list[str]:
    """``n`` distinct prompts joining 1 to 4 built-in prompts each (cycling), tagged per round."""
    base = library_prompts(4 * n + 4)
    prompts = []
    for i in range(n):
        parts = 1 + (i * 7) % 4  # 1, 4, 3, 2, 1, ...: lengths spread over the whole library
        prompts.append("; ".join(base[4 * i : 4 * i + parts]) + f", take {tag}-{i}")
    return prompts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # 160 prompts: more than one cache_prompts batch on CPU.
    common_arguments(parser, "tiny model, 160 prompts, 1 round: a few seconds (checks the plumbing)")
    parser.add_argument("--model", choices=("b32", "l14-336", "tiny"), default="b32")
    parser.add_argument("--prompts", type=int, default=None, help="library size (default: 1024 on CPU, 4096 on CUDA)")
    parser.add_argument("--batch-size", type=int, default=8, help="image batch size of the per-update methods")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (median) after a warm-up round")
    args = parser.parse_args(argv)
    resolve_device(parser, args)
    if args.tiny:
        args.model, args.prompts, args.repeats = "tiny", 160, 1
    args.prompts = args.prompts or (4096 if args.device == "cuda" else 1024)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    quiet_transformers()
    workdir = Path(tempfile.mkdtemp(prefix="clip-text-bench-"))
    try:
        report = measure(args, device, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report["markdown"] = markdown(report)
    return write_report(report, args)


def measure(args: argparse.Namespace, device: torch.device, workdir: Path) -> dict[str, Any]:
    from transformers import AutoTokenizer, CLIPModel

    from clip_metric import ClipEncoder

    spec, n_prompts = SPECS[args.model], args.prompts
    env = environment(device)
    model_dir = build_model_dir(spec, workdir / spec.key)
    encoder = ClipEncoder.from_pretrained(str(model_dir), precision="auto", device=device)
    reference = CLIPModel.from_pretrained(model_dir).eval().requires_grad_(False).to(device)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    pixels = encoder.preprocess(make_images(16, (512, 512), (383, 517))).float()
    with torch.no_grad():
        image_embeds = F.normalize(pooled(reference.get_image_features(pixel_values=pixels)).float(), dim=-1)

    def ours(chunk_size: int | None) -> Callable[[list[str]], torch.Tensor]:
        def run(prompts: list[str]) -> torch.Tensor:
            encoder.clear_text_cache()
            if chunk_size is None:
                encoder.cache_prompts(prompts)
            else:
                for chunk in chunks(prompts, chunk_size):
                    encoder.encode_texts(chunk)
            return encoder.encode_texts(prompts)  # read back from the cache, in library order

        return run

    default_batch = 128 if device.type == "cpu" else 256  # cache_prompts' default
    runners = {
        "torchmetrics-text": lambda prompts: torchmetrics_text(tokenizer, reference, prompts, args.batch_size, device),
        "update-batches": ours(args.batch_size),
        "cache-256-unsorted": ours(256),
        "cache-unsorted": ours(default_batch),
        "cache-prompts": ours(None),
    }
    lengths = [len(ids) for ids in tokenizer(mixed_length_library(n_prompts, "x"))["input_ids"]]
    times: dict[str, list[float]] = {name: [] for name in METHODS}
    forwards: dict[str, int] = {}
    worst: dict[str, float] = {name: 0.0 for name in METHODS}
    for round_index, timed_round, order in rounds(METHODS, args.repeats):
        prompts = mixed_length_library(n_prompts, f"r{round_index}")
        outputs = {}
        for name in order:
            before = encoder.text_forward_count
            outputs[name], elapsed = timed(lambda: runners[name](prompts), device)
            forwards[name] = encoder.text_forward_count - before
            if timed_round:
                times[name].append(elapsed)
        reference_scores = outputs["torchmetrics-text"] @ image_embeds.T
        for name in METHODS:
            diff = float((outputs[name] @ image_embeds.T - reference_scores).abs().max())
            worst[name] = max(worst[name], diff)
        gc.collect()
    median = {name: statistics.median(values) for name, values in times.items()}
    env["load_average_at_end"] = load_average()
    return {
        "environment": env,
        "model": spec.name,
        "prompts": n_prompts,
        "token_lengths": {"min": min(lengths), "median": statistics.median(lengths), "max": max(lengths)},
        "batch_size": args.batch_size,
        "cache_prompts_batch_size": default_batch,
        "precision": encoder.active_precision,
        "repeats": args.repeats,
        "tiny": args.tiny,
        "methods": {
            name: {
                "ms_per_prompt": 1000.0 * median[name] / n_prompts,
                "seconds_all": times[name],
                "x_torchmetrics_text": median["torchmetrics-text"] / median[name],
                "text_forwards": forwards[name] if name != "torchmetrics-text" else None,
                "max_score_diff_vs_fp32": worst[name],
            }
            for name in METHODS
        },
    }


def markdown(report: dict[str, Any]) -> str:
    lengths = report["token_lengths"]
    lines = [
        f"{report['model']}, {report['prompts']} prompts (tokens min/median/max {lengths['min']}/"
        f"{lengths['median']}/{lengths['max']}), {report['environment']['device_name']}, "
        f"ours at {report['precision']}, median of {report['repeats']} rounds",
        "",
    ]
    if report["tiny"]:
        lines += ["**--tiny: 2-layer toy model; checks the plumbing, the figures mean nothing**", ""]
    rows = [
        [name, f"{row['ms_per_prompt']:.2f}", f"{row['x_torchmetrics_text']:.2f}x",
         "-" if row["text_forwards"] is None else str(row["text_forwards"]), f"{row['max_score_diff_vs_fp32']:.2e}"]
        for name, row in report["methods"].items()
    ]
    lines += table(["method", "ms/prompt", "x torchmetrics-text", "text forwards", "max score diff vs fp32"], rows)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
