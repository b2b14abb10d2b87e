"""The few collectives an evaluation needs, on ``torch.distributed`` when it is initialized.

Lightning's DDP strategies, Fabric and accelerate all initialize the default process group, so
one code path serves them all; without one (a single process), every collective is the
identity. Collective tensors live where the backend wants them: the current CUDA device under
NCCL, the CPU otherwise.

Every function here is a collective: all ranks must call it, in the same order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor

_T = TypeVar("_T")


def is_distributed() -> bool:
    """Whether a default process group is initialized (more than one process may take part)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


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
