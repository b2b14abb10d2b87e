"""Metric names: logger-safe parts, and per-tag keys that cannot be read as built-in statistics."""

from __future__ import annotations

import pytest

from clip_metric.utilities.constants import DELTA_NAMES, STAT_NAMES
from clip_metric.utilities.keys import TAG_KEY_PREFIX, is_tag_key, safe_key, tag_key


@pytest.mark.parametrize("name", [*STAT_NAMES, *DELTA_NAMES, "tag", "category"])
def test_tag_keys_never_look_like_built_in_statistics(name):
    key = tag_key(name, "2")
    assert key == f"{TAG_KEY_PREFIX}{name}/2"
    assert key.split("/")[0] not in STAT_NAMES + DELTA_NAMES
    assert is_tag_key(key)
    assert not is_tag_key(name)


def test_geneval_count_tag_is_namespaced_beside_the_count_statistic():
    assert tag_key("count", "2") == "by_count/2" and "count" in STAT_NAMES
    assert tag_key("tag", "counting") == "by_tag/counting"


def test_tag_key_parts_are_logger_safe():
    assert tag_key("Produce & Plants", "a/b") == "by_Produce_Plants/a_b"
    assert safe_key("///") == "_"
