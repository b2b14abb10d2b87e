"""Replacements for ``torch.nn.functional.scaled_dot_product_attention``, as trainers write them.

Each reaches ``sageattention.sageattn`` by a different route (a global name, a module attribute,
a closure, an import inside the function, an attribute of a callable object) so the detection in
``clip_metric.attention`` can be tested against each. ``logging_sdpa`` is a replacement that has
nothing to do with SageAttention. ``register_sage_sdpa`` and ``assign_sage_sdpa`` replace
transformers' own ``"sdpa"`` attention function instead, the two ways its registry allows.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import sageattention
import torch
from sageattention import sageattn

_TORCH_SDPA = torch._C._nn.scaled_dot_product_attention
calls: list[str] = []


def sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
    """The usual global patch: the mask is dropped on the floor."""
    calls.append("sdpa")
    return sageattn(q, k, v, is_causal=is_causal, sm_scale=scale)


def sdpa_module_attribute(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
    """Calls the kernel as an attribute of the imported package."""
    return sageattention.sageattn(q, k, v, is_causal=is_causal, sm_scale=scale)


@functools.wraps(_TORCH_SDPA)
def sdpa_wraps_torch(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
    """Looks like torch's function (name, module, ``__wrapped__``) but runs the Sage kernel."""
    return sageattn(q, k, v, is_causal=is_causal, sm_scale=scale)


def sdpa_local_import(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
    """Imports the kernel lazily, inside the call."""
    from sageattention import sageattn as kernel

    return kernel(q, k, v, is_causal=is_causal, sm_scale=scale)


def make_closure_sdpa(kernel: Callable[..., Any]) -> Callable[..., Any]:
    """Builds a replacement that holds the kernel in a closure cell."""

    def closure_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
        return kernel(q, k, v, is_causal=is_causal, sm_scale=scale)

    return closure_sdpa


class KernelCaller:
    """A callable object holding the kernel in an attribute."""

    def __init__(self, kernel: Callable[..., Any]) -> None:
        self.kernel = kernel

    def __call__(self, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
        return self.kernel(q, k, v, is_causal=is_causal, sm_scale=scale)


def logging_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
    """A replacement unrelated to SageAttention: counts calls, then runs torch's own attention."""
    calls.append("logging_sdpa")
    return _TORCH_SDPA(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, **kw)


class SageAttnProcessor:
    """A custom diffusers-style processor named after the kernel."""


class FastProcessor:
    """A custom diffusers-style processor whose ``__call__`` runs the Sage kernel."""

    def __call__(self, attn, hidden_states, *args, **kwargs):
        return sageattn(hidden_states, hidden_states, hidden_states)


def sage_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kw):
    """transformers' ``"sdpa"`` attention function with the kernel swapped in: the mask is dropped."""
    calls.append("sage_attention_forward")
    is_causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
    is_causal = query.shape[2] > 1 and attention_mask is None and is_causal
    output = sageattn(query, key, value, is_causal=is_causal, sm_scale=scaling)
    return output.transpose(1, 2).contiguous(), None


def register_sage_sdpa() -> None:
    """Every model with ``attn_implementation="sdpa"`` now runs the kernel (class-wide registry)."""
    from transformers import AttentionInterface

    AttentionInterface.register("sdpa", sage_attention_forward)


def assign_sage_sdpa() -> None:
    """The same through the shared registry instance."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    ALL_ATTENTION_FUNCTIONS["sdpa"] = sage_attention_forward
