"""Metrics of different settings never mix their states; loaded states keep their precision."""

from __future__ import annotations

import pytest
import torch
from torchmetrics import MetricCollection

from clip_metric import ClipEncoder, ClipScore, ScoreStatistics
from tests._helpers.models import build_tiny_clip

PROMPTS = ["a red circle", "a blue square"]


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir):
    return ClipEncoder.from_pretrained(tiny_clip_dir, precision="32")


def _mean(metric):
    return float(metric.compute()[f"{metric.prefix}mean"])


def test_a_compute_group_never_joins_metrics_of_different_scales():
    collection = MetricCollection(
        {"a": ScoreStatistics(scale="clipscore", prefix="a/"), "b": ScoreStatistics(scale="torchmetrics", prefix="b/")},
        compute_groups=True,
    )
    collection.update(torch.tensor([-0.2, -0.3]))  # both 0 on either scale: equal first states
    collection.update(torch.tensor([0.3, 0.2]))
    result = collection.compute()
    assert float(result["a/mean"]) == pytest.approx(2.5 * 0.125)
    assert float(result["b/mean"]) == pytest.approx(100 * 0.125)
    same = MetricCollection({"a": ScoreStatistics(prefix="a/"), "b": ScoreStatistics(prefix="b/")}, compute_groups=True)
    same.update(torch.tensor([0.1]))
    assert len(same.compute_groups) == 1  # equal settings still share states


def test_a_compute_group_never_joins_clip_scores_reading_images_differently(encoder):
    collection = MetricCollection(
        {"unit": ClipScore(encoder, prefix="u/"), "signed": ClipScore(encoder, value_range=(-1, 1), prefix="s/")},
        compute_groups=True,
    )
    uint8 = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    collection.update(uint8, PROMPTS)  # uint8 ignores value_range: equal first states
    floats = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    collection.update(floats, PROMPTS)
    unit, signed = ClipScore(encoder), ClipScore(encoder, value_range=(-1, 1))
    for metric in (unit, signed):  # alone, each reads the floats by its own range
        metric.update(uint8, PROMPTS)
        metric.update(floats, PROMPTS)
    assert _mean(unit) != pytest.approx(_mean(signed), abs=1e-6)
    result = collection.compute()
    assert len(collection.compute_groups) == 2
    assert float(result["u/mean"]) == pytest.approx(_mean(unit), abs=1e-6)
    assert float(result["s/mean"]) == pytest.approx(_mean(signed), abs=1e-6)


def test_merging_clip_scores_of_different_models_is_refused(tmp_path, tiny_clip_dir, encoder):
    other = ClipScore(build_tiny_clip(tmp_path / "other", seed=1), precision="32")
    mine = ClipScore(encoder)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mine.update(images, PROMPTS)
    other.update(images, PROMPTS)
    with pytest.raises(ValueError, match="same CLIP model"):
        mine.merge_state(other)
    assert mine.count.item() == 2
    again = ClipScore(ClipEncoder.from_pretrained(tiny_clip_dir, precision="32"))  # same weights, another object
    again.update(images, PROMPTS)
    mine.merge_state(again)
    assert mine.count.item() == 4


def test_a_state_dict_cast_to_float16_is_loaded_back_as_float64():
    metric = ScoreStatistics(keep_scores=True)
    metric.persistent(True)
    metric.update(torch.tensor([0.123456789, 0.3, -0.05], dtype=torch.float64), ids=[1, 2, 3])
    saved = {
        name: value.half() if isinstance(value, torch.Tensor) else [v.half() for v in value]
        for name, value in metric.state_dict().items()
    }
    loaded = ScoreStatistics(keep_scores=True)
    with pytest.warns(UserWarning, match="cast back to float64"):
        loaded.load_state_dict(saved)
    for name in ("total", "total_sq", "minimum", "maximum"):
        assert getattr(loaded, name).dtype == torch.float64, name
    assert loaded.count.dtype == torch.long and loaded.count.item() == 3
    assert all(s.dtype == torch.float64 for s in loaded.scores) and all(i.dtype == torch.long for i in loaded.ids)
    loaded.update(torch.tensor([0.2]))
    assert loaded.total.dtype == torch.float64 and loaded.count.item() == 4
    assert float(loaded.compute()["clip/mean"]) == pytest.approx((0.123456789 + 0.3 - 0.05 + 0.2) / 4, abs=1e-3)


def test_states_merge_from_a_dict_without_the_settings_state():
    metric, other = ScoreStatistics(), ScoreStatistics()
    metric.update(torch.tensor([0.1]))
    other.update(torch.tensor([0.3]))
    metric.merge_state({k: v for k, v in other.metric_state.items() if k in ("total", "total_sq", "count",
                                                                               "minimum", "maximum")})
    assert metric.count.item() == 2 and float(metric.compute()["clip/mean"]) == pytest.approx(0.2)
