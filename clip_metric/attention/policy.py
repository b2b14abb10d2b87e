"""The attention policy applied before CLIP scoring: restore, strict or ignore."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

import torch

from clip_metric.attention.search import AttentionFinding, find_sage_attention

AttentionPolicy = Literal["restore", "strict", "ignore"]
ATTENTION_POLICIES: tuple[str, ...] = get_args(AttentionPolicy)

class SageAttentionConflictError(RuntimeError):
    """Raised by the ``"strict"`` attention policy when SageAttention is active.

    Args:
        findings: what was found; also available as the ``findings`` attribute.

    Example:
        >>> error = SageAttentionConflictError([AttentionFinding("config", "x")])
        >>> isinstance(error, RuntimeError), len(error.findings)
        (True, 1)
    """

    def __init__(self, findings: list[AttentionFinding]) -> None:
        self.findings = list(findings)
        super().__init__(_conflict_message(self.findings))


def check_attention(
    policy: AttentionPolicy,
    module: torch.nn.Module | None = None,
    config: Mapping[str, Any] | None = None,
) -> list[AttentionFinding]:
    """Apply an attention policy before CLIP scoring.

    Args:
        policy: ``"restore"`` returns the findings (callers log them once at info level on the
            ``"clip_metric"`` logger and score with exact attention, see
            :class:`~clip_metric.encoder.ClipEncoder`);
            ``"strict"`` raises when anything is found (including a replacement of torch's or
            transformers' attention that is not recognised as SageAttention); ``"ignore"``
            returns ``[]`` without looking.
        module: a model to inspect (see :func:`find_sage_attention`).
        config: a trainer configuration (see :func:`find_sage_attention`).

    Returns:
        The findings (``[]`` under ``"ignore"`` and whenever nothing is found).

    Raises:
        ValueError: if ``policy`` is not one of ``"restore"``, ``"strict"``, ``"ignore"``.
        SageAttentionConflictError: under ``"strict"`` when anything is found; the message
            lists the findings and names both ways out (disable SageAttention, or use
            ``attention_policy='restore'``).

    Example:
        >>> check_attention("strict", config={"attention_mechanism": "diffusers"})
        []
    """
    if not isinstance(policy, str) or policy not in ATTENTION_POLICIES:
        raise ValueError(f"Expected `attention_policy` to be one of {ATTENTION_POLICIES} but got {policy!r}")
    if policy == "ignore":
        return []
    findings = find_sage_attention(module=module, config=config)
    if policy == "strict" and findings:
        raise SageAttentionConflictError(findings)
    return findings


# --------------------------------------------------------------------------------------------
# Messages


def _conflict_message(findings: list[AttentionFinding]) -> str:
    lines = [f"  - [{finding.source}] {finding.detail}" for finding in findings]
    return (
        "attention_policy='strict' and SageAttention (or another replacement of attention) "
        "is active; CLIP scores computed through it would be silently wrong (SageAttention ignores "
        "the causal and padding masks the CLIP text encoder relies on and quantizes Q/K to int8):\n"
        + "\n".join(lines)
        + "\nEither disable SageAttention (attention_mechanism / set_attention_backend / the "
        "global scaled_dot_product_attention patch / the re-registered transformers \"sdpa\" "
        "attention function), or set attention_policy='restore' on ClipScore/ClipScoreCallback "
        "(the default: CLIP scoring then runs with the original attention while SageAttention "
        "stays on for training), or set evaluation_type='none' to skip CLIP scoring."
    )
