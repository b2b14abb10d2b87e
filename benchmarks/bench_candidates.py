#!/usr/bin/env python
"""What the candidate optimisations of ClipScore's hot path would buy, measured on one batch.

Companion of ``bench_throughput.py``: on the ViT-B/32 architecture (random weights) and the same
images and prompts, it times each step of ``ClipEncoder.score`` as the package does it today
next to an alternative, and reports how far each alternative moves the scores:

* image tower: bf16 autocast over fp32 weights (every weight is cast to bf16 on every call) vs
  autocast over weights stored in bf16, and the package's own image path as it is now;
* text tower: fp32 vs bf16 autocast (the package's choice under a mixed precision);
* preprocessing: the package's as it is now vs a float32 resize and a uint8 resize (in the
  default and in the channels-last memory layout), each then cropped and normalised;
* tokenisation: the package's (one tokenizer call, ids cut to the context, ``tokenizer.pad``)
  vs two tokenizer calls (one for the lengths, one for the model inputs) vs one padded call;
* on CUDA: how many host-device synchronisations one ``ClipScore.update`` makes.

Score differences are of cosines against the package's fp32 path. Nothing here changes the package.

Examples::

    python benchmarks/bench_candidates.py --device cpu --json candidates.json
    python benchmarks/bench_candidates.py --tiny        # a few seconds: plumbing check only
"""

from __future__ import annotations

import argparse
import copy
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from harness.environment import environment, load_average, quiet_transformers
from harness.peers import pooled
from harness.report import common_arguments, fmt, resolve_device, table, write_report
from harness.timing import interleaved_medians
from harness.workload import SPECS, build_model_dir, fresh_prompts, make_images


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_arguments(parser, "tiny model, 1 round: a few seconds (checks the plumbing)")
    parser.add_argument("--model", choices=("b32", "l14-336", "tiny"), default="b32")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (median) after a warm-up round")
    args = parser.parse_args(argv)
    resolve_device(parser, args)
    if args.tiny:
        args.model, args.repeats = "tiny", 1
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    quiet_transformers()
    workdir = Path(tempfile.mkdtemp(prefix="clip-candidates-"))
    try:
        report = measure(args, device, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report["markdown"] = markdown(report)
    return write_report(report, args)


def measure(args: argparse.Namespace, device: torch.device, workdir: Path) -> dict[str, Any]:
    from transformers import AutoImageProcessor, AutoModel

    from clip_metric import ClipEncoder, ClipScore
    from clip_metric.utilities.precision import autocast_context

    spec = SPECS[args.model]
    env = environment(device)
    model_dir = build_model_dir(spec, workdir / spec.key)
    encoder = ClipEncoder.from_pretrained(str(model_dir), precision="auto", device=device)
    mixed = encoder.active_precision
    # A plain fp32 model for the reference and the alternatives: the encoder's own model may keep
    # some weights in half precision under a mixed precision.
    model = AutoModel.from_pretrained(model_dir).eval().requires_grad_(False).to(device)
    square = [im for im in make_images(2 * args.batch_size, (512, 512), (383, 517)) if im.shape[-1] == 512]
    images = torch.stack(square[: args.batch_size]).to(device)
    prompts = fresh_prompts(args.batch_size, "c")
    tokenizer = encoder.tokenizer
    tokens = {
        k: v.to(device)
        for k, v in tokenizer(prompts, padding=True, truncation=True, max_length=77, return_tensors="pt").items()
        if k in ("input_ids", "attention_mask")
    }
    pixels = encoder.preprocess(images)
    report: dict[str, Any] = {
        "environment": env, "model": spec.name, "batch_size": args.batch_size, "repeats": args.repeats, "tiny": args.tiny
    }

    def embed(fn: Callable[[], Any]) -> torch.Tensor:
        with torch.no_grad():
            return F.normalize(pooled(fn()).float(), dim=-1)

    def max_score_diff(
        image: torch.Tensor, text: torch.Tensor, image_ref: torch.Tensor, text_ref: torch.Tensor
    ) -> float:
        return float(((image * text).sum(-1) - (image_ref * text_ref).sum(-1)).abs().max())

    # ---- image tower
    vision_bf16 = copy.deepcopy(model).to(torch.bfloat16) if mixed != "32" else model
    amp = lambda: autocast_context(mixed, device)  # noqa: E731

    def image_fp32() -> Any:
        return model.get_image_features(pixel_values=pixels)

    def image_autocast_fp32_weights() -> Any:
        with amp():
            return model.get_image_features(pixel_values=pixels)

    def image_autocast_bf16_weights() -> Any:
        with amp():
            return vision_bf16.get_image_features(pixel_values=pixels.to(torch.bfloat16))

    def image_package() -> Any:
        return encoder._forward("get_image_features", pixel_values=pixels)

    with torch.no_grad():
        image_ms = interleaved_medians(
            {
                "fp32": image_fp32,
                f"{mixed}, autocast over fp32 weights": image_autocast_fp32_weights,
                f"{mixed}, autocast over bf16 weights": image_autocast_bf16_weights,
                f"package now ({mixed})": image_package,
            },
            args.repeats,
            device,
        )
        text_ms = interleaved_medians(
            {
                "fp32 (package)": lambda: model.get_text_features(**tokens),
                f"{mixed}": lambda: _with(amp(), lambda: model.get_text_features(**tokens)),
            },
            args.repeats,
            device,
        )
    image_ref, text_ref = embed(image_fp32), embed(lambda: model.get_text_features(**tokens))
    report["image_tower_ms_per_batch"] = image_ms
    report["image_tower_max_score_diff"] = {
        name: max_score_diff(image, text_ref, image_ref, text_ref)
        for name, image in (
            (f"{mixed}, autocast over fp32 weights", embed(image_autocast_fp32_weights)),
            (f"{mixed}, autocast over bf16 weights", embed(image_autocast_bf16_weights)),
            (f"package now ({mixed})", image_package()),
        )
    }
    text_mixed = embed(lambda: _with(amp(), lambda: model.get_text_features(**tokens)))
    report["text_tower_ms_per_batch"] = text_ms
    report["text_tower_max_score_diff"] = {f"{mixed}": max_score_diff(image_ref, text_mixed, image_ref, text_ref)}
    del vision_bf16

    # ---- preprocessing
    transform = encoder.transform

    def resize_crop_normalise(batch: torch.Tensor, channels_last: bool) -> torch.Tensor:
        height, width = batch.shape[-2:]
        size = transform.output_size(height, width)
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        resized = F.interpolate(batch, size=size, mode="bicubic", antialias=True)
        crop_h, crop_w = transform.crop
        top, left = (size[0] - crop_h) // 2, (size[1] - crop_w) // 2
        cropped = resized[..., top : top + crop_h, left : left + crop_w]
        cropped = cropped.float().div_(255.0) if cropped.dtype == torch.uint8 else cropped.clamp(0.0, 1.0)
        mean = torch.tensor(transform.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(transform.std, device=device).view(1, 3, 1, 1)
        return ((cropped - mean) / std).contiguous()

    variants = {
        "package now": lambda: encoder.preprocess(images),
        "float32 resize": lambda: resize_crop_normalise(images.float().div(255.0), channels_last=False),
        "uint8 resize": lambda: resize_crop_normalise(images, channels_last=False),
        "uint8 resize, channels-last": lambda: resize_crop_normalise(images, channels_last=True),
    }
    if device.type != "cpu":  # torch's antialiased uint8 resize is a CPU kernel
        del variants["uint8 resize"], variants["uint8 resize, channels-last"]
    report["preprocess_ms_per_batch"] = interleaved_medians(variants, args.repeats, device)
    from PIL import Image

    processor = AutoImageProcessor.from_pretrained(model_dir)
    pil = [Image.fromarray(img.permute(1, 2, 0).cpu().numpy()) for img in images]
    hf_pixels = processor(images=pil, return_tensors="pt")["pixel_values"].to(device)
    image_hf = embed(lambda: model.get_image_features(pixel_values=hf_pixels))
    report["preprocess_max_abs_pixel_diff_vs_hf_processor"] = {}
    report["preprocess_max_score_diff_vs_hf_processor"] = {}
    for name, fn in variants.items():
        candidate = fn()
        image = embed(lambda: model.get_image_features(pixel_values=candidate))
        report["preprocess_max_abs_pixel_diff_vs_hf_processor"][name] = float((candidate - hf_pixels).abs().max())
        report["preprocess_max_score_diff_vs_hf_processor"][name] = max_score_diff(image, text_ref, image_hf, text_ref)

    # ---- tokenisation
    def twice() -> Any:
        tokenizer(prompts, verbose=False)
        return tokenizer(prompts, padding=True, truncation=True, max_length=77, return_tensors="pt")

    report["tokenize_ms_per_batch"] = interleaved_medians(
        {
            "package now": lambda: encoder.text_inputs(encoder.token_ids(prompts)),
            "two calls": twice,
            "one call": lambda: tokenizer(prompts, padding=True, truncation=True, max_length=77, return_tensors="pt"),
        },
        args.repeats,
        device,
    )

    # ---- host-device synchronisations per update (CUDA)
    if device.type == "cuda":
        metric = ClipScore(encoder).to(device)
        metric.update(images, prompts)  # fills the text cache
        counts = {}
        new_prompts = fresh_prompts(args.batch_size, "s")
        for name, batch_prompts in (("cached prompts", prompts), ("new prompts", new_prompts)):
            torch.cuda.set_sync_debug_mode("warn")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                metric.update(images, batch_prompts)
            torch.cuda.set_sync_debug_mode("default")
            counts[name] = sum("synchroniz" in str(w.message) for w in caught)
        report["cuda_syncs_per_update"] = counts

    env["load_average_at_end"] = load_average()
    return report


def _with(context: Any, fn: Callable[[], Any]) -> Any:
    with context:
        return fn()


SECTIONS = (  # (title, milliseconds, {column: differences})
    ("image tower", "image_tower_ms_per_batch", {"max score diff vs fp32": "image_tower_max_score_diff"}),
    ("text tower", "text_tower_ms_per_batch", {"max score diff vs fp32": "text_tower_max_score_diff"}),
    ("preprocessing", "preprocess_ms_per_batch", {
        "max pixel diff vs HF processor": "preprocess_max_abs_pixel_diff_vs_hf_processor",
        "max score diff vs HF processor": "preprocess_max_score_diff_vs_hf_processor",
    }),
    ("tokenisation", "tokenize_ms_per_batch", {}),
)


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        f"# candidate optimisations: {report['model']}, one batch of {report['batch_size']} "
        f"({env['device']}: {env['device_name']})",
        "",
        f"Median of {report['repeats']} rounds, variants interleaved; clip_metric sources sha256 "
        f"{env['package_sources_sha256']}; command: `{env['command']}`.",
    ]
    if report["tiny"]:
        lines += ["", "**--tiny: 2-layer toy model; checks the plumbing, the figures mean nothing**"]
    for title, ms_key, diff_keys in SECTIONS:
        rows = [
            [name, fmt(ms, ".2f"), *(fmt(report[key].get(name), ".2e") for key in diff_keys.values())]
            for name, ms in report[ms_key].items()
        ]
        lines += ["", f"## {title}", ""] + table(["variant", "ms per batch", *diff_keys], rows)
    if "cuda_syncs_per_update" in report:
        lines += ["", "## host-device synchronisations per ClipScore.update", ""]
        lines += table(["prompts", "synchronisations"], [[k, str(v)] for k, v in report["cuda_syncs_per_update"].items()])
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
