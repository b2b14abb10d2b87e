"""Small random CLIP-family models saved to disk, so tests go through ``from_pretrained``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from clip_metric.demos import TOKENIZER_DIR
from clip_metric.testing import TINY, build_clip

__all__ = ["TINY_TEXT_CONFIG", "TOKENIZER_DIR", "build_tiny_clip"]

# The text tower of TINY, for models built by hand (e.g. a diffusion pipeline's text encoder).
TINY_TEXT_CONFIG = TINY.config().text_config.to_dict()
TINY_TEXT_CONFIG = {
    k: TINY_TEXT_CONFIG[k]
    for k in (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "max_position_embeddings", "bos_token_id", "eos_token_id", "pad_token_id",
    )
}


def build_tiny_clip(out_dir: Path, image_size: int = 32, patch_size: int = 8, seed: int = 0) -> Path:
    """A random 2-layer CLIPModel with the real tokenizer and a CLIP image processor."""
    architecture = dataclasses.replace(TINY, image_size=image_size, patch_size=patch_size)
    return build_clip(out_dir, architecture, seed=seed)
