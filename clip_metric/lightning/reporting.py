"""What the callback shows beside the scalars: histogram, best/worst images, per-prompt table.

Loggers are told apart by type (``isinstance``), so subclasses of Lightning's TensorBoard and
W&B loggers get the extras too; any other logger gets the scalars only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from torch import Tensor

from clip_metric.images import standardize_images
from clip_metric.records import ScoreRecord

REPORT_TO = ("all", "tensorboard", "wandb", "none")
THUMBNAIL = 128


def wants_extras(logger: Logger, report_to: str) -> str | None:
    """``"tensorboard"`` or ``"wandb"`` when ``logger`` gets the extras under ``report_to``."""
    if isinstance(logger, TensorBoardLogger) and report_to in ("all", "tensorboard"):
        return "tensorboard"
    if isinstance(logger, WandbLogger) and report_to in ("all", "wandb"):
        return "wandb"
    return None


BestWorst = dict[str, tuple[Tensor, list[int], list[float]]]


def report(
    trainer: Trainer,
    report_to: str,
    prefix: str,
    step: int,
    records: Sequence[ScoreRecord],
    best_worst: BestWorst | None,
    texts: Sequence[str],
) -> None:
    """Send the extras of one evaluation to every logger that takes them (rank 0 only).

    ``texts`` are the library's prompts, by the ids ``best_worst`` refers to.
    """
    for logger in trainer.loggers:
        kind = wants_extras(logger, report_to)
        if kind == "tensorboard":
            _report_tensorboard(logger.experiment, prefix, step, records, best_worst, texts)
        elif kind == "wandb":
            _report_wandb(logger, prefix, step, records, best_worst, texts)


_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


def safe_key(text: str) -> str:
    """``text`` as part of a metric name every logger takes (letters, digits, ``_``, ``-``, ``.``).

    Example:
        >>> safe_key("Fine-grained Detail"), safe_key("Produce & Plants")
        ('Fine-grained_Detail', 'Produce_Plants')
    """
    return _UNSAFE.sub("_", text).strip("_") or "_"


def report_signature(trainer: Trainer, prefix: str, signature: str, step: int) -> None:
    """Log the score signature once per run: TensorBoard text, W&B config, other loggers' hyperparameters."""
    key = f"{prefix}signature"
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_text(key, signature, step)
        elif isinstance(logger, WandbLogger):
            logger.experiment.config.update({key: signature}, allow_val_change=True)
        else:
            logger.log_hyperparams({key: signature})


def _caption(texts: Sequence[str], index: int, score: float) -> str:
    return f"{score:.4f} | {texts[index]}"


def _report_tensorboard(
    writer: Any, prefix: str, step: int, records: Sequence[ScoreRecord], best_worst: BestWorst | None,
    texts: Sequence[str],
) -> None:
    if records:
        writer.add_histogram(f"{prefix}scores", torch.tensor([r.score for r in records], dtype=torch.float32), step)
    header = "| score | prompt | category | seed |\n|---|---|---|---|\n"
    ranked = sorted(records, key=lambda r: r.score)
    table = "".join(
        f"| {r.score:.4f} | {r.prompt.replace('|', '/')} | {r.category or ''} | {r.seed} |\n" for r in ranked
    )
    writer.add_text(f"{prefix}per_prompt", header + table, step)
    for name, (images, ids, values) in (best_worst or {}).items():
        if len(ids):
            writer.add_images(f"{prefix}{name}", images.cpu(), step)
            captions = "\n".join(f"{i + 1}. {_caption(texts, k, v)}" for i, (k, v) in enumerate(zip(ids, values)))
            writer.add_text(f"{prefix}{name}_prompts", captions, step)


def _report_wandb(
    logger: Any, prefix: str, step: int, records: Sequence[ScoreRecord], best_worst: BestWorst | None,
    texts: Sequence[str],
) -> None:
    columns = ["prompt_id", "prompt", "category", "seed", "score"]
    data = [[getattr(r, c) for c in columns] for r in records]
    logger.log_table(key=f"{prefix}per_prompt", columns=columns, data=data, step=step)
    for name, (images, ids, values) in (best_worst or {}).items():
        if len(ids):
            logger.log_image(
                key=f"{prefix}{name}", images=list(images.cpu()), step=step,
                caption=[_caption(texts, k, v) for k, v in zip(ids, values)],
            )


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

    def gather(self, trainer: Trainer, scores_by_id: dict[int, float]) -> BestWorst:
        """The global best and worst ``k``: ``{"best"|"worst": (images, ids, scores)}``; a collective."""
        size = 2 * self.k
        images = torch.zeros(size, 3, THUMBNAIL, THUMBNAIL)
        ids = torch.full((size,), -1, dtype=torch.long)
        cosines = torch.full((size,), math.nan, dtype=torch.float64)
        n = len(self.ids)
        if n:
            images[:n], ids[:n], cosines[:n] = self.images, self.ids, self.cosines
        device = trainer.strategy.root_device
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
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def _extremes(scores: Tensor, k: int) -> Tensor:
    if scores.numel() <= 2 * k:
        return torch.arange(scores.numel())
    order = torch.argsort(scores)
    return torch.cat([order[:k], order[-k:]])
