"""Fixtures: tiny CLIP-family models with random weights and the real CLIP tokenizer.

They are saved with ``save_pretrained`` to a temporary directory so the real loading path
(``from_pretrained`` of a local directory) is what the tests exercise. No network is used. The
builders live in ``_helpers``; tests import from there, never from this file.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from _helpers.models import build_tiny_clip

# Helpers are imported by tests, not collected (the stand-in packages import each other by name).
collect_ignore = ["_helpers"]


@pytest.fixture(autouse=True)
def _fresh_ddp_port():
    """Each test's multi-process launch picks its own free port.

    Lightning's launchers write MASTER_PORT into this process's environment and later launches
    reuse it, so a second process group could try a port the previous one still holds.
    """
    before = os.environ.get("MASTER_PORT")
    yield
    if before is None:
        os.environ.pop("MASTER_PORT", None)
    else:
        os.environ["MASTER_PORT"] = before


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture()
def uint8_images() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (6, 3, 48, 64), dtype=torch.uint8, generator=generator)


@pytest.fixture()
def no_hang():
    """Fail instead of hanging: a blocked open is interrupted after 10 s."""

    class Blocked(BaseException):  # not an OSError: nothing on the way may take it for a read error
        pass

    def interrupt(signum, frame):
        raise Blocked("blocked for 10 s")

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)
