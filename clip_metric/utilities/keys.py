"""Metric names every logger accepts."""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


def safe_key(text: str) -> str:
    """``text`` as part of a metric name every logger takes (letters, digits, ``_``, ``-``, ``.``).

    Example:
        >>> safe_key("Fine-grained Detail"), safe_key("Produce & Plants")
        ('Fine-grained_Detail', 'Produce_Plants')
    """
    return _UNSAFE.sub("_", text).strip("_") or "_"
