"""Direct tests of ``clip_metric.text``: prompt checks, truncation, batching, the cache."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clip_metric.text import EmbeddingCache, check_prompts, length_grouped_batches, truncate_token_ids

SETTINGS = settings(max_examples=50, deadline=None)

# --------------------------------------------------------------------------- check_prompts


def test_check_prompts_accepts_lists_tuples_and_a_single_string():
    assert check_prompts(["a", "b"]) == ["a", "b"]
    assert check_prompts(("a", "b")) == ["a", "b"]
    assert check_prompts("a red fox") == ["a red fox"]
    assert check_prompts(["  padded  ", "üñíçødé 猫"]) == ["  padded  ", "üñíçødé 猫"]


def test_check_prompts_returns_a_new_list():
    prompts = ["a", "b"]
    checked = check_prompts(prompts)
    checked.append("c")
    assert prompts == ["a", "b"]


@pytest.mark.parametrize(
    ("prompts", "match"),
    [
        ([], "at least one prompt"),
        ((), "at least one prompt"),
        (b"a fox", "list of strings but got bytes"),
        (bytearray(b"a fox"), "list of strings but got bytearray"),
        (None, "list of strings but got NoneType"),
        (3, "list of strings but got int"),
        ({"a"}, "list of strings but got set"),
        ((p for p in ["a"]), "list of strings but got generator"),
        (["a", 3], "prompt 1 to be a string but got int"),
        (["a", None], "prompt 1 to be a string but got NoneType"),
        ([b"a"], "prompt 0 to be a string but got bytes"),
        (["a", ""], "prompt 1 to be non-empty"),
        (["   \t\n"], "prompt 0 to be non-empty"),
        ("", "prompt 0 to be non-empty"),
        (["a", "bad \ud800 surrogate"], "prompt 1 to be valid Unicode"),
    ],
)
def test_check_prompts_refuses(prompts, match):
    with pytest.raises(ValueError, match=match):
        check_prompts(prompts)


# --------------------------------------------------------------------------- truncate_token_ids


def test_truncate_keeps_the_end_of_text_token():
    rows = [[49406, 1, 2, 3, 4, 5, 49407], [49406, 1, 49407], [49406, 1, 2, 49407]]
    cut = truncate_token_ids(rows, 4, eos_token_id=49407)
    assert cut == [0]
    assert rows == [[49406, 1, 2, 49407], [49406, 1, 49407], [49406, 1, 2, 49407]]


def test_truncate_rows_at_exactly_the_context_are_untouched():
    rows = [[0, 1, 2, 9]]
    assert truncate_token_ids(rows, 4, eos_token_id=9) == []
    assert rows == [[0, 1, 2, 9]]


def test_truncate_without_an_end_token_chops():
    rows = [[0, 1, 2, 3, 4, 5]]
    assert truncate_token_ids(rows, 3, eos_token_id=None) == [0]
    assert rows == [[0, 1, 2]]
    rows = [[0, 1, 2, 3, 4, 5]]  # ends with something other than the end token
    assert truncate_token_ids(rows, 3, eos_token_id=9) == [0]
    assert rows == [[0, 1, 2]]


@SETTINGS
@given(
    rows=st.lists(st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=30), max_size=8),
    context=st.integers(min_value=2, max_value=20),
    eos=st.none() | st.integers(min_value=0, max_value=50),
)
def test_truncate_property(rows, context, eos):
    original = [list(row) for row in rows]
    cut = truncate_token_ids(rows, context, eos)
    assert cut == [i for i, row in enumerate(original) if len(row) > context]
    for before, after in zip(original, rows):
        if len(before) <= context:
            assert after == before
            continue
        assert len(after) == context
        if eos is not None and before[-1] == eos:
            assert after == before[: context - 1] + [eos]
        else:
            assert after == before[:context]


# --------------------------------------------------------------------------- length_grouped_batches


def test_length_grouped_batches_example():
    assert length_grouped_batches([5, 2, 9, 3], 2) == [[1, 3], [0, 2]]
    assert length_grouped_batches([], 4) == []
    assert length_grouped_batches([3, 3, 3], 5) == [[0, 1, 2]]


@pytest.mark.parametrize("batch_size", [0, -1, True, 1.5, "2"])
def test_length_grouped_batches_refuses_bad_batch_sizes(batch_size):
    with pytest.raises(ValueError, match="Expected `batch_size` to be a positive int"):
        length_grouped_batches([1, 2, 3], batch_size)


@SETTINGS
@given(
    lengths=st.lists(st.integers(min_value=1, max_value=77), max_size=60),
    batch_size=st.integers(min_value=1, max_value=16),
)
def test_length_grouped_batches_property(lengths, batch_size):
    batches = length_grouped_batches(lengths, batch_size)
    flat = [index for batch in batches for index in batch]
    assert sorted(flat) == list(range(len(lengths)))  # every index exactly once
    assert all(1 <= len(batch) <= batch_size for batch in batches)
    assert all(len(batch) == batch_size for batch in batches[:-1])  # only the last may be short
    ordered = [lengths[i] for i in flat]
    assert ordered == sorted(ordered)  # shortest first, so each batch pads little


# --------------------------------------------------------------------------- EmbeddingCache


def _embedding(value: float) -> torch.Tensor:
    return torch.full((4,), value)


def test_cache_drops_the_least_recently_used():
    cache = EmbeddingCache(2)
    cache.put({"a": _embedding(1), "b": _embedding(2)})
    assert cache.missing(["a"]) == []  # "a" is now the most recently used
    cache.put({"c": _embedding(3)})
    assert list(cache) == ["a", "c"]
    assert "b" not in cache and "a" in cache and len(cache) == 2


def test_cache_put_again_refreshes_an_entry():
    cache = EmbeddingCache(2)
    cache.put({"a": _embedding(1)})
    cache.put({"b": _embedding(2)})
    cache.put({"a": _embedding(10)})
    cache.put({"c": _embedding(3)})
    assert list(cache) == ["a", "c"]
    assert torch.equal(cache["a"], _embedding(10))


def test_cache_missing_lists_each_missing_prompt_once_in_order():
    cache = EmbeddingCache(5)
    cache.put({"b": _embedding(2)})
    assert cache.missing(["c", "b", "a", "c", "a"]) == ["c", "a"]


def test_cache_with_capacity_zero_keeps_nothing():
    cache = EmbeddingCache(0)
    cache.put({"a": _embedding(1), "b": _embedding(2)})
    assert len(cache) == 0 and list(cache) == []
    assert cache.missing(["a"]) == ["a"]


def test_cache_within_one_put_larger_than_capacity_keeps_the_last():
    cache = EmbeddingCache(2)
    cache.put({name: _embedding(i) for i, name in enumerate("abcde")})
    assert list(cache) == ["d", "e"]


@pytest.mark.parametrize("capacity", [-1, True, 1.5, "3", None])
def test_cache_refuses_bad_capacities(capacity):
    with pytest.raises(ValueError, match="Expected `capacity` to be a non-negative int"):
        EmbeddingCache(capacity)


def test_cache_stores_copies_not_views():
    batch = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    cache = EmbeddingCache(3)
    cache.put({"a": batch[0], "b": batch[1]})
    stored = cache["a"]
    assert stored.untyped_storage().data_ptr() != batch.untyped_storage().data_ptr()
    assert stored.untyped_storage().nbytes() == 4 * 4  # one row, not the whole batch kept alive
    batch.zero_()
    assert torch.equal(cache["a"], torch.tensor([0.0, 1.0, 2.0, 3.0]))
    assert torch.equal(cache["b"], torch.tensor([4.0, 5.0, 6.0, 7.0]))


def test_cache_to_and_clear():
    cache = EmbeddingCache(3)
    cache.put({"a": _embedding(1), "b": _embedding(2)})
    cache.to(torch.device("cpu"))
    assert list(cache) == ["a", "b"] and cache["a"].device.type == "cpu"
    cache.clear()
    assert len(cache) == 0 and cache.missing(["a"]) == ["a"]


@SETTINGS
@given(
    capacity=st.integers(min_value=0, max_value=5),
    operations=st.lists(st.lists(st.sampled_from("abcdefg"), min_size=1, max_size=4), max_size=20),
)
def test_cache_matches_a_reference_lru(capacity, operations):
    cache = EmbeddingCache(capacity)
    reference: list[str] = []  # least recently used first
    for prompts in operations:
        missing = cache.missing(prompts)
        expected_missing = list(dict.fromkeys(p for p in prompts if p not in reference))
        assert missing == expected_missing
        for prompt in prompts:
            if prompt in reference:
                reference.remove(prompt)
                reference.append(prompt)
        cache.put({prompt: _embedding(ord(prompt)) for prompt in missing})
        for prompt in missing:
            reference.append(prompt)
        del reference[: max(0, len(reference) - capacity)]
        assert list(cache) == reference
        for prompt in reference:
            assert torch.equal(cache[prompt], _embedding(ord(prompt)))
