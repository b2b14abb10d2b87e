"""Reference implementations the tests compare against."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def embedding(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def hf_reference_scores(model_dir: Path, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """Plain Hugging Face path: PIL images through the saved processor, fp32 model, cosine."""
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    pil = [Image.fromarray(np.ascontiguousarray(img.permute(1, 2, 0).numpy())) for img in images]
    pixels = processor(images=pil, return_tensors="pt")["pixel_values"]
    tokens = tokenizer(prompts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        image = embedding(model.get_image_features(pixel_values=pixels))
        text = embedding(model.get_text_features(**tokens))
    image = image / image.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    return (image * text).sum(-1)


def drawn_scenes(n: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """``n`` procedurally drawn scenes (uint8) with their captions: what the embedded model knows."""
    import random

    from clip_metric.demos import shapes

    rng = random.Random(seed)
    scenes = [shapes.random_scene(rng) for _ in range(n)]
    captions = [shapes.caption(scene, i % shapes.NUM_TEMPLATES) for i, scene in enumerate(scenes)]
    return shapes.draw_scenes(scenes, generator=torch.Generator().manual_seed(seed)), captions
