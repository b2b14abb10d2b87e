import json
import random

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

from clip_metric.demos import shapes
from clip_metric.demos.tiny_clip import EMBEDDED_MODEL_DIR, embedded_model_path

# Training draws from seed 0 and its built-in evaluation from seed 10000; this one is unseen.
HELD_OUT_SEED = 20240917
N_PAIRS = 400


def _embedding(output) -> torch.Tensor:
    # transformers 5 returns an output object, 4.x a tensor.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@pytest.fixture(scope="module")
def model():
    return CLIPModel.from_pretrained(embedded_model_path()).eval()


@pytest.fixture(scope="module")
def tokenizer():
    return CLIPTokenizerFast.from_pretrained(embedded_model_path())


@pytest.fixture(scope="module")
def processor():
    return CLIPImageProcessor.from_pretrained(embedded_model_path())


def test_path_and_files():
    path = embedded_model_path()
    assert isinstance(path, str)
    assert EMBEDDED_MODEL_DIR.is_dir()
    assert str(EMBEDDED_MODEL_DIR) == path
    for name in (
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
    ):
        assert (EMBEDDED_MODEL_DIR / name).is_file(), name


def test_weights_small_and_half_precision():
    weights = EMBEDDED_MODEL_DIR / "model.safetensors"
    assert weights.stat().st_size < 10_000_000
    with safe_open(str(weights), framework="pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes == {"F16"}
    config = json.loads((EMBEDDED_MODEL_DIR / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "float32"


def test_config(model):
    text, vision = model.config.text_config, model.config.vision_config
    assert text.vocab_size == 49408
    assert text.max_position_embeddings == 77
    assert text.eos_token_id == 49407
    assert vision.image_size == 32
    assert model.config.projection_dim == 64
    assert next(model.parameters()).dtype == torch.float32
    assert 1.0 < model.logit_scale.exp().item() <= 100.0


def test_tokenizer(tokenizer):
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer.model_max_length == 77


def test_image_processor_config(processor):
    assert processor.crop_size == {"height": 32, "width": 32}
    assert processor.size == {"shortest_edge": 32}
    np.testing.assert_allclose(processor.image_mean, [0.48145466, 0.4578275, 0.40821073])
    np.testing.assert_allclose(processor.image_std, [0.26862954, 0.26130258, 0.27577711])
    # Larger inputs are resized down to the model resolution.
    big = Image.fromarray(np.zeros((96, 128, 3), dtype=np.uint8))
    assert processor(images=big, return_tensors="pt")["pixel_values"].shape == (1, 3, 32, 32)


@torch.no_grad()
def test_held_out_pair_accuracy(model, tokenizer, processor):
    gen = torch.Generator().manual_seed(HELD_OUT_SEED)
    rng = random.Random(HELD_OUT_SEED)
    scenes = [shapes.random_scene(rng) for _ in range(N_PAIRS)]
    negatives = [shapes.perturb(s, rng) for s in scenes]
    drawings = shapes.draw_scenes(scenes, size=32, generator=gen)
    images = [Image.fromarray(d.permute(1, 2, 0).numpy()) for d in drawings]
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    image = torch.nn.functional.normalize(_embedding(model.get_image_features(pixel_values=pixels)), dim=-1)

    def encode(texts):
        tokens = tokenizer(texts, padding=True, return_tensors="pt")
        out = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return torch.nn.functional.normalize(_embedding(out), dim=-1)

    for template in range(shapes.NUM_TEMPLATES):
        matched = (image * encode([shapes.caption(s, template) for s in scenes])).sum(-1)
        mismatched = (image * encode([shapes.caption(s, template) for s in negatives])).sum(-1)
        accuracy = (matched > mismatched).float().mean().item()
        assert accuracy >= 0.95, (template, accuracy)
        assert matched.mean() > 0.5
        assert matched.mean() > mismatched.mean() + 0.1
        # Every attribute is understood, not just the easy ones.
        for name in shapes.ATTRIBUTES:
            sel = torch.tensor([getattr(a, name) != getattr(b, name) for a, b in zip(scenes, negatives)])
            assert (matched[sel] > mismatched[sel]).float().mean() >= 0.9, (template, name)


@torch.no_grad()
def test_full_forward_prefers_right_caption(model, tokenizer, processor):
    scene = shapes.Scene("triangle", "yellow", "blue", "right", 2)
    rng = random.Random(0)
    negatives = [shapes.perturb(scene, rng, attribute=name) for name in shapes.ATTRIBUTES]
    captions = [shapes.caption(s) for s in [scene, *negatives]]
    image = Image.fromarray(shapes.draw_scene(scene).permute(1, 2, 0).numpy())
    tokens = tokenizer(captions, padding=True, return_tensors="pt")
    pixels = processor(images=image, return_tensors="pt")["pixel_values"]
    logits = model(**tokens, pixel_values=pixels).logits_per_image
    assert logits.shape == (1, len(captions))
    assert logits.argmax().item() == 0
