"""``sageattn`` stand-in: exact unmasked attention on any device and dtype.

The real kernel needs CUDA fp16/bf16 and quantizes Q/K to int8; this one calls torch's own
attention so tests run on CPU in fp32. What it shares with the real one is the signature and the
fact that an attention mask is swallowed by ``**kwargs`` and never applied.
"""

from __future__ import annotations

from typing import Any

import torch


def sageattn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    tensor_layout: str = "HND",
    is_causal: bool = False,
    sm_scale: float | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """Attention over ``(batch, heads, seq, dim)`` (``"HND"``) or ``(batch, seq, heads, dim)`` (``"NHD"``).

    Args:
        q: queries.
        k: keys.
        v: values.
        tensor_layout: ``"HND"`` or ``"NHD"``.
        is_causal: apply a causal mask.
        sm_scale: softmax scale; ``None`` means ``1 / sqrt(dim)``.
        **kwargs: accepted and ignored, like the real kernel's extra options.

    Returns:
        The attention output in the layout of ``q``.

    Raises:
        ValueError: for an unknown ``tensor_layout``.
    """
    if tensor_layout not in ("HND", "NHD"):
        raise ValueError(f"unknown tensor_layout {tensor_layout!r}")
    if tensor_layout == "NHD":
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    out = torch._C._nn.scaled_dot_product_attention(q, k, v, is_causal=is_causal, scale=sm_scale)
    return out.transpose(1, 2) if tensor_layout == "NHD" else out
