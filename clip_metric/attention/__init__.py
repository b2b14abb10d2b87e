"""Keep CLIP scoring exact when a trainer speeds up attention with SageAttention.

``sageattn`` has no attention-mask argument and quantizes Q/K to int8. The CLIP text encoder
depends on its causal and padding masks, and transformers' ``"sdpa"`` attention looks the torch
function up at call time, so under a global patch CLIP scores are silently wrong.

Three parts: :mod:`~clip_metric.attention.sdpa` runs a block with torch's original attention
(:func:`restored_attention`); :mod:`~clip_metric.attention.policy` applies a policy
(:func:`check_attention`): ``"restore"`` (default; both can be on at once and scores stay exact),
``"strict"`` (fail early) or ``"ignore"``; :mod:`~clip_metric.attention.search` finds and words
what is switched on (:func:`find_sage_attention`).

Example:
    >>> from clip_metric.attention import check_attention, restored_attention
    >>> check_attention("restore")
    []
    >>> with restored_attention():
    ...     pass  # CLIP forward passes here see torch's own scaled_dot_product_attention
"""

from clip_metric.attention.policy import (
    ATTENTION_POLICIES,
    AttentionPolicy,
    SageAttentionConflictError,
    check_attention,
)
from clip_metric.attention.sdpa import original_sdpa, restored_attention, sdpa_is_patched
from clip_metric.attention.search import AttentionFinding, find_sage_attention

__all__ = [
    "ATTENTION_POLICIES",
    "AttentionFinding",
    "AttentionPolicy",
    "SageAttentionConflictError",
    "check_attention",
    "find_sage_attention",
    "original_sdpa",
    "restored_attention",
    "sdpa_is_patched",
]
