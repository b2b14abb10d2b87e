"""Pure functions behind the metric: scores from embeddings, score scales, summary statistics.

These hold no state and load no model, so they can be used in any loop and are what the
stateful :class:`~clip_metric.ClipScore` is built on.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import Tensor

from clip_metric.utilities.checks import check_choice
from clip_metric.intervals import half_width
from clip_metric.utilities.constants import DEFAULT_PREFIX, STAT_NAMES

ScoreScale = Literal["cosine", "torchmetrics", "clipscore"]
SCORE_SCALES: tuple[str, ...] = get_args(ScoreScale)


def check_scale(scale: str) -> str:
    """Validate a score-scale name.

    Raises:
        ValueError: if ``scale`` is not one of ``"cosine"``, ``"torchmetrics"``, ``"clipscore"``.

    Example:
        >>> check_scale("clipscore")
        'clipscore'
    """
    return check_choice("scale", scale, SCORE_SCALES)


def cosine_scores(image_embeds: Tensor, text_embeds: Tensor) -> Tensor:
    """Row-wise cosine similarity between image and text embeddings, in float32.

    Args:
        image_embeds: ``(N, D)`` image embeddings (normalised or not).
        text_embeds: ``(N, D)`` text embeddings of the matching prompts.

    Returns:
        A ``(N,)`` float32 tensor of cosines in ``[-1, 1]``.

    Raises:
        ValueError: if the shapes differ or are not 2-D, or an embedding is not finite or is zero.

    Example:
        >>> import torch
        >>> cosine_scores(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]]))
        tensor([0.7071])
    """
    if image_embeds.ndim != 2 or image_embeds.shape != text_embeds.shape:
        raise ValueError(
            "Expected image and text embeddings of the same shape (N, D) but got "
            f"{tuple(image_embeds.shape)} and {tuple(text_embeds.shape)}"
        )
    image_embeds, text_embeds = _unit_rows(image_embeds), _unit_rows(text_embeds)
    return (image_embeds * text_embeds).sum(dim=-1).clamp(-1.0, 1.0)


def _unit_rows(embeds: Tensor) -> Tensor:
    """Rows scaled to unit length in float32, checked finite and non-zero.

    Each row is first divided by its largest magnitude, in its own precision (float64 stays
    float64 until then): the squared norm of a finite row can otherwise overflow float32 (rows
    near 1e20) or underflow to zero (rows near 1e-23), turning a well-defined cosine into 0 or an
    error.
    """
    if embeds.dtype != torch.float64:
        embeds = embeds.float()
    if not torch.isfinite(embeds).all():
        raise ValueError("Expected finite embeddings but got NaN or Inf")
    if embeds.numel() == 0:  # no rows: nothing to scale; no dimensions: no direction at all
        if embeds.shape[0] == 0:
            return embeds.float()
        raise ValueError("Expected non-zero embeddings: a zero vector has no direction to compare")
    largest = embeds.abs().amax(dim=-1, keepdim=True)
    if (largest == 0).any():
        raise ValueError("Expected non-zero embeddings: a zero vector has no direction to compare")
    embeds = (embeds / largest).float()
    return embeds / embeds.norm(dim=-1, keepdim=True)


def scale_scores(cosines: Tensor, scale: str = "cosine") -> Tensor:
    """Put per-sample cosines on one of the usual CLIP-score scales.

    - ``"cosine"``: the raw cosine (typical good text-to-image models: 0.30-0.39).
    - ``"torchmetrics"``: ``100 * max(cos, 0)`` per sample (the scale of torchmetrics'
      ``CLIPScore``, which clamps the *mean* instead; both agree whenever no cosine is negative).
    - ``"clipscore"``: ``2.5 * max(cos, 0)`` per sample (Hessel et al., 2021).

    Example:
        >>> import torch
        >>> scale_scores(torch.tensor([0.3, -0.1]), "clipscore")
        tensor([0.7500, 0.0000])
    """
    check_scale(scale)
    if scale == "torchmetrics":
        return 100.0 * cosines.clamp(min=0.0)
    if scale == "clipscore":
        return 2.5 * cosines.clamp(min=0.0)
    return cosines


def stats_from_moments(
    total: Tensor, total_sq: Tensor, count: Tensor, minimum: Tensor, maximum: Tensor, prefix: str = DEFAULT_PREFIX
) -> dict[str, Tensor]:
    """Summary statistics from accumulated moments (the metric's synced states).

    ``std`` is the population standard deviation (``ddof=0``, as numpy's default); ``mean_ci``
    is the half-width of the 95% *t* interval of the mean (sample standard deviation, see
    :func:`clip_metric.intervals.half_width`; NaN below two samples). With no samples, every
    statistic but ``count`` is NaN.

    Returns:
        ``{prefix + "mean"|"mean_ci"|"min"|"max"|"std"|"count": 0-dim float64 tensor}``.
    """
    n = count.to(torch.float64)
    nan = torch.tensor(math.nan, dtype=torch.float64, device=total.device)
    if count.item() == 0:
        values = [nan, nan, nan, nan, nan]
    else:
        mean = total / n
        var = (total_sq / n - mean * mean).clamp(min=0.0)
        ci = torch.tensor(half_width(total, total_sq, count), dtype=torch.float64, device=total.device)
        values = [mean, ci, minimum, maximum, var.sqrt()]
    out = {prefix + name: value for name, value in zip(STAT_NAMES, values)}
    # A float count: loggers reduce floats, and Lightning warns about integer values.
    out[prefix + "count"] = count.to(torch.float64)
    return out


def summarize_scores(scores: Tensor, prefix: str = DEFAULT_PREFIX) -> dict[str, Tensor]:
    """Mean, its 95% interval's half-width, min, max, std and count of a 1-D tensor of per-sample scores.

    Example:
        >>> import torch
        >>> {k: round(float(v), 4) for k, v in summarize_scores(torch.tensor([0.2, 0.4])).items()}
        {'clip/mean': 0.3, 'clip/mean_ci': 1.2706, 'clip/min': 0.2, 'clip/max': 0.4, 'clip/std': 0.1, 'clip/count': 2.0}
    """
    scores = scores.detach().reshape(-1).to(torch.float64)
    if scores.numel() == 0:
        inf = torch.tensor(math.inf, dtype=torch.float64)
        zero = torch.zeros((), dtype=torch.float64)
        return stats_from_moments(zero, zero, torch.zeros((), dtype=torch.long), inf, -inf, prefix)
    return stats_from_moments(
        scores.sum(), (scores * scores).sum(), torch.tensor(scores.numel()), scores.min(), scores.max(), prefix
    )
