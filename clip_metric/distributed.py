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

    Raises:
        RuntimeError: if not every rank arrives within ``timeout`` seconds.
    """
    if not is_distributed():
        return
    from torch.distributed.distributed_c10d import _get_default_store

    store = _get_default_store()
    world_size = torch.distributed.get_world_size()
    store_key = f"clip_metric/{key}"
    arrived = store.add(store_key, 1)
    deadline = time.monotonic() + timeout
    while arrived < world_size:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{what} was called on rank {torch.distributed.get_rank()}, but only {arrived} of {world_size} ranks "
                f"called it within {timeout:g} s. Every rank must call it (not only the main process: take it out "
                "of `if accelerator.is_main_process:`), or evaluate on one process alone with local=True."
            )
        time.sleep(0.02)
        arrived = store.add(store_key, 0)


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


def jointly(what: str, fn: Callable[[], _T], *, owner: str = "clip-metric") -> _T:
    """Run ``fn`` on every rank; if it raises on any rank, it raises on every rank.

    The rank where ``fn`` failed re-raises its own error; the others raise a ``RuntimeError``
    naming ``what`` failed and where. No rank is left waiting in the next collective.

    Raises:
        RuntimeError: on a rank whose ``fn`` succeeded while another rank's failed.

    Example:
        >>> jointly("adding", lambda: 1 + 1)
        2
    """
    error: BaseException | None = None
    result = None
    try:
        result = fn()
    except Exception as err:  # decided jointly below, so no rank is left in a collective
        error = err
    failed = int(all_reduce_sum(torch.tensor([float(error is not None)])).item())
    if error is not None:
        raise error
    if failed:
        raise RuntimeError(f"{owner}: {what} failed on {failed} other rank(s); see their logs")
    return result  # type: ignore[return-value]
