"""The ``clip-metric`` command: ``demo``, ``score`` and ``compare``."""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

from clip_metric.encoder import DEFAULT_MODEL


def _stderr(message: str) -> None:
    sys.stderr.write(message + "\n")


def _names(paths: Sequence[Any], limit: int = 20) -> str:
    shown = ", ".join(str(p) for p in paths[:limit])
    return shown + (f", ... ({len(paths) - limit} more)" if len(paths) > limit else "")


# ----------------------------------------------------------------------------------- score
def _load_image(path: Path) -> Any:
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return image.copy()


def _score_worker(fabric: Any, images: list[Path], prompts: list[str], args: argparse.Namespace) -> dict | None:
    from tqdm.auto import tqdm

    from clip_metric.metric import ClipScore

    metric = ClipScore(args.model, precision=args.precision, keep_scores=True).to(fabric.device)
    indices = list(range(fabric.global_rank, len(images), fabric.world_size))
    if indices:
        metric.encoder.cache_prompts([prompts[i] for i in indices])
    unreadable: list[tuple[str, str]] = []
    bar = tqdm(total=len(indices), desc="scoring", unit="img", disable=fabric.global_rank != 0 or args.quiet,
               file=sys.stderr)
    for start in range(0, len(indices), args.batch_size):
        batch, ids = [], []
        for index in indices[start : start + args.batch_size]:
            try:
                batch.append(_load_image(images[index]))
                ids.append(index)
            except Exception as err:  # reported by name below, never silently dropped
                unreadable.append((str(images[index]), f"{type(err).__name__}: {err}"))
        if batch:
            metric.update(batch, [prompts[i] for i in ids], ids=ids)
        bar.update(len(indices[start : start + args.batch_size]))
    bar.close()
    summary = {k: float(v) for k, v in metric.compute().items()}
    ids, scores = metric.per_sample()
    all_unreadable = _gather_objects(fabric, unreadable)
    if fabric.global_rank != 0:
        return None
    return {"summary": summary, "ids": ids.tolist(), "scores": scores.tolist(), "unreadable": all_unreadable}


def _gather_objects(fabric: Any, items: list) -> list:
    import torch.distributed as dist

    if fabric.world_size == 1 or not dist.is_available() or not dist.is_initialized():
        return list(items)
    out: list[Any] = [None] * fabric.world_size
    dist.all_gather_object(out, items)
    return [item for part in out for item in part]


def _confidence_interval(scores: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    from statistics import NormalDist, stdev

    n = len(scores)
    mean = sum(scores) / n
    if n < 2:
        return (mean, mean)
    half = NormalDist().inv_cdf(0.5 + level / 2) * stdev(scores) / math.sqrt(n)
    return (mean - half, mean + half)


def cmd_score(args: argparse.Namespace) -> int:
    from clip_metric.image_folder import find_images, pair_images_with_captions

    images = find_images(args.images)
    pairs = pair_images_with_captions(images, args.prompts)
    if pairs.missing_captions:
        _stderr(f"skipped {len(pairs.missing_captions)} image(s) without a caption: {_names(pairs.missing_captions)}")
    if pairs.missing_images:
        _stderr(f"{len(pairs.missing_images)} caption(s) name no given image: {_names(pairs.missing_images)}")
    if not pairs.images:
        _stderr("error: no image has a caption (use --prompts FILE, x.txt beside x.png, or metadata.jsonl)")
        return 2
    args.model = _resolve_model(args.model)

    from lightning.fabric import Fabric

    strategy = "ddp_spawn" if args.devices > 1 else "auto"
    fabric = Fabric(accelerator=args.accelerator, devices=args.devices, strategy=strategy)
    result = fabric.launch(_score_worker, pairs.images, pairs.prompts, args)
    if result is None:  # pragma: no cover - only rank 0 returns
        return 0
    for name, reason in result["unreadable"]:
        _stderr(f"skipped unreadable image {name}: {reason}")
    if result["unreadable"]:
        _stderr(f"skipped {len(result['unreadable'])} unreadable image(s)")
    summary = result["summary"]
    scores = result["scores"]
    if not scores:
        _stderr("error: no image could be scored")
        return 2
    low, high = _confidence_interval(scores)
    print(f"model: {args.model}")
    for key in ("mean", "min", "max", "std"):
        print(f"clip/{key:<6} {summary[f'clip/{key}']:.4f}")
    print(f"clip/count  {int(summary['clip/count'])}")
    print(f"95% CI of the mean: [{low:.4f}, {high:.4f}]")
    if args.output:
        _write_scores(Path(args.output), result["ids"], scores, pairs)
        print(f"per-image scores: {args.output}")
    return 0


def _write_scores(path: Path, ids: list[int], scores: list[float], pairs: Any) -> None:
    rows = sorted(
        ({"file": str(pairs.images[i]), "prompt": pairs.prompts[i], "score": s} for i, s in zip(ids, scores)),
        key=lambda r: r["file"],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    else:
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["file", "prompt", "score"])
            writer.writeheader()
            writer.writerows(rows)


def _resolve_model(model: str | None) -> str:
    if model:
        return model
    from clip_metric.embedded import embedded_model_path

    _stderr(
        "note: no --model given; using the embedded demo CLIP, trained on drawn shapes only. For real images pass "
        f"--model {DEFAULT_MODEL} (or a local directory)."
    )
    return embedded_model_path()


# ----------------------------------------------------------------------------------- compare
def cmd_compare(args: argparse.Namespace) -> int:
    from clip_metric.compare import best_evaluation, load_run, paired_difference, plot_runs, read_tensorboard_history

    runs, logged = {}, {}
    for run_dir in args.runs:
        name = Path(run_dir).name or str(run_dir)
        if name in runs or name in logged:
            name = str(run_dir)
        try:
            runs[name] = load_run(run_dir)
        except FileNotFoundError:
            history = read_tensorboard_history(run_dir) if Path(run_dir).is_dir() else []
            if not history:
                raise
            logged[name] = history  # TensorBoard scalars only: no per-prompt scores to pair
    header = f"{'run':<24} {'eval':<5} {'step':>8} {'mean':>8} {'min':>8} {'max':>8} {'std':>8} {'count':>6}"
    print(header)
    print("-" * len(header))
    for name, evaluations in runs.items():
        for label, evaluation in (("last", evaluations[-1]), ("best", best_evaluation(evaluations))):
            _print_row(name, label, evaluation.step, evaluation.summary())
    for name, history in logged.items():
        best = max(history, key=lambda row: row["clip/mean"])
        for label, row in (("last", history[-1]), ("best", best)):
            _print_row(name, label, int(row["step"]), row)
    if logged:
        print(f"(from TensorBoard scalars, no per-prompt scores: {', '.join(logged)})")
    names = list(runs)
    if len(names) > 1:
        print()
        print("paired difference of clip/mean at the last evaluation (same prompts and seeds), "
              f"bootstrap {int(args.level * 100)}% interval:")
        base = names[0]
        for other in names[1:]:
            try:
                d = paired_difference(runs[base][-1], runs[other][-1], n_boot=args.bootstrap, level=args.level)
            except ValueError as err:
                print(f"  {other} - {base}: not comparable ({err})")
                continue
            verdict = "significant" if d.significant else "not significant (the interval includes 0)"
            print(f"  {other} - {base}: {d.difference:+.4f} [{d.low:+.4f}, {d.high:+.4f}] over {d.shared} prompts: "
                  f"{verdict}")
    if args.plot:
        print(f"plot: {plot_runs(runs, args.plot, level=args.level, logged=logged)}")
    return 0


def _print_row(name: str, label: str, step: int, s: dict) -> None:
    count = int(s.get("clip/count", 0))
    print(f"{name[:24]:<24} {label:<5} {step:>8} {s['clip/mean']:>8.4f} {s.get('clip/min', math.nan):>8.4f} "
          f"{s.get('clip/max', math.nan):>8.4f} {s.get('clip/std', math.nan):>8.4f} {count:>6}")


# ----------------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    from clip_metric.demo import run_demo

    history, log_dir = run_demo(
        output_dir=args.output_dir, max_epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
        num_prompts=args.prompts, progress=not args.quiet,
    )
    print(f"TensorBoard logs: {log_dir}  (tensorboard --logdir {log_dir})")
    print(f"{'step':>6} {'clip/mean':>10} {'clip/min':>10} {'clip/max':>10}")
    for row in history:
        print(f"{row['step']:>6} {row['clip/mean']:>10.4f} {row['clip/min']:>10.4f} {row['clip/max']:>10.4f}")
    return 0


# ----------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clip-metric", description="CLIP scores for text-to-image models")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train a tiny text-to-image model on the CPU and watch clip/mean rise")
    demo.add_argument("--output-dir", default="runs/demo", help="where TensorBoard logs go (default runs/demo)")
    demo.add_argument("--epochs", type=int, default=8, help="training epochs, one evaluation each (default 8)")
    demo.add_argument("--steps-per-epoch", type=int, default=40, help="optimizer steps per epoch (default 40)")
    demo.add_argument("--prompts", type=int, default=64, help="prompts per evaluation (default 64)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=cmd_demo)

    score = sub.add_parser("score", help="score images against their captions")
    score.add_argument("images", nargs="+", help="image files, folders or glob patterns (PNG, JPEG, WebP)")
    score.add_argument("--prompts", help="captions: .jsonl/.json/.csv/.tsv keyed by file_name, or .txt one per image")
    score.add_argument("--model", help=f"hub id or local directory (e.g. {DEFAULT_MODEL}); default: the embedded demo model")
    score.add_argument("--batch-size", type=int, default=32)
    score.add_argument("--precision", default="auto", help="auto, 32, bf16-mixed, 16-mixed, bf16-true, 16-true")
    score.add_argument("--output", help="write per-image scores (.csv or .jsonl)")
    score.add_argument("--devices", type=int, default=1, help="number of devices (processes) to score on")
    score.add_argument("--accelerator", default="auto", help="auto, cpu or cuda")
    score.add_argument("--quiet", action="store_true", help="no progress bar")
    score.set_defaults(func=cmd_score)

    compare = sub.add_parser("compare", help="compare runs' per-prompt scores with paired bootstrap intervals")
    compare.add_argument("runs", nargs="+", help="run directories (searched for clip_scores/step-*.jsonl)")
    compare.add_argument("--plot", help="write a PNG of clip/mean against step for every run")
    compare.add_argument("--bootstrap", type=int, default=5000, help="bootstrap resamples (default 5000)")
    compare.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    compare.set_defaults(func=cmd_compare)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "batch_size", 1) < 1:
        parser.error(f"--batch-size must be positive, got {args.batch_size}")
    if getattr(args, "devices", 1) < 1:
        parser.error(f"--devices must be positive, got {args.devices}")
    if hasattr(args, "level") and not 0 < args.level < 1:
        parser.error(f"--level must be in (0, 1), got {args.level}")
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, OSError, ImportError) as err:
        _stderr(f"error: {err}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
