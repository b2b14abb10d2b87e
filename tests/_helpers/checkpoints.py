"""Stand-ins for consecutive checkpoints of a text-to-image model, for the evaluation-loop tests.

``checkpoint(k)`` renders each prompt from its seed: a base image of the seed plus ``k`` times a
second noise of the seed, so checkpoint ``k + 1`` scores close to checkpoint ``k`` on the same
prompt and seed (a paired change) and differently on another prompt.
"""

from __future__ import annotations

import torch

PROMPTS = [
    f"a photo of {n} {color} {shape}s on a {place}"
    for n in ("one", "two", "three", "four", "five")
    for color in ("red", "green", "blue", "yellow", "black")
    for shape in ("cube", "ball", "cone", "ring")
    for place in ("table", "beach")
]  # 200 prompts


def checkpoint(k: float, size: int = 32, seed_offset: int = 0):
    """``generate(prompts, seeds)`` of checkpoint ``k``; a ``seed_offset`` renders unrelated images."""

    def generate(prompts: list[str], seeds: list[int]) -> torch.Tensor:
        images = []
        for seed in seeds:
            gen = torch.Generator().manual_seed(seed + seed_offset)
            base = torch.randn(3, size, size, generator=gen)
            drift = torch.randn(3, size, size, generator=gen)
            images.append(torch.sigmoid(base + 0.3 * k * drift))
        return torch.stack(images)

    return generate
