"""Multi-process launches that fail instead of hanging."""

from __future__ import annotations

import time

import pytest
import torch.multiprocessing as mp


def spawn_two(fn, args, timeout: float = 240.0) -> None:
    """Start two processes and fail (not hang) if they do not finish in ``timeout`` seconds."""
    context = mp.spawn(fn, args=args, nprocs=2, join=False)
    deadline = time.monotonic() + timeout
    while not context.join(timeout=max(deadline - time.monotonic(), 0.1)):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the two processes did not finish in {timeout:.0f} s (a rank is waiting in a collective)")
