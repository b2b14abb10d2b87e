from __future__ import annotations

import math

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from clip_metric import ClipEncoder, ClipScore
from clip_metric.functional import summarize_scores
from _helpers.data import PROMPTS


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir):
    return ClipEncoder.from_pretrained(tiny_clip_dir, precision="32")


@pytest.fixture()
def metric(encoder):
    return ClipScore(encoder)


def _values(result):
    return {k: float(v) for k, v in result.items()}


def test_compute_returns_all_keys_matching_per_sample_scores(metric, encoder, uint8_images):
    metric.update(uint8_images, PROMPTS)
    result = _values(metric.compute())
    expected = _values(summarize_scores(encoder.score(uint8_images, PROMPTS)))
    assert result.keys() == {"clip/mean", "clip/mean_ci", "clip/min", "clip/max", "clip/std", "clip/count"}
    for key in result:
        assert result[key] == pytest.approx(expected[key], abs=1e-6)
    assert result["clip/count"] == 6


def test_batch_size_does_not_change_results(encoder, uint8_images):
    whole, split = ClipScore(encoder), ClipScore(encoder)
    whole.update(uint8_images, PROMPTS)
    for start, stop in [(0, 1), (1, 4), (4, 6)]:
        split.update(uint8_images[start:stop], PROMPTS[start:stop])
    for key, value in _values(whole.compute()).items():
        assert _values(split.compute())[key] == pytest.approx(value, abs=1e-6)


def test_forward_returns_batch_value_and_accumulates(metric, uint8_images):
    first = metric(uint8_images[:3], PROMPTS[:3])
    assert float(first["clip/count"]) == 3
    metric(uint8_images[3:], PROMPTS[3:])
    assert float(metric.compute()["clip/count"]) == 6
    assert metric.encoder.image_forward_count >= 2


def test_forward_runs_clip_once_per_batch(tiny_clip_dir, uint8_images):
    encoder = ClipEncoder.from_pretrained(tiny_clip_dir, precision="32")
    metric = ClipScore(encoder)
    metric(uint8_images, PROMPTS)
    assert encoder.image_forward_count == 1 and encoder.text_forward_count == 1


def test_scales_are_applied_per_sample(encoder, uint8_images):
    cosines = encoder.score(uint8_images, PROMPTS).double()
    for scale, expected in [
        ("cosine", cosines),
        ("torchmetrics", 100 * cosines.clamp(min=0)),
        ("clipscore", 2.5 * cosines.clamp(min=0)),
    ]:
        metric = ClipScore(encoder, scale=scale)
        metric.update(uint8_images, PROMPTS)
        assert float(metric.compute()["clip/mean"]) == pytest.approx(float(expected.mean()), abs=1e-5)


def test_update_from_scores_and_embeddings(metric):
    metric.update(scores=torch.tensor([0.2, 0.4]))
    image = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    metric.update(image_embeds=image, text_embeds=torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    result = _values(metric.compute())
    assert result["clip/count"] == 4
    assert result["clip/mean"] == pytest.approx((0.2 + 0.4 + 1.0 + 1.0) / 4)
    assert result["clip/min"] == pytest.approx(0.2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "exactly one of"),
        ({"scores": torch.tensor([0.1]), "image_embeds": torch.ones(1, 2)}, "exactly one of"),
        ({"images": torch.zeros(1, 3, 8, 8)}, "both `images` and `prompts`"),
        ({"image_embeds": torch.ones(1, 2)}, "both `image_embeds` and `text_embeds`"),
        ({"scores": torch.tensor([[0.1]])}, "1-D float"),
        ({"scores": torch.tensor([float("nan")])}, "finite"),
        ({"image_embeds": torch.ones(2, 3), "text_embeds": torch.ones(2, 4)}, r"\(2, 3\) and \(2, 4\)"),
        ({"image_embeds": torch.zeros(1, 4), "text_embeds": torch.ones(1, 4)}, "non-zero"),
        ({"image_embeds": torch.full((1, 4), float("nan")), "text_embeds": torch.ones(1, 4)}, "finite"),
    ],
)
def test_bad_update_calls(metric, kwargs, message):
    with pytest.raises(ValueError, match=message):
        metric.update(**kwargs)


def test_image_prompt_count_mismatch(metric, uint8_images):
    with pytest.raises(ValueError, match="6 images and 5 prompts"):
        metric.update(uint8_images, PROMPTS[:5])


def test_compute_without_samples_warns_and_returns_nan(metric):
    with pytest.warns(UserWarning, match="no samples"):
        result = metric.compute()
    assert math.isnan(float(result["clip/mean"])) and math.isnan(float(result["clip/std"]))
    assert float(result["clip/count"]) == 0


def test_keep_scores_returns_ids_and_scores(encoder, uint8_images):
    metric = ClipScore(encoder, keep_scores=True)
    metric.update(uint8_images[:2], PROMPTS[:2], ids=[10, 11])
    metric.update(uint8_images[2:3], PROMPTS[2:3])
    ids, scores = metric.per_sample()
    assert ids.tolist() == [10, 11, -1]
    assert torch.allclose(scores.float(), encoder.score(uint8_images[:3], PROMPTS[:3]), atol=1e-6)
    with pytest.raises(ValueError, match=r"Expected 2 ids \(one per sample\) but got 1"):
        metric.update(uint8_images[:2], PROMPTS[:2], ids=[1])
    with pytest.raises(RuntimeError, match="keep_scores=True"):
        ClipScore(encoder).per_sample()


def test_prefix_and_bad_arguments(encoder):
    metric = ClipScore(encoder, prefix="val/clip_")
    metric.update(scores=torch.tensor([0.3]))
    assert "val/clip_mean" in metric.compute()
    with pytest.raises(ValueError, match="scale"):
        ClipScore(encoder, scale="percent")
    with pytest.raises(ValueError, match="value_range"):
        ClipScore(encoder, value_range=(1, -1))
    with pytest.raises(ValueError, match="attention_policy"):
        ClipScore(encoder.model, processor=encoder.tokenizer, attention_policy="off")


def test_state_dict_holds_no_encoder_weights_and_encoder_stays_frozen(tiny_clip_dir):
    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 2)
            self.clip = ClipScore(tiny_clip_dir)

    module = Module()
    assert set(module.state_dict()) == {"layer.weight", "layer.bias"}
    assert len(list(module.parameters())) == 2
    assert module.clip.state_dict() == {}
    module.train()
    model = module.clip.encoder.model
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_encoder_settings_given_with_an_encoder_are_refused(encoder):
    for kwargs in ({"precision": "32"}, {"attention_policy": "strict"}, {"text_cache_size": 5}):
        with pytest.raises(ValueError, match="would be ignored"):
            ClipScore(encoder, **kwargs)


def test_clone_shares_the_encoder(metric):
    assert metric.clone().encoder is metric.encoder


def test_metric_device_move_moves_encoder(metric):
    metric.to("cpu")
    assert metric.encoder.device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_metric_follows_cuda(tiny_clip_dir, uint8_images):
    metric = ClipScore(tiny_clip_dir).to("cuda")
    assert metric.encoder.device.type == "cuda"
    metric.update(uint8_images, PROMPTS)
    assert metric.compute()["clip/mean"].device.type == "cuda"


@pytest.mark.parametrize(
    "embeds, message",
    [
        ((torch.zeros(0, 4), torch.zeros(0, 4)), "at least one row"),
        ((np.ones((2, 4), dtype=np.float32), torch.ones(2, 4)), "float tensor .* but got ndarray"),
        ((torch.ones(2, 4, dtype=torch.long), torch.ones(2, 4)), "dtype torch.int64"),
    ],
)
def test_bad_embeddings_are_refused_by_name(tiny_clip_dir, embeds, message):
    metric = ClipScore(tiny_clip_dir, precision="32")
    with pytest.raises(ValueError, match=message):
        metric.update(image_embeds=embeds[0], text_embeds=embeds[1])
    assert int(metric.count) == 0


def test_meta_device_refuses_updates_and_keeps_the_encoder(tiny_clip_dir):
    metric = ClipScore(tiny_clip_dir, precision="32").to("meta")
    assert metric.encoder.device.type == "cpu"  # weights kept: the meta device holds none
    with pytest.raises(ValueError, match="meta device"):
        metric.update(scores=torch.tensor([0.1]))
