"""Direct tests of ``clip_metric.utilities.checks``: one set of checks, one wording."""

from __future__ import annotations

import re

import pytest

from clip_metric.utilities.checks import (
    check_bool,
    check_callable,
    check_choice,
    check_non_negative_int,
    check_optional_positive_int,
    check_positive_int,
    check_str,
)


def _wording(name: str, expected: str, value) -> str:
    return "^" + re.escape(f"Expected `{name}` to be {expected} but got {value!r}") + "$"


@pytest.mark.parametrize("value", [True, False])
def test_check_bool_accepts_booleans(value):
    assert check_bool("flag", value) is value


@pytest.mark.parametrize("value", ["false", "True", 0, 1, None, 0.0, [True]])
def test_check_bool_refuses_everything_else(value):
    with pytest.raises(ValueError, match=_wording("flag", "a bool (True or False)", value)):
        check_bool("flag", value)


@pytest.mark.parametrize("value", [1, 2, 10**20])
def test_check_positive_int_accepts(value):
    assert check_positive_int("batch_size", value) == value


@pytest.mark.parametrize("value", [0, -1, True, False, 1.0, 2.5, "3", None, [1]])
def test_check_positive_int_refuses(value):
    with pytest.raises(ValueError, match=_wording("batch_size", "a positive int", value)):
        check_positive_int("batch_size", value)


@pytest.mark.parametrize("value", [0, 1, 7])
def test_check_non_negative_int_accepts(value):
    assert check_non_negative_int("size", value) == value


@pytest.mark.parametrize("value", [-1, True, False, 0.0, "0", None])
def test_check_non_negative_int_refuses(value):
    with pytest.raises(ValueError, match=_wording("size", "a non-negative int", value)):
        check_non_negative_int("size", value)


def test_check_optional_positive_int():
    assert check_optional_positive_int("limit", None) is None
    assert check_optional_positive_int("limit", 3) == 3
    for value in (0, -2, True, "3", 1.5):
        with pytest.raises(ValueError, match=_wording("limit", "a positive int", value)):
            check_optional_positive_int("limit", value)


def test_check_choice():
    assert check_choice("scale", "cosine", ("cosine", "clipscore")) == "cosine"
    for value in ("Cosine", "", None, 1, True, ("cosine",)):
        with pytest.raises(ValueError, match=_wording("scale", "one of ('cosine', 'clipscore')", value)):
            check_choice("scale", value, ("cosine", "clipscore"))


def test_check_choice_compares_strings_only():
    with pytest.raises(ValueError, match="Expected `n` to be one of"):
        check_choice("n", 1, ("1", "2"))


def test_check_str():
    assert check_str("prefix", "") == ""
    assert check_str("prefix", "clip/") == "clip/"
    for value in (None, 1, b"clip/", ["clip/"]):
        with pytest.raises(ValueError, match=_wording("prefix", "a string", value)):
            check_str("prefix", value)


def test_check_callable():
    assert check_callable("hook", len) is len
    for value in (None, "len", 3):
        with pytest.raises(ValueError, match=_wording("hook", "callable", value)):
            check_callable("hook", value)
