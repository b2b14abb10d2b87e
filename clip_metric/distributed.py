"""The few collectives an evaluation needs, on ``torch.distributed`` when it is initialized.

Lightning's DDP strategies, Fabric and accelerate all initialize the default process group, so
one code path serves them all; without one (a single process), every collective is the
identity. Collective tensors live where the backend wants them: the current CUDA device under
NCCL, the CPU otherwise.

Every function here is a collective: all ranks must call it, in the same order. Inside
:func:`local_only` they all act as on a single process (no collective at all): for work one
process does alone, such as an evaluation under ``if accelerator.is_main_process:``.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch import Tensor

_T = TypeVar("_T")


_LOCAL = contextvars.ContextVar("clip_metric_local_only", default=False)


@contextlib.contextmanager
def local_only() -> Iterator[None]:
    """Within this block, every collective here is the identity: this process works alone."""
    token = _LOCAL.set(True)
    try:
        yield
    finally:
        _LOCAL.reset(token)


def is_distributed() -> bool:
    """Whether collectives go through a process group (initialized, and not inside :func:`local_only`)."""
    return not _LOCAL.get() and torch.distributed.is_available() and torch.distributed.is_initialized()


def wait_for_all_ranks(key: str, timeout: float, what: str) -> None:
    """Return once every rank has reached this call with the same ``key``; raise after ``timeout`` seconds.

    Run before the first collective of work every rank must join, it turns a rank that never
    comes (the work was started under ``if rank == 0:``) into an error naming the fix, where a
    collective would wait for it forever. It counts arrivals in the process group's key-value
    store, which every backend has; ``key`` must be new for each such meeting.

    The outcome is decided once, in the store, for every rank: the last arrival marks the
    meeting held, a rank whose ``timeout`` runs out first marks it abandoned. A rank that
    arrives at an abandoned meeting raises at once (it never enters work the others left),
    so no rank can go on into collectives the others are not in.

    Raises:
        RuntimeError: if not every rank arrives within ``timeout`` seconds, or this rank arrives
            after another rank gave up waiting.
    """
    if not is_distributed():
        return
    from torch.distributed.distributed_c10d import _get_default_store

    store = _get_default_store()
    rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    store_key = f"clip_metric/{key}"
    decision = f"{store_key}/decision"
    arrived = store.add(store_key, 1)
    # The first of "held" (the last arrival) and "abandoned" (a timeout) to reach the store wins.
    outcome = store.compare_set(decision, "", "held") if arrived >= world_size else None
    timed_out = False
    deadline = time.monotonic() + timeout
    while outcome is None:
        if store.check([decision]):
            outcome = store.get(decision)
        elif time.monotonic() > deadline:
            outcome, timed_out = store.compare_set(decision, "", "abandoned"), True
        else:
            time.sleep(0.02)
    if outcome == b"held":
        return
    if arrived >= world_size:  # the last to come, after another rank had given up
        raise AbandonedMeeting(
            f"{what} was called on rank {rank} after another rank had stopped waiting for it (its timeout ran "
            "out), so that call is abandoned on every rank. Call it on every rank at the same point of the loop "
            "(not only the main process), or evaluate on one process alone with local=True."
        )
    raise RuntimeError(
        f"{what} was called on rank {rank}, but only {store.add(store_key, 0)} of {world_size} ranks "
        f"called it within {timeout:g} s{'' if timed_out else ' (another rank stopped waiting)'}. Every rank must "
        "call it (not only the main process: take it out of `if accelerator.is_main_process:`), or evaluate on "
        "one process alone with local=True."
    )


class AbandonedMeeting(RuntimeError):
    """Raised by :func:`wait_for_all_ranks` on a rank that came to a meeting another rank had given up on."""


def rank_and_world_size() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group; ``(0, 1)`` without one."""
    if not is_distributed():
        return 0, 1
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def collective_device() -> torch.device:
    """Where tensors sent through the default process group must be."""
    if is_distributed() and torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """The sum of ``tensor`` over ranks (a new tensor on ``tensor``'s device)."""
    if not is_distributed():
        return tensor.clone()
    out = tensor.detach().to(collective_device(), copy=True)
    torch.distributed.all_reduce(out)
    return out.to(tensor.device)


def broadcast_object(value: _T, src: int = 0) -> _T:
    """``value`` as rank ``src`` holds it, on every rank (picklable values)."""
    if not is_distributed():
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=src, device=collective_device())
    return box[0]


def gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank (picklable values)."""
    if not is_distributed():
        return [value]
    out: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, value)
    return out


_CAUSE_CHARS = 300
"""Characters of another rank's error carried into this rank's (the rest is in that rank's log)."""


def _cause(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if len(text) > _CAUSE_CHARS:
        text = text[: _CAUSE_CHARS - 3] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class OtherRankError(RuntimeError):
    """Raised by :func:`jointly` on a rank whose work succeeded while another rank's failed.

    Attributes:
        causes: ``{rank: "ErrorType: message"}`` of each failing rank (the message shortened).
    """

    def __init__(self, message: str, causes: dict[int, str]) -> None:
        super().__init__(message)
        self.causes = causes


def jointly(what: str, fn: Callable[[], _T], *, owner: str = "clip-metric") -> _T:
    """Run ``fn`` on every rank; if it raises on any rank, it raises on every rank.

    The rank where ``fn`` failed re-raises its own error (``KeyboardInterrupt`` included, once
    the others know); the others raise a ``RuntimeError`` naming ``what`` failed, on which rank,
    and that rank's error type and message (shortened). No rank is left waiting in the next
    collective.

    Raises:
        OtherRankError: (a ``RuntimeError``) on a rank whose ``fn`` succeeded while another rank's
            failed, with each failing rank's error in its message and in ``causes``.

    Example:
        >>> jointly("adding", lambda: 1 + 1)
        2
    """
    error: BaseException | None = None
    result = None
    try:
        result = fn()
    except BaseException as err:  # an interrupt too: decided jointly below, so no rank is left in a collective
        error = err
    if is_distributed():
        causes = gather_objects(None if error is None else _cause(error))
    else:
        causes = [None if error is None else ""]
    if error is not None:
        raise error
    failed = [(r, cause) for r, cause in enumerate(causes) if cause is not None]
    if failed:
        where = "; ".join(f"rank {r}: {cause}" for r, cause in failed)
        raise OtherRankError(
            f"{owner}: {what} failed on {len(failed)} other rank(s) ({where}); see their logs for the traceback",
            dict(failed),
        )
    return result  # type: ignore[return-value]
