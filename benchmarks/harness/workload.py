"""What is measured on: random-weight models of the released architectures, images and prompts.

Models use the real CLIP configurations with random weights (the same FLOPs as the released
checkpoints), saved with ``save_pretrained`` together with the real CLIP tokenizer and a CLIP
image processor, and loaded from that directory the way users load them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from clip_metric.testing import ARCHITECTURES, CLIPArchitecture, build_clip


@dataclass(frozen=True)
class ModelSpec:
    key: str
    architecture: CLIPArchitecture

    @property
    def name(self) -> str:
        return self.architecture.name

    @property
    def reference(self) -> str:
        return self.architecture.reference

    @property
    def image_size(self) -> int:
        return self.architecture.image_size


SPECS = {key: ModelSpec(key, architecture) for key, architecture in ARCHITECTURES.items()}


def build_model_dir(spec: ModelSpec, out_dir: Path, seed: int = 0) -> Path:
    """Save a random-weight CLIPModel of ``spec`` with the real tokenizer and a CLIP image processor."""
    return build_clip(out_dir, spec.architecture, seed=seed)


def make_images(n: int, size: tuple[int, int], odd: tuple[int, int], seed: int = 0) -> list[Tensor]:
    """``n`` smooth random uint8 images ``(3, H, W)``: ``size``, except every 16th (from the 4th) is ``odd``."""
    generator = torch.Generator().manual_seed(seed)
    images = []
    for index in range(n):
        height, width = odd if index % 16 == 3 else size
        low = torch.rand(1, 3, 8, 8, generator=generator)
        image = F.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)[0]
        image = image + 0.08 * torch.randn(3, height, width, generator=generator)
        images.append(image.clamp(0, 1).mul(255).round().to(torch.uint8))
    return images


_LIBRARY: list[str] = []


def library_prompts(n: int) -> list[str]:
    """The package's built-in prompt library, cycled to ``n`` prompts (the repeated scenario)."""
    if not _LIBRARY:
        from clip_metric.prompts import builtin_prompts

        _LIBRARY.extend(p.text for p in builtin_prompts())
    return [_LIBRARY[i % len(_LIBRARY)] for i in range(n)]


def fresh_prompts(n: int, tag: str) -> list[str]:
    """``n`` prompts that no other pass uses (the fresh scenario)."""
    return [f"{text}, take {tag}-{i}" for i, text in enumerate(library_prompts(n))]


@dataclass
class Batch:
    images: Tensor | list[Tensor]  # a (N, 3, H, W) uint8 tensor when equally sized, else a list of (3, H, W)
    prompts: list[str]


def make_batches(images: Sequence[Tensor], prompts: Sequence[str], batch_size: int) -> list[Batch]:
    batches = []
    for start in range(0, len(images), batch_size):
        chunk = list(images[start : start + batch_size])
        same = all(image.shape == chunk[0].shape for image in chunk)
        batches.append(Batch(torch.stack(chunk) if same else chunk, list(prompts[start : start + batch_size])))
    return batches


def chunks(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[start : start + size]) for start in range(0, len(items), size)]
