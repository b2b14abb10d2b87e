"""Shared fixtures: tiny CLIP-family models with random weights and the real CLIP tokenizer.

They are saved with ``save_pretrained`` to a temporary directory so the real loading path
(``from_pretrained`` of a local directory) is what the tests exercise. No network is used.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

TOKENIZER_DIR = Path(__file__).resolve().parents[1] / "clip_metric" / "assets" / "tiny-clip"
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


@pytest.fixture(autouse=True)
def _fresh_ddp_port():
    """Each test's multi-process launch picks its own free port.

    Lightning's launchers write MASTER_PORT into this process's environment and later launches
    reuse it, so a second process group could try a port the previous one still holds.
    """
    before = os.environ.get("MASTER_PORT")
    yield
    if before is None:
        os.environ.pop("MASTER_PORT", None)
    else:
        os.environ["MASTER_PORT"] = before


# A 2-layer, 32-wide CLIP text tower over the real vocabulary and special tokens.
TINY_TEXT_CONFIG = dict(
    vocab_size=49408,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=77,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=49407,
)


def build_tiny_clip(out_dir: Path, image_size: int = 32, patch_size: int = 8, seed: int = 0) -> Path:
    """Save a random 2-layer CLIPModel with the real tokenizer and a CLIP image processor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

    config = CLIPConfig(
        text_config=TINY_TEXT_CONFIG,
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=image_size,
            patch_size=patch_size,
        ),
        projection_dim=32,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    model.save_pretrained(out_dir)
    CLIPTokenizerFast.from_pretrained(TOKENIZER_DIR).save_pretrained(out_dir)
    CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
        resample=3,
    ).save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture()
def uint8_images() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (6, 3, 48, 64), dtype=torch.uint8, generator=generator)


PROMPTS = [
    "a red circle on a blue background",
    "a photo of a cat",
    "two green squares",
    "an astronaut riding a horse on the moon",
    "a bowl of soup that looks like a monster",
    "the word 'hello' written in the sand",
]
