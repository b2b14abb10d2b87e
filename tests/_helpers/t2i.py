"""A tiny text-to-image LightningModule for the callback tests.

It renders a prompt as sigmoid(decoder(bag of word embeddings) + seeded noise). Generation
deliberately draws from every global RNG, so the tests can tell whether the callback restores
them, and records whether it ran in eval mode.
"""

from __future__ import annotations

import random

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from clip_metric.prompts import prompt_seed

VOCAB = 512
SIZE = 32


def word_ids(prompt: str) -> list[int]:
    return [prompt_seed(word) % VOCAB for word in prompt.lower().split()]


class TinyTextToImage(pl.LightningModule):
    def __init__(self, lr: float = 0.05):
        super().__init__()
        self.save_hyperparameters()
        self.embed = torch.nn.EmbeddingBag(VOCAB, 16, mode="mean")
        self.dropout = torch.nn.Dropout(0.1)
        self.decoder = torch.nn.Linear(16, 3 * SIZE * SIZE)
        self.generate_calls: list[tuple[bool, bool]] = []

    def render(self, prompts, noise):
        ids = [torch.tensor(word_ids(p)) for p in prompts]
        offsets = torch.tensor([0] + [len(i) for i in ids[:-1]]).cumsum(0)
        features = self.dropout(self.embed(torch.cat(ids).to(self.device), offsets.to(self.device)))
        return torch.sigmoid(self.decoder(features).view(-1, 3, SIZE, SIZE) + noise)

    def generate_images(self, prompts, seeds):
        # Touch every global generator: a callback that does not restore them changes training.
        random.random(), np.random.rand(), torch.rand(3)
        self.generate_calls.append((self.training, torch.is_grad_enabled()))
        noise = torch.stack([torch.randn(3, SIZE, SIZE, generator=torch.Generator().manual_seed(s)) for s in seeds])
        return self.render(prompts, 0.1 * noise.to(self.device))

    def training_step(self, batch, batch_idx):
        (x,) = batch
        target = torch.rand(x.shape[0], 3, SIZE, SIZE, device=self.device)  # uses the global RNG
        images = self.render(["a red circle"] * x.shape[0], 0.0)
        loss = torch.nn.functional.mse_loss(images, target) + 0.0 * x.sum()
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        (x,) = batch
        loss = self.render(["a blue square"], 0.0).mean() + 0.0 * x.sum()
        self.log("val_loss", loss)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.arange(16.0).view(16, 1)), batch_size=4)

    def val_dataloader(self):
        return DataLoader(TensorDataset(torch.arange(4.0).view(4, 1)), batch_size=2)
