"""Keep CLIP scoring exact when a trainer speeds up attention with SageAttention.

``sageattn`` has no attention-mask argument and quantizes Q/K to int8. The CLIP text encoder
depends on its causal and padding masks, and transformers' ``"sdpa"`` attention goes through two
process-wide places a trainer may patch (torch's ``scaled_dot_product_attention`` and
transformers' registered ``"sdpa"`` function), so under such a patch CLIP scores are silently
wrong.

The parts: :mod:`~clip_metric.attention.interface` switches a CLIP model to its own exact
attention function through transformers' attention interface (:func:`use_exact_attention`);
:mod:`~clip_metric.attention.sdpa` runs a block with the original functions put back
(:func:`restored_attention`), the fallback for models that cannot be switched;
:mod:`~clip_metric.attention.policy` applies a policy (:func:`check_attention`): ``"restore"``
(default; both can be on at once and scores stay exact), ``"strict"`` (fail early) or
``"ignore"``; :mod:`~clip_metric.attention.search` finds and words what is switched on
(:func:`find_sage_attention`).

Example:
    >>> from clip_metric.attention import check_attention, restored_attention
    >>> check_attention("restore")
    []
    >>> with restored_attention():
    ...     pass  # CLIP forward passes here see torch's and transformers' own attention
"""

from clip_metric.attention.interface import EXACT_ATTENTION, exact_sdpa_attention, use_exact_attention
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
    "EXACT_ATTENTION",
    "AttentionFinding",
    "AttentionPolicy",
    "SageAttentionConflictError",
    "check_attention",
    "exact_sdpa_attention",
    "find_sage_attention",
    "original_sdpa",
    "restored_attention",
    "sdpa_is_patched",
    "use_exact_attention",
]
