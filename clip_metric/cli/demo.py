"""``clip-metric demo``: train a tiny text-to-image model on the CPU and watch ``clip/mean`` rise."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from clip_metric.cli._common import Formatter, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo", help="train a tiny text-to-image model on the CPU and watch clip/mean rise", formatter_class=Formatter
    )
    parser.add_argument("--output-dir", default="runs/demo", help="where TensorBoard logs and score files go")
    parser.add_argument("--epochs", type=positive_int, default=8, help="training epochs, one evaluation each")
    parser.add_argument("--steps-per-epoch", type=positive_int, default=40, help="optimizer steps per epoch")
    parser.add_argument("--prompts", type=positive_int, default=64, help="prompts per evaluation")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def _tensorboard_hint(log_dir: str) -> str:
    # The venv's own tensorboard works whether or not the venv is active.
    local = Path(sys.executable).with_name("tensorboard")
    command = str(local) if local.exists() else (shutil.which("tensorboard") or f"{sys.executable} -m tensorboard.main")
    return f"{command} --logdir {log_dir}"


def run(args: argparse.Namespace) -> int:
    from clip_metric.demos.text_to_image import run_demo

    history, log_dir = run_demo(
        output_dir=args.output_dir, max_epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
        num_prompts=args.prompts, progress=not args.quiet,
    )
    print(f"TensorBoard logs: {log_dir}  ({_tensorboard_hint(log_dir)})")
    print(f"{'step':>6} {'clip/mean':>10} {'clip/min':>10} {'clip/max':>10}")
    for row in history:
        print(f"{row['step']:>6} {row['clip/mean']:>10.4f} {row['clip/min']:>10.4f} {row['clip/max']:>10.4f}")
    return 0
