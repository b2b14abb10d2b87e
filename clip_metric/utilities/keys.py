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


TAG_KEY_PREFIX = "by_"
"""What every per-tag key starts with after the metric prefix: ``clip/by_category/Animals``.
Built-in statistics (``clip/mean``, ``clip/count``, ``clip/delta``) never start with it, so a
tag named ``count`` or ``mean`` (GenEval has ``count``) cannot be read as one."""


def tag_key(name: str, value: str) -> str:
    """The key, after the metric prefix, of the mean score of the prompts whose tag ``name`` is ``value``.

    Example:
        >>> tag_key("count", "2"), tag_key("category", "Produce & Plants")
        ('by_count/2', 'by_category/Produce_Plants')
    """
    return f"{TAG_KEY_PREFIX}{safe_key(name)}/{safe_key(value)}"


def is_tag_key(key: str) -> bool:
    """Whether ``key`` (after the metric prefix) is a per-tag key made by :func:`tag_key`.

    Example:
        >>> is_tag_key("by_count/2"), is_tag_key("count"), is_tag_key("mean_ci")
        (True, False, False)
    """
    name, slash, value = key.partition("/")
    return name.startswith(TAG_KEY_PREFIX) and len(name) > len(TAG_KEY_PREFIX) and bool(slash and value)
