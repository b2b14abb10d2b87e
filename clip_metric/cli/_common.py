"""What the sub-commands share: argument types, messages on stderr, the default model note."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from clip_metric.cli._names import printable, shown
from clip_metric.utilities.constants import DEFAULT_MODEL


class CliError(Exception):
    """A failure the user can fix; printed as ``error: ...`` with exit code 2."""


class Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help that shows defaults, where there is one to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or "default:" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def stderr(message: str) -> None:
    sys.stderr.write(printable(message) + "\n")  # a file name's escape sequences never reach the terminal


def names(paths: Sequence[Any], limit: int = 20) -> str:
    listed = ", ".join(shown(p) for p in paths[:limit])
    return listed + (f", ... ({len(paths) - limit} more)" if len(paths) > limit else "")


def _int_at_least(text: str, minimum: int, kind: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a {kind} integer but got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1 (the sub-command's usage is shown otherwise)."""
    return _int_at_least(text, 1, "positive")


def non_negative_int(text: str) -> int:
    """An argparse type: an integer of at least 0."""
    return _int_at_least(text, 0, "non-negative")


def resolve_model(model: str | None) -> str:
    """The model to load: the one named, or the embedded demo model with a note saying so."""
    if model:
        return model
    from clip_metric.demos import embedded_model_path

    stderr(
        "note: no --model given; using the embedded demo CLIP, trained on drawn shapes only. For real images pass "
        f"--model {DEFAULT_MODEL} (or a local directory)."
    )
    return embedded_model_path()


def launch(worker: Any, args: Any) -> Any:
    """Run ``worker(fabric, args)`` on ``args.devices`` processes of ``args.accelerator``; rank 0's result.

    Each worker process leaves its process group before it exits: a gloo group torn down by the
    interpreter's exit instead can abort the process ("terminate called without an active
    exception") after the work is done.
    """
    from lightning.fabric import Fabric

    strategy = "ddp_spawn" if args.devices > 1 else "auto"
    fabric = Fabric(accelerator=args.accelerator, devices=args.devices, strategy=strategy)
    return fabric.launch(_run_then_leave_group, worker, args)


def _run_then_leave_group(fabric: Any, worker: Any, args: Any) -> Any:
    import torch.distributed as dist

    try:
        return worker(fabric, args)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
