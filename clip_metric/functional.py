"""Pure functions behind the metric: scores from embeddings, score scales, summary statistics.

These hold no state and load no model, so they can be used in any loop and are what the
stateful :class:`~clip_metric.ClipScore` is built on.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any, Literal, NamedTuple, get_args

import numpy as np
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



class ClusterMeans(NamedTuple):
    """Per-prompt means of per-image scores: see :func:`cluster_means`."""

    keys: list
    """The distinct keys, in the order they first occur."""
    means: Tensor
    """``(P,)`` float64: the mean score of each key's images."""
    sizes: Tensor
    """``(P,)`` int64: how many images each key has."""


def prompt_cluster_labels(keys: Sequence[tuple]) -> np.ndarray:
    """One cluster label per key: rows of the same prompt (same prompt id, or same caption) share one.

    Keys are ``(prompt id, prompt, seed)`` (:attr:`clip_metric.records.ScoreRecord.key`): every
    field but the seed names the prompt, and two rows sharing any of them are one prompt (an id
    with a ``-<k>`` image suffix still has its caption). Labels are ``0 .. clusters - 1`` in
    order of first appearance.

    Example:
        >>> prompt_cluster_labels([("p-1", "a fox", 1), ("p-1-2", "a fox", 2), ("p-2", "a cat", 3)]).tolist()
        [0, 0, 1]
    """
    parent: dict[Any, Any] = {}

    def find(node: Any) -> Any:
        root = node
        while parent[root] != root:
            root = parent[root]
        while parent[node] != root:  # path compression
            parent[node], node = root, parent[node]
        return root

    firsts = []
    for index, key in enumerate(keys):
        key = tuple(key) if isinstance(key, (tuple, list)) else (key,)
        names = [(position, value) for position, value in enumerate(key[:-1])] or [("row", index)]
        for name in names:
            parent.setdefault(name, name)
        root = find(names[0])
        for name in names[1:]:
            other = find(name)
            if other != root:
                parent[other] = root
        firsts.append(names[0])
    labels: dict[Any, int] = {}
    return np.asarray([labels.setdefault(find(name), len(labels)) for name in firsts], dtype=np.int64)


def cluster_means(scores: Tensor | Sequence[float], keys: Sequence[Hashable]) -> ClusterMeans:
    """Group per-image scores into one mean per prompt (a cluster: the images of one key).

    Several images of one prompt are not independent samples: they share the prompt's
    difficulty. Means and intervals over prompts are taken over these per-prompt means, which
    weigh every prompt equally, however many images it has (the mean over the library).

    Args:
        scores: ``(N,)`` per-image scores.
        keys: ``N`` hashable keys naming each image's prompt (a library id, or the caption text).

    Returns:
        :class:`ClusterMeans` ``(keys, means, sizes)``, keys in the order they first occur.

    Raises:
        ValueError: if ``scores`` is not 1-D, or its length differs from the number of keys.

    Example:
        >>> import torch
        >>> cluster_means(torch.tensor([0.2, 0.4, 0.3]), ["fox", "fox", "cat"])
        ClusterMeans(keys=['fox', 'cat'], means=tensor([0.3000, 0.3000], dtype=torch.float64), sizes=tensor([2, 1]))
    """
    values = torch.as_tensor(scores).detach().to(device="cpu", dtype=torch.float64)
    keys = list(keys)
    if values.ndim != 1 or values.numel() != len(keys):
        raise ValueError(f"Expected one key per score (a 1-D tensor of scores) but got scores of shape "
                         f"{tuple(values.shape)} and {len(keys)} keys")
    index: dict[Hashable, int] = {}
    groups = torch.tensor([index.setdefault(key, len(index)) for key in keys], dtype=torch.long)
    sizes = torch.bincount(groups, minlength=len(index)) if keys else torch.zeros(0, dtype=torch.long)
    totals = torch.zeros(len(index), dtype=torch.float64).index_add_(0, groups, values)
    return ClusterMeans(list(index), totals / sizes.to(torch.float64), sizes)


def summarize_clustered_scores(
    scores: Tensor | Sequence[float], keys: Sequence[Hashable], prefix: str = DEFAULT_PREFIX
) -> dict[str, Tensor]:
    """Summary statistics of per-image scores where several images may share one prompt.

    ``mean`` is the mean over prompts of the per-prompt means (:func:`cluster_means`: every
    prompt weighs the same), and ``mean_ci`` the half-width of the 95% *t* interval over those
    per-prompt means, with one degree of freedom less than the prompts: the images of one prompt
    share its difficulty, so they are not independent samples. ``prompts`` counts the prompts.
    ``min``, ``max``, ``std`` (population, ``ddof=0``) and ``count`` describe the images. With
    one image per prompt this is :func:`summarize_scores` plus ``prompts``.

    Returns:
        ``{prefix + "mean"|"mean_ci"|"min"|"max"|"std"|"count"|"prompts": 0-dim float64 tensor}``.

    Raises:
        ValueError: as :func:`cluster_means`.

    Example:
        >>> import torch
        >>> stats = summarize_clustered_scores(torch.tensor([0.2, 0.2, 0.4]), ["fox", "fox", "cat"])
        >>> {k: round(float(v), 4) for k, v in stats.items()}
        {'clip/mean': 0.3, 'clip/mean_ci': 1.2706, 'clip/min': 0.2, 'clip/max': 0.4, 'clip/std': 0.0943, 'clip/count': 3.0, 'clip/prompts': 2.0}
    """
    clusters = cluster_means(scores, keys)
    images = summarize_scores(torch.as_tensor(scores).detach().to(device="cpu", dtype=torch.float64), prefix)
    prompts = summarize_scores(clusters.means, prefix)
    out = dict(images)
    for name in ("mean", "mean_ci"):
        out[prefix + name] = prompts[prefix + name]
    out[prefix + "prompts"] = torch.tensor(float(len(clusters.keys)), dtype=torch.float64)
    return out


# ---------------------------------------------------------------------- against reference images
CMMD_SIGMA = 10.0
"""Bandwidth of CMMD's Gaussian kernel on unit-length CLIP image embeddings (Jayasumana et al., 2024)."""
CMMD_SCALE = 1000.0
"""CMMD is reported as 1000 times the squared MMD, as in its authors' code."""
_CMMD_BLOCK = 2048


def _unit_rows64(name: str, embeds: Tensor, min_rows: int = 1) -> Tensor:
    if not isinstance(embeds, Tensor) or embeds.ndim != 2:
        raise ValueError(f"Expected `{name}` to be a 2-D (N, D) tensor of embeddings but got {_describe(embeds)}")
    if embeds.shape[0] < min_rows:
        raise ValueError(f"Expected `{name}` to hold at least {min_rows} embeddings but got {embeds.shape[0]}")
    if not embeds.is_floating_point():
        raise ValueError(f"Expected `{name}` to be a floating-point tensor but got dtype {embeds.dtype}")
    rows = embeds.to(torch.float64)
    if not torch.isfinite(rows).all():
        raise ValueError(f"Expected finite embeddings in `{name}` but got NaN or Inf")
    largest = rows.abs().amax(dim=-1, keepdim=True)
    if rows.shape[1] == 0 or (largest == 0).any():
        raise ValueError(f"Expected non-zero embeddings in `{name}`: a zero vector has no direction to compare")
    rows = rows / largest  # as in _unit_rows: no overflow or underflow in the norm
    rows = rows / rows.norm(dim=-1, keepdim=True)
    return rows if embeds.dtype == torch.float64 else rows.float()


def _describe(value: object) -> str:
    return f"shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__


def _kernel_sum(a: Tensor, b: Tensor, gamma: float, symmetric: bool, block: int) -> float:
    """``sum_ij (exp(-gamma * ||a_i - b_j||^2) - 1)`` in float64, one ``block x block`` tile at a time.

    The products run in the rows' dtype (float32 for float32 rows: the matrix-product speed); each
    tile's distances, ``expm1`` and sum are float64. ``expm1`` keeps the small kernel deviations
    (``|k - 1| <= 2 gamma`` for unit rows) exact where ``k`` itself would round near 1.
    """
    a_norms, b_norms = (a.double() ** 2).sum(1), (b.double() ** 2).sum(1)
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    for i in range(0, a.shape[0], block):
        for j in range(i if symmetric else 0, b.shape[0], block):
            products = (a[i : i + block] @ b[j : j + block].T).double()
            distances = (a_norms[i : i + block, None] + b_norms[None, j : j + block] - 2.0 * products).clamp_(min=0.0)
            tile = torch.expm1(distances.mul_(-gamma)).sum()
            total += tile if not symmetric or i == j else 2.0 * tile
    return float(total)


def cmmd(x: Tensor, y: Tensor, *, sigma: float = CMMD_SIGMA, scale: float = CMMD_SCALE, block_size: int = _CMMD_BLOCK) -> float:
    """CMMD: the maximum mean discrepancy between two sets of CLIP image embeddings.

    As defined by Jayasumana et al., "Rethinking FID: Towards a Better Evaluation Metric for Image
    Generation" (CVPR 2024) and their code: rows scaled to unit length, the Gaussian RBF kernel
    ``k(a, b) = exp(-||a - b||^2 / (2 sigma^2))`` with ``sigma = 10``, the biased
    (minimum-variance) estimator ``mean k(X, X) + mean k(Y, Y) - 2 mean k(X, Y)`` over all pairs,
    diagonals included, times 1000. The estimator is biased upward at small sample sizes (its
    expectation exceeds the population value by about ``(E[1 - k(X, X')] / n + E[1 - k(Y, Y')] / m)``
    times the scale), so compare CMMD values only at equal image counts.

    Computed in ``block_size`` tiles with float64 accumulation: memory beyond the embeddings is a
    few tiles (``block_size**2`` float64 values each), whatever the number of images.

    Args:
        x: ``(N, D)`` embeddings, e.g. of generated images (N >= 1).
        y: ``(M, D)`` embeddings, e.g. of reference images (M >= 1), on the same device.
        sigma: kernel bandwidth (default 10, the definition's).
        scale: multiplier of the squared MMD (default 1000, the definition's).
        block_size: rows per tile.

    Returns:
        The CMMD as a Python float (float64).

    Raises:
        ValueError: if an input is not a 2-D floating-point tensor, is empty, holds non-finite or
            zero rows, or the widths differ; if ``sigma``, ``scale`` or ``block_size`` is not positive.

    Example:
        >>> import torch
        >>> x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
        >>> round(cmmd(x, x), 12)
        0.0
        >>> cmmd(x, x + 1.0) > 0
        True
    """
    x, y = _unit_rows64("x", x), _unit_rows64("y", y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"Expected embeddings of the same width but got {x.shape[1]} and {y.shape[1]}")
    if x.device != y.device:
        raise ValueError(f"Expected `x` and `y` on the same device but got {x.device} and {y.device}")
    for name, value in (("sigma", sigma), ("scale", scale), ("block_size", block_size)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"Expected `{name}` to be a positive finite number but got {value!r}")
    block = int(block_size)
    dtype = torch.promote_types(x.dtype, y.dtype)
    x, y = x.to(dtype), y.to(dtype)
    gamma = 1.0 / (2.0 * float(sigma) ** 2)
    n, m = x.shape[0], y.shape[0]
    # mean(k) - 1 = mean(k - 1): the three constant terms cancel (1 + 1 - 2).
    k_xx = _kernel_sum(x, x, gamma, True, block) / (n * n)
    k_yy = _kernel_sum(y, y, gamma, True, block) / (m * m)
    k_xy = _kernel_sum(x, y, gamma, False, block) / (n * m)
    return float(scale) * (k_xx + k_yy - 2.0 * k_xy)


def image_similarities(x: Tensor, y: Tensor) -> Tensor:
    """Each row of ``x``'s mean cosine similarity to the rows of ``y`` (CLIP-I, per generated image).

    The mean of cosines to unit rows is the cosine's numerator against their mean, so this costs
    one product per row of ``x``, whatever the number of references.

    Args:
        x: ``(N, D)`` embeddings of generated images.
        y: ``(M, D)`` embeddings of reference images.

    Returns:
        A ``(N,)`` float64 tensor in ``[-1, 1]``.

    Raises:
        ValueError: as :func:`cmmd`.

    Example:
        >>> import torch
        >>> image_similarities(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        tensor([0.5000], dtype=torch.float64)
    """
    x, y = _unit_rows64("x", x).double(), _unit_rows64("y", y).double()
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"Expected embeddings of the same width but got {x.shape[1]} and {y.shape[1]}")
    if x.device != y.device:
        raise ValueError(f"Expected `x` and `y` on the same device but got {x.device} and {y.device}")
    return (x @ y.mean(dim=0)).clamp(-1.0, 1.0)


def image_similarity(x: Tensor, y: Tensor) -> float:
    """Subject similarity (CLIP-I, as in DreamBooth): the mean over ``x`` of the mean cosine to ``y``.

    Example:
        >>> import torch
        >>> image_similarity(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0]]))
        0.5
    """
    return float(image_similarities(x, y).mean())
