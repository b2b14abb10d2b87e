"""Fixtures of the Lightning tests."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture()
def info_lines():
    """What Lightning's info logger prints (``rank_zero_info``), as messages."""
    lines: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("lightning.pytorch")
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)
