"""A bar over the prompts of an evaluation, drawn by the trainer's own progress bar.

TQDM and Rich bars get a line of their own below Lightning's; with another progress bar, or
none, nothing is drawn (the callback still logs a start and a result line). Only rank 0 draws.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

from clip_metric.lightning.namespace import lightning_classes


@contextlib.contextmanager
def prompt_progress(trainer: Trainer, total: int, description: str) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; the bar closes on exit. A no-op off rank 0, without a bar or for ``total=0``."""
    bar = trainer.progress_bar_callback
    if not trainer.is_global_zero or bar is None or not bar.is_enabled or total <= 0:
        yield lambda n: None
        return
    # The bars of either Lightning namespace (lightning.pytorch, pytorch_lightning).
    if isinstance(bar, lightning_classes("TQDMProgressBar")):
        # Lightning's own bars hold lines 2p (main) and 2p + 1 (validation inside fit).
        position = 2 * bar.process_position + 1 + int(trainer.state.fn == "fit" and trainer.validating)
        tqdm = Tqdm(
            desc=description, total=total, position=position, leave=False, dynamic_ncols=True, file=sys.stdout,
            unit="prompt",
        )
        try:
            yield tqdm.update
        finally:
            tqdm.close()
        return
    progress = getattr(bar, "progress", None) if isinstance(bar, lightning_classes("RichProgressBar")) else None
    if progress is None:
        yield lambda n: None
        return
    task = progress.add_task(description, total=total)

    def advance(n: int) -> None:
        progress.update(task, advance=n)
        # Lightning's Rich bar redraws only when told; a batch of images takes long enough to redraw each time.
        bar.refresh(hard=True)

    bar.refresh(hard=True)
    try:
        yield advance
    finally:
        progress.remove_task(task)
        bar.refresh(hard=True)
