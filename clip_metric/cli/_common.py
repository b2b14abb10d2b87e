"""What the sub-commands share: argument types, messages on stderr, the default model note."""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
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

    On several processes, a rank that fails is reported as it would be on one: its own error is
    raised here (a :class:`CliError` stays one, and the command prints ``error: ...``), not the
    spawn machinery's wrapper, nor the error of a rank that only stopped because another failed.
    A process that dies without an error is named with its exit code.

    Each worker process leaves its process group before it exits: a gloo group torn down by the
    interpreter's exit instead can abort the process ("terminate called without an active
    exception") after the work is done.
    """
    from lightning.fabric import Fabric

    quiet = bool(getattr(args, "quiet", False))
    if args.devices == 1:
        with _launch_logs(quiet):
            fabric = Fabric(accelerator=args.accelerator, devices=1, strategy="auto")
            return fabric.launch(_Worker(worker, None, quiet), args)
    import tempfile

    fabric = Fabric(accelerator=args.accelerator, devices=args.devices, strategy="ddp_spawn")
    with tempfile.TemporaryDirectory(prefix="clip-metric-ranks-") as failures, _launch_logs(quiet, parent=True):
        try:
            return fabric.launch(_Worker(worker, failures, quiet), args)
        except Exception as err:  # the spawn wrapper: replaced by the failing rank's own error
            cause = _rank_failure(Path(failures), err)
            if cause is None:
                raise
            raise cause from None


# Lightning's loggers that announce the process group ("Initializing distributed: ...").
_LAUNCH_LOGGERS = ("lightning.fabric", "lightning_fabric", "lightning.pytorch", "pytorch_lightning",
                   "torch.distributed", "torch.multiprocessing")
# The errors a rank raises when its own work succeeded but another rank's failed: the joint
# failure of clip_metric.distributed, or a collective whose peer process is gone (gloo's words).
_OTHER_RANK = re.compile(r"\bother rank|failed on rank \d+|closed by peer|reset by peer|remote worker")
# How long a rank that failed only because another did waits for that rank's error to be recorded.
_OTHER_RANK_WAIT_S = 10.0


def _quiet_launch_logs() -> None:
    """Keep the launch's info lines (the process-group banner, rank-zero notes) off stderr."""
    for name in _LAUNCH_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


@contextlib.contextmanager
def _launch_logs(quiet: bool, parent: bool = False) -> Iterator[None]:
    """Quiet launch loggers in this process while the launch runs (their levels restored after).

    In the parent of spawned processes, torch's notice that it stops the other processes once one
    has failed is left out too: the failure itself is reported.
    """
    names = _LAUNCH_LOGGERS if quiet else ()
    loggers = [logging.getLogger(name) for name in (*names, *(("torch.multiprocessing.spawn",) if parent else ()))]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR if logger.name == "torch.multiprocessing.spawn" else logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


class _Worker:
    """``worker(fabric, args)`` in each process; a failure is recorded for the parent, then raised.

    With ``quiet``, the launch's loggers are set to warnings when this object is unpickled in a
    spawned process: that happens before Fabric connects the processes and logs it.
    """

    def __init__(self, worker: Any, failures: str | None, quiet: bool) -> None:
        self.worker, self.failures, self.quiet = worker, failures, quiet

    def __getstate__(self) -> dict:
        return dict(self.__dict__)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.quiet:
            _quiet_launch_logs()

    def __call__(self, fabric: Any, args: Any) -> Any:
        import torch.distributed as dist

        try:
            return self.worker(fabric, args)
        except Exception as err:
            if self.failures is not None:
                self._record(fabric.global_rank, fabric.world_size, err)
            raise
        finally:
            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()

    def _record(self, rank: int, world_size: int, err: Exception) -> None:
        import pickle
        import traceback

        try:
            payload = pickle.dumps(err)
            pickle.loads(payload)
        except Exception:  # an exception that does not survive pickling: its type and message
            payload = pickle.dumps(RuntimeError(f"{type(err).__name__}: {err}"))
        record = {"rank": rank, "error": payload, "traceback": traceback.format_exc(),
                  "other_rank": bool(_OTHER_RANK.search(str(err)))}
        folder = Path(self.failures)
        temporary = folder / f".rank-{rank}.tmp"
        temporary.write_bytes(pickle.dumps(record))
        temporary.replace(folder / f"rank-{rank}.pkl")  # whole, or not at all
        if record["other_rank"]:
            # The parent stops every process once one has exited: give the failing rank the time
            # to record its own error first.
            deadline = time.monotonic() + _OTHER_RANK_WAIT_S
            while time.monotonic() < deadline and not any(
                path.name != f"rank-{rank}.pkl" for path in folder.glob("rank-*.pkl")
            ):
                time.sleep(0.05)


def _rank_failure(folder: Path, err: Exception) -> Exception | None:
    """The error to raise for a failed launch: the first rank's own error, else the process that died."""
    import pickle

    records = []
    for path in sorted(folder.glob("rank-*.pkl")):
        try:
            records.append(pickle.loads(path.read_bytes()))
        except Exception:  # a record cut short by the process's end: the others still count
            continue
    exited = getattr(err, "exit_code", None)
    index = getattr(err, "error_index", None)
    # A rank's own error first; among those, the process that ended first.
    records.sort(key=lambda r: (r["other_rank"], r["rank"] != index, r["rank"]))
    if exited is not None and index is not None and not any(r["rank"] == index for r in records):
        how = f"signal {err.signal_name}" if getattr(err, "signal_name", None) else f"exit code {exited}"
        return CliError(f"the process of rank {index} ended with {how} without raising an error (killed, out of "
                        "memory, or exited)")
    if not records:
        return None
    record = records[0]
    try:
        cause = pickle.loads(record["error"])
    except Exception:
        return None
    if not isinstance(cause, Exception):
        return None
    if record["rank"] != 0:
        cause.add_note(f"(raised on rank {record['rank']}; its traceback:)\n{record['traceback'].rstrip()}")
    return cause
