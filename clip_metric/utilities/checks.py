"""Argument checks shared by every public entry point, with one error wording.

Each check raises ``ValueError("Expected `name` to be ... but got <value>")`` and returns the
value it accepted, so callers can validate and assign in one line. Booleans are refused where an
integer is asked for (``True`` is an ``int`` in Python), and strings are refused where a boolean
is asked for (``bool("false")`` is ``True``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _fail(name: str, expected: str, value: Any) -> ValueError:
    return ValueError(f"Expected `{name}` to be {expected} but got {value!r}")


def check_bool(name: str, value: Any) -> bool:
    """A real boolean (``True``/``False``), not a string or a number.

    Example:
        >>> check_bool("offload", False)
        False
    """
    if not isinstance(value, bool):
        raise _fail(name, "a bool (True or False)", value)
    return value


def check_positive_int(name: str, value: Any) -> int:
    """An ``int`` of at least 1 (booleans refused).

    Example:
        >>> check_positive_int("batch_size", 8)
        8
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(name, "a positive int", value)
    return value


def check_non_negative_int(name: str, value: Any) -> int:
    """An ``int`` of at least 0 (booleans refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(name, "a non-negative int", value)
    return value


def check_optional_positive_int(name: str, value: Any) -> int | None:
    """``None`` or a positive ``int``."""
    return None if value is None else check_positive_int(name, value)


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """One of ``choices`` (compared as strings; other types refused).

    Example:
        >>> check_choice("scale", "cosine", ("cosine", "clipscore"))
        'cosine'
    """
    if not isinstance(value, str) or value not in choices:
        raise _fail(name, f"one of {tuple(choices)}", value)
    return value


def check_str(name: str, value: Any) -> str:
    """A string."""
    if not isinstance(value, str):
        raise _fail(name, "a string", value)
    return value


def check_callable(name: str, value: Any) -> Any:
    """A callable."""
    if not callable(value):
        raise _fail(name, "callable", value)
    return value


def check_prefix(value: Any) -> str:
    """A non-empty key prefix such as ``"clip/"``."""
    prefix = check_str("prefix", value)
    if not prefix.strip():
        raise ValueError(f"Expected `prefix` to be a non-empty string such as 'clip/' but got {value!r}")
    return prefix


def check_optional_path(name: str, value: Any) -> Any:
    """A non-blank ``str`` or ``os.PathLike``, or None."""
    import os

    if value is not None and (not isinstance(value, (str, os.PathLike)) or not os.fspath(value).strip()):
        raise ValueError(f"Expected `{name}` to be a path but got {value!r}")
    return value


def check_model_source(value: Any, encoder_type: type) -> Any:
    """A hub id, a local directory or an encoder (``encoder_type``)."""
    import os

    if not isinstance(value, (str, os.PathLike, encoder_type)) or (isinstance(value, str) and not value.strip()):
        raise ValueError(
            f"Expected `model_name_or_path` to be a hub id, a local directory or a {encoder_type.__name__} but got "
            f"{value!r}"
        )
    return value


def check_optional_positive_number(name: str, value: Any) -> float | None:
    """A finite number above zero, or None."""
    import math

    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"Expected `{name}` to be a positive number or None but got {value!r}")
    return float(value)
