"""Builders of small random CLIP models, for tests, benchmarks and scripts.

A model built here is saved with ``save_pretrained`` together with the real CLIP BPE tokenizer the
package ships and a CLIP image processor, so whoever uses it goes through the real loading path
(``from_pretrained`` of a local directory), offline. :data:`ARCHITECTURES` reproduces the shapes of
released checkpoints with random weights: right for timing and numerics, meaningless as scores.

Example:
    >>> import tempfile
    >>> from clip_metric.testing import CLIPArchitecture, build_clip
    >>> tiny = CLIPArchitecture("tiny", image_size=32, patch_size=8, vision=(32, 2, 4), text=(32, 2, 4), projection=32)
    >>> path = build_clip(tempfile.mkdtemp(), tiny)
    >>> all((path / name).is_file() for name in ("config.json", "tokenizer_config.json", "preprocessor_config.json"))
    True
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clip_metric.demos.tiny_clip import TOKENIZER_DIR

__all__ = ["ARCHITECTURES", "CLIPArchitecture", "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "TINY", "build_clip"]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VOCAB_SIZE, BOS_ID, EOS_ID = 49408, 49406, 49407


@dataclass(frozen=True)
class CLIPArchitecture:
    """The shape of a CLIP model: towers as ``(width, layers, heads)``.

    Args:
        name: a label for reports.
        image_size: input resolution (square).
        patch_size: vision patch size.
        vision: ``(width, layers, heads)`` of the image tower.
        text: ``(width, layers, heads)`` of the text tower.
        projection: embedding dimension.
        mlp_ratio: MLP width over tower width.
        reference: the released checkpoint whose architecture this reproduces, if any.
    """

    name: str
    image_size: int
    patch_size: int
    vision: tuple[int, int, int]
    text: tuple[int, int, int]
    projection: int
    mlp_ratio: int = 2
    reference: str = "none"

    def config(self, **text_overrides: Any) -> Any:
        """The ``transformers.CLIPConfig`` (real vocabulary and special tokens unless overridden)."""
        from transformers import CLIPConfig

        def tower(width: int, layers: int, heads: int) -> dict[str, Any]:
            return dict(
                hidden_size=width, intermediate_size=self.mlp_ratio * width, num_hidden_layers=layers,
                num_attention_heads=heads,
            )

        text = dict(
            **tower(*self.text), vocab_size=VOCAB_SIZE, max_position_embeddings=77, bos_token_id=BOS_ID,
            eos_token_id=EOS_ID, pad_token_id=EOS_ID,
        )
        text.update(text_overrides)
        vision = dict(**tower(*self.vision), image_size=self.image_size, patch_size=self.patch_size)
        return CLIPConfig(text_config=text, vision_config=vision, projection_dim=self.projection)


TINY = CLIPArchitecture("tiny (2 layers)", image_size=32, patch_size=8, vision=(32, 2, 4), text=(32, 2, 4), projection=32)
"""A 2-layer, 32-wide model: loads and runs in milliseconds."""

ARCHITECTURES = {
    "tiny": TINY,
    "b32": CLIPArchitecture(
        "ViT-B/32", 224, 32, (768, 12, 12), (512, 12, 8), 512, mlp_ratio=4, reference="openai/clip-vit-base-patch32"
    ),
    "l14-336": CLIPArchitecture(
        "ViT-L/14-336", 336, 14, (1024, 24, 16), (768, 12, 12), 768, mlp_ratio=4,
        reference="openai/clip-vit-large-patch14-336",
    ),
}
"""Architectures by key: ``tiny`` and the shapes of OpenAI's ViT-B/32 and ViT-L/14-336."""


def image_processor(image_size: int) -> Any:
    """A ``CLIPImageProcessor`` as OpenAI's checkpoints ship it, at ``image_size``."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_center_crop=True,
        image_mean=list(OPENAI_CLIP_MEAN),
        image_std=list(OPENAI_CLIP_STD),
        resample=3,  # bicubic
    )


def build_clip(out_dir: str | os.PathLike, architecture: CLIPArchitecture = TINY, seed: int = 0) -> Path:
    """Save a random-weight ``CLIPModel`` with the real tokenizer and a CLIP image processor.

    The global torch RNG is left as it was.

    Returns:
        ``out_dir`` as a path, ready for ``from_pretrained``.
    """
    import torch
    from transformers import CLIPModel, CLIPTokenizerFast

    out = Path(out_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(architecture.config()).eval()
    model.save_pretrained(out)
    del model
    CLIPTokenizerFast.from_pretrained(TOKENIZER_DIR).save_pretrained(out)
    image_processor(architecture.image_size).save_pretrained(out)
    return out
