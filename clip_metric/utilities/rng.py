"""Save and restore every global random-number generator, so evaluation leaves no trace.

Generating validation images draws random numbers (noise, dropout left on by a custom
sampler, ...). Without restoring the generators, turning CLIP scoring on would change the
training trajectory that follows.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any, Iterator

import numpy as np
import torch


def capture_rng_state() -> dict[str, Any]:
    """The states of Python's, numpy's, torch's CPU and every initialised CUDA generator."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back what :func:`capture_rng_state` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block and restore all global generators afterwards, even on error.

    Example:
        >>> import torch
        >>> before = torch.rand(1)
        >>> _ = torch.manual_seed(0); a = torch.rand(1)
        >>> _ = torch.manual_seed(0)
        >>> with preserved_rng():
        ...     _ = torch.rand(100)
        >>> torch.equal(torch.rand(1), a)
        True
    """
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)
