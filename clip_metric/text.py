"""The text side of the encoder: prompt checks, truncation, length-grouped batches, the cache.

CLIP pools its text embedding on the end-of-text token, so a prompt longer than the model's
context is cut keeping that token (as OpenAI's tokenizer does), not simply chopped. Prompts of
similar token length are batched together so that little compute goes to padding, and text
embeddings are cached by prompt: a fixed prompt library, scored at every evaluation, runs the
text tower once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from clip_metric.utilities.checks import check_non_negative_int, check_positive_int


def check_prompts(prompts: Any) -> list[str]:
    """Validate prompts: a non-empty list of non-empty strings (a single string is one prompt).

    Raises:
        ValueError: for a non-sequence, an empty list, non-string, empty or unencodable prompts.

    Example:
        >>> check_prompts("a red fox")
        ['a red fox']
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    if isinstance(prompts, (bytes, bytearray)) or not isinstance(prompts, Sequence):
        raise ValueError(f"Expected prompts as a list of strings but got {type(prompts).__name__}")
    if len(prompts) == 0:
        raise ValueError("Expected at least one prompt but got an empty list")
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise ValueError(f"Expected prompt {index} to be a string but got {type(prompt).__name__}: {prompt!r}")
        if not prompt.strip():
            raise ValueError(f"Expected prompt {index} to be non-empty but got {prompt!r}")
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(f"Expected prompt {index} to be valid Unicode but got {prompt!r} ({err.reason})") from None
    return list(prompts)


def truncate_token_ids(ids: list[list[int]], context_length: int, eos_token_id: int | None) -> list[int]:
    """Cut rows longer than ``context_length`` in place, keeping a final end-of-text token.

    Returns:
        The indices of the rows that were cut.

    Example:
        >>> rows = [[1, 5, 6, 7, 2], [1, 2]]
        >>> truncate_token_ids(rows, 3, eos_token_id=2), rows
        ([0], [[1, 5, 2], [1, 2]])
    """
    cut = [i for i, row in enumerate(ids) if len(row) > context_length]
    for i in cut:
        row = ids[i]
        keep_last = eos_token_id is not None and row[-1] == eos_token_id
        ids[i] = row[: context_length - 1] + [row[-1]] if keep_last else row[:context_length]
    return cut


def length_grouped_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices in batches of at most ``batch_size``, shortest sequences first.

    Each batch is padded only to its own longest member; the caller puts results back in the
    original order.

    Raises:
        ValueError: if ``batch_size`` is not a positive int.

    Example:
        >>> length_grouped_batches([5, 2, 9, 3], 2)
        [[1, 3], [0, 2]]
    """
    check_positive_int("batch_size", batch_size)
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


class EmbeddingCache:
    """Least-recently-used cache of text embeddings, keyed by prompt.

    Args:
        capacity: how many embeddings to keep (0 keeps none).

    Raises:
        ValueError: if ``capacity`` is not a non-negative int.

    Example:
        >>> import torch
        >>> cache = EmbeddingCache(1)
        >>> cache.put({"a": torch.ones(2), "b": torch.zeros(2)})
        >>> list(cache)
        ['b']
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = check_non_negative_int("capacity", capacity)
        self._items: OrderedDict[str, Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):
        return iter(self._items)

    def __contains__(self, prompt: object) -> bool:
        return prompt in self._items

    def __getitem__(self, prompt: str) -> Tensor:
        return self._items[prompt]

    def missing(self, prompts: Iterable[str]) -> list[str]:
        """The prompts not cached (each once); cached ones are marked as just used."""
        missing: dict[str, None] = {}
        for prompt in prompts:
            if prompt in self._items:
                self._items.move_to_end(prompt)  # requested now: not the next to be dropped
            else:
                missing[prompt] = None
        return list(missing)

    def put(self, embeddings: dict[str, Tensor]) -> None:
        """Store embeddings, dropping the least recently used beyond the capacity."""
        for prompt, embedding in embeddings.items():
            # A copy: a view would keep its whole text batch alive until every row is dropped.
            self._items[prompt] = embedding.clone()
            self._items.move_to_end(prompt)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def to(self, device: torch.device) -> None:
        """Move every cached embedding to ``device``."""
        self._items = OrderedDict((k, v.to(device)) for k, v in self._items.items())

    def clear(self) -> None:
        self._items.clear()
