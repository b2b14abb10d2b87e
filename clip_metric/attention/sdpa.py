"""Torch's own scaled-dot-product attention, and a block that runs with it put back.

transformers' ``"sdpa"`` attention looks ``torch.nn.functional.scaled_dot_product_attention`` up
at call time, so a trainer that replaces it process-wide (SageAttention's usual recipe) changes
CLIP's attention too. :func:`restored_attention` undoes that for the duration of a block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Callable

import torch
import torch.nn.functional

SDPA_NAME = "scaled_dot_product_attention"
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


@contextlib.contextmanager
def restored_attention() -> Iterator[None]:
    """Run a block with torch's original ``scaled_dot_product_attention`` installed.

    For the duration of the block ``torch.nn.functional.scaled_dot_product_attention`` is the
    pristine function, so code that looks it up at call time (transformers' ``"sdpa"``
    attention, diffusers' native backend) gets exact, masked attention. On exit, also when the
    block raises, exactly the object that was installed on entry is put back (so a replacement
    made inside the block is undone too). Nesting works, and when nothing is patched the manager
    changes nothing. It also works as a decorator.

    Code that bound the function at import time (``from torch.nn.functional import
    scaled_dot_product_attention``) is not affected.

    The swap is a process-wide attribute assignment. It is not thread-safe with respect to
    another thread that patches or unpatches the function concurrently; other threads that only
    call attention during the block also get torch's original function, which is exact but may
    be slower than SageAttention.

    Returns:
        A context manager yielding ``None``.

    Example:
        >>> with restored_attention():
        ...     sdpa_is_patched()
        False
    """
    current = getattr(torch.nn.functional, SDPA_NAME, MISSING)
    pristine = original_sdpa()
    if current is pristine:
        yield
        return
    setattr(torch.nn.functional, SDPA_NAME, pristine)
    try:
        yield
    finally:
        if current is MISSING:
            with contextlib.suppress(AttributeError):
                delattr(torch.nn.functional, SDPA_NAME)
        else:
            setattr(torch.nn.functional, SDPA_NAME, current)
