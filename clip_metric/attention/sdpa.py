"""Torch's own scaled-dot-product attention and transformers' own ``"sdpa"`` attention function.

Two process-wide places decide what transformers' ``"sdpa"`` attention computes, and a trainer
that switches SageAttention on globally replaces one or both:

* ``torch.nn.functional.scaled_dot_product_attention``, which transformers looks up at call time;
* transformers' registry of attention functions (``AttentionInterface.register("sdpa", fn)`` or
  ``ALL_ATTENTION_FUNCTIONS["sdpa"] = fn``), which every model with ``attn_implementation="sdpa"``
  calls.

:func:`restored_attention` puts both back for the duration of a block.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any, Callable

import torch
import torch.nn.functional

SDPA_NAME = "scaled_dot_product_attention"
SDPA_KEY = "sdpa"
MISSING = object()


def original_sdpa() -> Callable[..., torch.Tensor]:
    """Torch's own ``scaled_dot_product_attention``, whatever is installed in its place.

    Returns:
        The builtin ``torch._C._nn.scaled_dot_product_attention``.

    Example:
        >>> original_sdpa() is torch._C._nn.scaled_dot_product_attention
        True
    """
    return torch._C._nn.scaled_dot_product_attention


def sdpa_is_patched() -> bool:
    """Whether ``torch.nn.functional.scaled_dot_product_attention`` is not torch's own function.

    Returns:
        ``True`` when something (SageAttention or anything else) replaced it.

    Example:
        >>> sdpa_is_patched()
        False
    """
    return getattr(torch.nn.functional, SDPA_NAME, MISSING) is not original_sdpa()


def _attention_registry() -> tuple[dict, dict, Callable[..., Any]] | None:
    """The registry's class-wide and instance mappings and transformers' own ``"sdpa"`` function.

    ``None`` until transformers is imported (it is never imported here) or if it looks different.
    """
    modeling_utils = sys.modules.get("transformers.modeling_utils")
    integration = sys.modules.get("transformers.integrations.sdpa_attention")
    if modeling_utils is None or integration is None:
        return None
    # `AttentionInterface.register` writes the class-wide mapping, item assignment on
    # `ALL_ATTENTION_FUNCTIONS` its instance mapping, which lookups read first (4.57 and 5.x).
    registered = getattr(getattr(modeling_utils, "AttentionInterface", None), "_global_mapping", None)
    assigned = getattr(getattr(modeling_utils, "ALL_ATTENTION_FUNCTIONS", None), "_local_mapping", None)
    own = getattr(integration, "sdpa_attention_forward", None)
    if not (isinstance(registered, dict) and isinstance(assigned, dict) and callable(own)):
        return None
    return registered, assigned, own


def sdpa_attention_replacements() -> list[tuple[str, Any]]:
    """Where transformers' ``"sdpa"`` attention function is replaced, and by what.

    Returns:
        ``(where, replacement)`` pairs; ``replacement`` is :data:`MISSING` for a removed entry.
        Empty when nothing is replaced or transformers is not imported.

    Example:
        >>> sdpa_attention_replacements()
        []
    """
    registry = _attention_registry()
    if registry is None:
        return []
    registered, assigned, own = registry
    found = []
    if registered.get(SDPA_KEY, MISSING) is not own:
        found.append((f'AttentionInterface "{SDPA_KEY}"', registered.get(SDPA_KEY, MISSING)))
    if assigned.get(SDPA_KEY, own) is not own:
        found.append((f'ALL_ATTENTION_FUNCTIONS["{SDPA_KEY}"]', assigned[SDPA_KEY]))
    return found


def _put(mapping: Any, key: str, value: Any) -> None:
    if value is MISSING:
        if isinstance(mapping, dict):
            mapping.pop(key, None)
        else:
            with contextlib.suppress(AttributeError):
                delattr(mapping, key)
    elif isinstance(mapping, dict):
        mapping[key] = value
    else:
        setattr(mapping, key, value)


@contextlib.contextmanager
def _restored(places: list[tuple[Any, str, Any, Any]]) -> Iterator[None]:
    """Install ``original`` at each ``(mapping, key, current, original)``; put ``current`` back on exit."""
    if all(current is original for _, _, current, original in places):
        yield
        return
    for mapping, key, _, original in places:
        _put(mapping, key, original)
    try:
        yield
    finally:
        for mapping, key, current, _ in places:
            _put(mapping, key, current)


@contextlib.contextmanager
def restored_attention() -> Iterator[None]:
    """Run a block with torch's and transformers' original attention functions installed.

    For the duration of the block ``torch.nn.functional.scaled_dot_product_attention`` is torch's
    own function, and transformers' ``"sdpa"`` attention function is its own (both the
    class-wide ``AttentionInterface`` entry and an entry assigned on ``ALL_ATTENTION_FUNCTIONS``),
    so CLIP's ``"sdpa"`` attention is exact, masked attention. On exit, also when the block raises,
    exactly the objects that were installed on entry are put back (so a replacement made inside
    the block is undone too). Nesting works, and when nothing is replaced the manager changes
    nothing. It also works as a decorator.

    Code that bound the torch function at import time (``from torch.nn.functional import
    scaled_dot_product_attention``) is not affected.

    The swap is process-wide. It is not thread-safe with respect to another thread that patches
    or unpatches these functions concurrently; other threads that only call attention during the
    block also get the originals, which are exact but may be slower than SageAttention.

    Returns:
        A context manager yielding ``None``.

    Example:
        >>> with restored_attention():
        ...     sdpa_is_patched()
        False
    """
    places = [(torch.nn.functional, SDPA_NAME, getattr(torch.nn.functional, SDPA_NAME, MISSING), original_sdpa())]
    registry = _attention_registry()
    if registry is not None:
        registered, assigned, own = registry
        places.append((registered, SDPA_KEY, registered.get(SDPA_KEY, MISSING), own))
        # The instance entry is removed rather than set, so lookups fall through to the class-wide one.
        current = assigned.get(SDPA_KEY, MISSING)
        places.append((assigned, SDPA_KEY, current, current if current is own else MISSING))
    with _restored(places):
        yield
