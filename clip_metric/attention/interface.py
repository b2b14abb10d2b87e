"""The per-model route: CLIP's attention layers call torch's own kernel through their own name.

transformers lets a model choose its attention function by name from its registry (the
attention interface). :func:`use_exact_attention` registers :func:`exact_sdpa_attention` under
:data:`EXACT_ATTENTION` and switches a model from ``"sdpa"`` to it, so neither a global patch of
``torch.nn.functional.scaled_dot_product_attention`` nor a re-registered ``"sdpa"`` reaches that
model, and nothing process-wide changes while it runs. Models that cannot be switched are left
as they are; :func:`~clip_metric.attention.restored_attention` is the fallback for them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch

from clip_metric.attention.sdpa import original_sdpa, restored_attention

__all__ = ["EXACT_ATTENTION", "exact_sdpa_attention", "use_exact_attention"]

EXACT_ATTENTION = "clip_metric_sdpa"
"""The name :func:`exact_sdpa_attention` is registered under in transformers' attention interface."""


def exact_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' ``"sdpa"`` attention, calling torch's own kernel whatever is installed.

    For encoder layers (CLIP, SigLIP) it passes the kernel exactly what transformers' own
    ``"sdpa"`` function passes on 4.57 and 5.x, so the outputs are bit-identical. Cases it does
    not reproduce (grouped key/value heads, position biases, causal attention over a longer
    key) run transformers' own function inside :func:`restored_attention` instead.

    Args:
        module: the attention layer.
        query: ``(batch, heads, q_len, dim)``.
        key: ``(batch, heads, kv_len, dim)``.
        value: ``(batch, heads, kv_len, dim)``.
        attention_mask: a boolean or additive mask, or ``None``.
        dropout: dropout probability.
        scaling: softmax scale.
        is_causal: causal attention; ``None`` reads the layer's ``is_causal`` attribute.
        kwargs: further arguments transformers passes to attention functions.

    Returns:
        ``(output, None)`` with the output as ``(batch, q_len, heads, dim)``.
    """
    causal = bool(getattr(module, "is_causal", True) if is_causal is None else is_causal)
    if (
        getattr(module, "num_key_value_groups", 1) > 1
        or kwargs.get("position_bias") is not None
        or (causal and key.shape[2] != query.shape[2])
    ):
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        with restored_attention():
            return sdpa_attention_forward(
                module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal,
                **kwargs,
            )
    if attention_mask is not None and attention_mask.ndim == 4:
        attention_mask = attention_mask[:, :, :, : key.shape[-2]]
    # The kernel's causal flag only without a mask, as transformers decides it.
    causal = query.shape[2] > 1 and attention_mask is None and causal
    output = original_sdpa()(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, is_causal=causal
    )
    return output.transpose(1, 2).contiguous(), None


def _attention_configs(model: Any) -> list[Any]:
    """The distinct configs of a model and its submodules that name an attention implementation."""
    configs: dict[int, Any] = {}
    try:
        for module in model.modules():
            config = getattr(module, "config", None)
            if isinstance(getattr(config, "_attn_implementation", None), str):
                configs.setdefault(id(config), config)
    except Exception:  # noqa: BLE001 - a duck-typed model may not be a module tree
        return []
    return list(configs.values())


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    # transformers 4.57 warns about sub-configs it sets "in the dark"; the outcome is checked here.
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def use_exact_attention(model: Any) -> bool:
    """Switch a transformers model from ``"sdpa"`` to :func:`exact_sdpa_attention`.

    Only a model whose every attention config is ``"sdpa"`` (or already switched) is switched,
    with ``model.set_attn_implementation(EXACT_ATTENTION)``; the change is permanent (but not
    saved by ``save_pretrained``), and calling this again registers the function again (needed
    after unpickling in a new process). Eager,
    flash or mixed models, models without the attention interface and models transformers
    refuses to switch are left as they are. Never raises.

    Args:
        model: a transformers model (``CLIPModel``, ``SiglipModel``, ...) or anything else.

    Returns:
        Whether every attention layer of ``model`` now runs :func:`exact_sdpa_attention`.

    Example:
        >>> from clip_metric.demos import embedded_model_path
        >>> from transformers import CLIPModel
        >>> model = CLIPModel.from_pretrained(embedded_model_path())
        >>> use_exact_attention(model), model.config.text_config._attn_implementation
        (True, 'clip_metric_sdpa')
    """
    configs = _attention_configs(model)
    implementations = {config._attn_implementation for config in configs}
    if not implementations or not implementations <= {"sdpa", EXACT_ATTENTION}:
        return False
    try:
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
        from transformers.modeling_utils import AttentionInterface

        # Also for a model switched already: a model unpickled in a new process needs the names.
        AttentionInterface.register(EXACT_ATTENTION, exact_sdpa_attention)
        # transformers 5 builds masks by implementation name and skips unknown names.
        AttentionMaskInterface.register(EXACT_ATTENTION, sdpa_mask)
        if implementations != {EXACT_ATTENTION}:
            with _quiet_logger("transformers.modeling_utils"):
                model.set_attn_implementation(EXACT_ATTENTION)
    except Exception:  # noqa: BLE001 - not switchable: the caller falls back to the process-wide swap
        return False
    return all(config._attn_implementation == EXACT_ATTENTION for config in configs)
