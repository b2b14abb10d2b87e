"""An offline demo: a tiny text-to-image model learns drawn shapes while CLIP scores rise.

Everything runs on the CPU in a minute or two with no download: the text-to-image model is a
small MLP over caption words (:class:`ShapesTextToImage`), the training data are the procedural
scenes of :mod:`clip_metric.demos.shapes`, and the scores come from the embedded tiny CLIP
(:mod:`clip_metric.demos.tiny_clip`) through :class:`~clip_metric.ClipScoreCallback`, exactly as a
real training run would use them.
"""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path
from typing import Any, Sequence

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from clip_metric.demos import shapes
from clip_metric.demos.tiny_clip import embedded_model_path
from clip_metric.lightning.callback import ClipScoreCallback

IMAGE_SIZE = 32
MAX_WORDS = 16
NOISE_DIM = 8
_WORD = re.compile(r"[a-z]+")


def caption_vocabulary() -> list[str]:
    """Every word of every caption template, sorted; index 0 is reserved for unknown words."""
    words = set()
    for scene in shapes.all_scenes():
        for template in range(shapes.NUM_TEMPLATES):
            words.update(_WORD.findall(shapes.caption(scene, template)))
    return ["<unk>"] + sorted(words)


class ShapesTextToImage(pl.LightningModule):
    """A text-to-image model for drawn scenes: caption words (in order) + noise -> 32x32 RGB.

    Word order matters ("red circles on a blue background" is not "blue circles on a red
    background"), so word embeddings are concatenated by position rather than pooled.

    Args:
        hidden: width of the MLP.
        lr: Adam learning rate.
    """

    def __init__(self, hidden: int = 512, lr: float = 2e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.vocabulary = caption_vocabulary()
        self._index = {w: i for i, w in enumerate(self.vocabulary)}
        self.embed = nn.Embedding(len(self.vocabulary), 16, padding_idx=0)
        self.net = nn.Sequential(
            nn.Linear(MAX_WORDS * 16 + NOISE_DIM, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, 3 * IMAGE_SIZE * IMAGE_SIZE),
        )

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        ids = torch.zeros(len(prompts), MAX_WORDS, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            words = [self._index.get(w, 0) for w in _WORD.findall(prompt.lower())][:MAX_WORDS]
            ids[row, : len(words)] = torch.tensor(words, dtype=torch.long)
        return ids.to(self.device)

    def forward(self, ids: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        features = torch.cat([self.embed(ids).flatten(1), noise], dim=1)
        return torch.sigmoid(self.net(features)).view(-1, 3, IMAGE_SIZE, IMAGE_SIZE)

    def generate_images(self, prompts: Sequence[str], seeds: Sequence[int]) -> torch.Tensor:
        """Float images in [0, 1], one per prompt; each prompt's noise comes from its seed."""
        noise = torch.stack([torch.randn(NOISE_DIM, generator=torch.Generator().manual_seed(s)) for s in seeds])
        return self(self.tokenize(prompts), noise.to(self.device))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        ids, images = batch
        noise = torch.randn(ids.shape[0], NOISE_DIM, device=self.device)
        loss = nn.functional.mse_loss(self(ids, noise), images.float() / 255.0)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        ids, images = batch
        noise = torch.zeros(ids.shape[0], NOISE_DIM, device=self.device)
        self.log("val/loss", nn.functional.mse_loss(self(ids, noise), images.float() / 255.0))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def scene_dataset(module: ShapesTextToImage, n: int, seed: int) -> TensorDataset:
    """``n`` random scenes (random caption template, jittered drawing) as (word ids, uint8 image)."""
    rng = random.Random(seed)
    scenes = [shapes.random_scene(rng) for _ in range(n)]
    captions = [shapes.caption(s, rng.randrange(shapes.NUM_TEMPLATES)) for s in scenes]
    images = shapes.draw_scenes(scenes, size=IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))
    return TensorDataset(module.tokenize(captions).cpu(), images)


def demo_prompts(n: int, seed: int = 1234) -> list[str]:
    """``n`` evaluation captions of scenes drawn from a generator the training data do not use."""
    rng = random.Random(seed)
    return [shapes.caption(shapes.random_scene(rng), i % shapes.NUM_TEMPLATES) for i in range(n)]


def run_demo(
    output_dir: str | Path = "runs/demo",
    max_epochs: int = 8,
    steps_per_epoch: int = 40,
    batch_size: int = 64,
    num_prompts: int = 64,
    progress: bool = True,
    seed: int = 0,
) -> tuple[list[dict[str, float]], str]:
    """Train :class:`ShapesTextToImage` with :class:`~clip_metric.ClipScoreCallback` on the CPU.

    Returns:
        ``(history, log_dir)``: one row of ``clip/*`` values per evaluation (the first before any
        training), and the TensorBoard log directory.

    Raises:
        ValueError: for non-positive sizes.
    """
    for name, value in (("max_epochs", max_epochs), ("steps_per_epoch", steps_per_epoch),
                        ("batch_size", batch_size), ("num_prompts", num_prompts)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"Expected `{name}` to be a positive int but got {value!r}")
    pl.seed_everything(seed, verbose=False)
    module = ShapesTextToImage()
    train = scene_dataset(module, steps_per_epoch * batch_size, seed=seed)
    val = scene_dataset(module, batch_size, seed=seed + 1)
    callback = ClipScoreCallback(
        embedded_model_path(), prompts=demo_prompts(num_prompts), batch_size=64, precision="32"
    )
    quiet = ["lightning.pytorch", "lightning.fabric"]
    levels = [logging.getLogger(name).level for name in quiet]
    for name in quiet:  # the demo prints its own summary; keep Lightning's tips out of it
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        logger = pl.loggers.TensorBoardLogger(str(output_dir), name="", default_hp_metric=False)
        trainer = pl.Trainer(
            max_epochs=max_epochs,
            accelerator="cpu",
            devices=1,
            logger=logger,
            callbacks=[callback],
            enable_checkpointing=False,
            enable_progress_bar=progress,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            # The training loss every 10 steps, or once an epoch in shorter epochs (Lightning
            # warns about an interval longer than an epoch).
            log_every_n_steps=min(10, steps_per_epoch),
        )
        # One evaluation before training, as the baseline the rising scores are read against.
        trainer.validate(module, DataLoader(val, batch_size=batch_size), verbose=False)
        trainer.fit(module, DataLoader(train, batch_size=batch_size, shuffle=True), DataLoader(val, batch_size=batch_size))
    finally:
        for name, level in zip(quiet, levels):
            logging.getLogger(name).setLevel(level)
    return callback.history, logger.log_dir
