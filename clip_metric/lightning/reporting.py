"""What the callback shows beside the scalars: histogram, best/worst images, per-prompt table.

Loggers are told apart by type (``isinstance``, against the classes of both Lightning
namespaces), so subclasses of Lightning's TensorBoard and W&B loggers get the extras too; any
other logger gets the scalars only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import Logger

from clip_metric.lightning.namespace import lightning_classes
from clip_metric.records import ScoreRecord
from clip_metric.samples import BestWorst


def _is_tensorboard(logger: Logger) -> bool:
    return isinstance(logger, lightning_classes("TensorBoardLogger"))


def _is_wandb(logger: Logger) -> bool:
    return isinstance(logger, lightning_classes("WandbLogger"))


def wants_extras(logger: Logger, report_to: str) -> str | None:
    """``"tensorboard"`` or ``"wandb"`` when ``logger`` gets the extras under ``report_to``."""
    if _is_tensorboard(logger) and report_to in ("all", "tensorboard"):
        return "tensorboard"
    if _is_wandb(logger) and report_to in ("all", "wandb"):
        return "wandb"
    return None


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


def report_signature(trainer: Trainer, prefix: str, signature: str, step: int) -> None:
    """Log the score signature once per run: TensorBoard text, W&B config, other loggers' hyperparameters."""
    key = f"{prefix}signature"
    for logger in trainer.loggers:
        if _is_tensorboard(logger):
            logger.experiment.add_text(key, signature, step)
        elif _is_wandb(logger):
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
