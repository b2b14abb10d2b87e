"""Thumbnails of the best- and worst-scored samples of an evaluation, kept small on every rank."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from clip_metric.images import standardize_images

THUMBNAIL = 128
"""Side of the square thumbnails kept for the image grids."""

BestWorst = dict[str, tuple[Tensor, list[int], list[float]]]
"""``{"best"|"worst": (thumbnails, prompt indices, scores)}``."""


class Candidates:
    """Thumbnails of this rank's best and worst samples, merged across ranks on demand.

    The global best k are among the union of every rank's best k, so each rank keeps only 2k
    small images however many prompts it renders. Samples are ranked by cosine; the captions
    take their values from the metric's per-sample scores (the scale is applied once, there).
    """

    def __init__(self, k: int) -> None:
        self.k = k
        self.images: Tensor | None = None
        self.ids = torch.zeros(0, dtype=torch.long)
        self.cosines = torch.zeros(0, dtype=torch.float64)

    def add(self, images: Any, value_range: tuple[float, float], ids: Sequence[int], cosines: Tensor) -> None:
        batches = standardize_images(images, value_range)
        thumbs = torch.cat([F.interpolate(b, size=(THUMBNAIL, THUMBNAIL), mode="bilinear", antialias=True) for b in batches])
        images_all = thumbs.cpu() if self.images is None else torch.cat([self.images, thumbs.cpu()])
        ids_all = torch.cat([self.ids, torch.as_tensor(ids, dtype=torch.long)])
        cosines_all = torch.cat([self.cosines, cosines.detach().cpu().double()])
        keep = _extremes(cosines_all, self.k)
        self.images, self.ids, self.cosines = images_all[keep], ids_all[keep], cosines_all[keep]

    def gather(self, scores_by_id: dict[int, float], device: torch.device | str = "cpu") -> BestWorst:
        """The global best and worst ``k``: ``{"best"|"worst": (images, ids, scores)}``; a collective.

        ``device``: where the collective runs (the CUDA device under NCCL, the CPU under gloo).
        """
        size = 2 * self.k
        images = torch.zeros(size, 3, THUMBNAIL, THUMBNAIL)
        ids = torch.full((size,), -1, dtype=torch.long)
        cosines = torch.full((size,), math.nan, dtype=torch.float64)
        n = len(self.ids)
        if n:
            images[:n], ids[:n], cosines[:n] = self.images, self.ids, self.cosines
        images, ids, cosines = (_all_gather(t.to(device)).cpu() for t in (images, ids, cosines))
        valid = ids >= 0
        images, ids, cosines = images[valid], ids[valid], cosines[valid]
        order = torch.argsort(cosines, descending=True)
        best, worst = order[: self.k], torch.flip(order, [0])[: self.k]
        return {
            name: (images[sel], ids[sel].tolist(), [scores_by_id[i] for i in ids[sel].tolist()])
            for name, sel in (("best", best), ("worst", worst))
        }


def _all_gather(tensor: Tensor) -> Tensor:
    """Every rank's ``tensor`` (same shape on each), concatenated in rank order; a collective.

    ``torch.distributed`` directly, as the metric's own sync does: the strategy's ``all_gather``
    goes through a deprecated autograd-aware gather that warns on every rank.
    """
    from clip_metric.distributed import is_distributed

    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def _extremes(scores: Tensor, k: int) -> Tensor:
    if scores.numel() <= 2 * k:
        return torch.arange(scores.numel())
    order = torch.argsort(scores)
    return torch.cat([order[:k], order[-k:]])
