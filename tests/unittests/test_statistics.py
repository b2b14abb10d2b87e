"""Direct tests of ``ScoreStatistics``: accumulation, atomic updates, dtype casts, merging."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clip_metric import ScoreStatistics
from clip_metric.functional import summarize_scores

SETTINGS = settings(max_examples=50, deadline=None)
STATE_DTYPES = {
    "total": torch.float64,
    "total_sq": torch.float64,
    "count": torch.long,
    "minimum": torch.float64,
    "maximum": torch.float64,
}
# Values chosen so that any rounding below float64 shows in the statistics.
PRECISE = torch.tensor([0.123456789012345, 0.333333333333333, -0.777777777777777, 0.9], dtype=torch.float64)


def _values(result):
    return {key: float(value) for key, value in result.items()}


def _snapshot(metric: ScoreStatistics) -> dict:
    out = {}
    for name, value in metric.metric_state.items():
        if isinstance(value, torch.Tensor):
            out[name] = value.clone()
        else:
            out[name] = [v.clone() for v in value]
    return out


def _assert_same_state(metric: ScoreStatistics, snapshot: dict) -> None:
    state = metric.metric_state
    assert state.keys() == snapshot.keys()
    for name, before in snapshot.items():
        now = state[name]
        if isinstance(before, torch.Tensor):
            assert now.dtype == before.dtype and torch.equal(now, before), name
        else:
            assert len(now) == len(before), name
            for a, b in zip(now, before):
                assert a.dtype == b.dtype and torch.equal(a, b), name


def _assert_state_dtypes(metric: ScoreStatistics) -> None:
    for name, dtype in STATE_DTYPES.items():
        assert getattr(metric, name).dtype == dtype, name
        assert metric._defaults[name].dtype == dtype, f"default of {name}"
    if metric.keep_scores:
        assert all(s.dtype == torch.float64 for s in metric.scores)
        assert all(i.dtype == torch.long for i in metric.ids)


# --------------------------------------------------------------------------- update / compute


def test_compute_matches_summary_of_all_scores():
    metric = ScoreStatistics()
    metric.update(torch.tensor([0.25, 0.35]))
    metric.update(torch.tensor([0.1, -0.2, 0.5]))
    expected = _values(summarize_scores(torch.tensor([0.25, 0.35, 0.1, -0.2, 0.5])))
    result = _values(metric.compute())
    assert result.keys() == expected.keys()
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-7)
    assert result["clip/count"] == 5.0


@pytest.mark.parametrize(
    ("scale", "factor"), [("cosine", 1.0), ("torchmetrics", 100.0), ("clipscore", 2.5)]
)
def test_scale_is_applied_per_sample(scale, factor):
    metric = ScoreStatistics(scale=scale)
    metric.update(torch.tensor([0.2, 0.4, -0.2]))
    result = _values(metric.compute())
    low = -0.2 if scale == "cosine" else 0.0  # the scaled scales clamp each negative cosine to 0
    assert result["clip/min"] == pytest.approx(factor * low)
    assert result["clip/max"] == pytest.approx(factor * 0.4)
    assert result["clip/mean"] == pytest.approx(factor * (0.2 + 0.4 + low) / 3)


def test_prefix_names_every_key():
    metric = ScoreStatistics(prefix="val/clip_")
    metric.update(torch.tensor([0.3]))
    assert set(metric.compute()) == {f"val/clip_{k}" for k in ("mean", "mean_ci", "min", "max", "std", "count")}


def test_compute_without_samples_warns_and_gives_nan():
    metric = ScoreStatistics()
    with pytest.warns(UserWarning) as record:
        result = _values(metric.compute())
    assert any("found no samples" in str(w.message) for w in record)
    assert result["clip/count"] == 0.0
    assert all(math.isnan(v) for k, v in result.items() if k != "clip/count")


def test_reset_forgets_everything():
    metric = ScoreStatistics(keep_scores=True)
    metric.update(torch.tensor([0.3, 0.4]), ids=[1, 2])
    metric.reset()
    metric.update(torch.tensor([0.1]), ids=[7])
    assert _values(metric.compute())["clip/count"] == 1.0
    ids, scores = metric.per_sample()
    assert ids.tolist() == [7] and scores.tolist() == pytest.approx([0.1])


def test_slightly_out_of_range_cosines_are_clamped():
    metric = ScoreStatistics()
    metric.update(torch.tensor([1.00005, -1.00005]))
    result = _values(metric.compute())
    assert result["clip/max"] == 1.0 and result["clip/min"] == -1.0


def test_low_precision_scores_are_accumulated_in_float64():
    metric = ScoreStatistics()
    metric.update(torch.full((4096,), 0.3, dtype=torch.bfloat16))
    expected = float(torch.tensor(0.3, dtype=torch.bfloat16).double())
    assert metric.total.dtype == torch.float64
    assert float(metric.total) == pytest.approx(4096 * expected, rel=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scale": "percent"}, "scale"),
        ({"prefix": 3}, "prefix"),
        ({"keep_scores": "yes"}, "keep_scores"),
        ({"keep_scores": 1}, "keep_scores"),
    ],
)
def test_constructor_arguments_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=rf"Expected `{match}` to be"):
        ScoreStatistics(**kwargs)


# --------------------------------------------------------------------------- per_sample


def test_per_sample_returns_ids_and_scaled_scores_in_order():
    metric = ScoreStatistics(scale="clipscore", keep_scores=True)
    metric.update(torch.tensor([0.2, -0.1]), ids=[5, 3])
    metric.update(torch.tensor([0.4]), ids=torch.tensor([9]))
    ids, scores = metric.per_sample()
    assert ids.dtype == torch.long and scores.dtype == torch.float64
    assert ids.tolist() == [5, 3, 9]
    assert scores.tolist() == pytest.approx([0.5, 0.0, 1.0])


def test_per_sample_without_ids_uses_minus_one():
    metric = ScoreStatistics(keep_scores=True)
    metric.update(torch.tensor([0.2, 0.3]))
    ids, _ = metric.per_sample()
    assert ids.tolist() == [-1, -1]


def test_per_sample_before_any_update_is_empty():
    ids, scores = ScoreStatistics(keep_scores=True).per_sample()
    assert ids.numel() == 0 and scores.numel() == 0
    assert ids.dtype == torch.long and scores.dtype == torch.float64


def test_per_sample_needs_keep_scores():
    metric = ScoreStatistics()
    metric.update(torch.tensor([0.2]))
    with pytest.raises(RuntimeError, match="keep_scores=True"):
        metric.per_sample()


# --------------------------------------------------------------------------- atomic updates


BAD_BATCHES = {
    "too few ids": (torch.tensor([0.1, 0.2]), [1]),
    "too many ids": (torch.tensor([0.1, 0.2]), torch.tensor([1, 2, 3])),
    "float id list": (torch.tensor([0.1, 0.2]), [1, 2.0]),
    "float id tensor": (torch.tensor([0.1, 0.2]), torch.tensor([1.0, 2.0])),
    "bool id tensor": (torch.tensor([0.1, 0.2]), torch.tensor([True, False])),
    "bool ids": (torch.tensor([0.1, 0.2]), [True, False]),
    "string ids": (torch.tensor([0.1, 0.2]), "12"),
    "string in ids": (torch.tensor([0.1, 0.2]), [1, "2"]),
    "id object": (torch.tensor([0.1, 0.2]), object()),
    "above one": (torch.tensor([0.1, 1.5]), None),
    "below minus one": (torch.tensor([-1.2, 0.1]), None),
    "scaled already": (torch.tensor([31.0, 28.0]), None),
    "nan": (torch.tensor([0.1, math.nan]), None),
    "inf": (torch.tensor([math.inf, 0.1]), None),
    "2-D": (torch.tensor([[0.1, 0.2]]), None),
    "0-D": (torch.tensor(0.1), None),
    "empty": (torch.zeros(0), None),
    "integer tensor": (torch.tensor([0, 1]), None),
    "list": ([0.1, 0.2], None),
    "float": (0.3, None),
}


@pytest.mark.parametrize("keep_scores", [False, True], ids=["stats", "keep_scores"])
@pytest.mark.parametrize("name", list(BAD_BATCHES))
def test_rejected_batch_leaves_every_state_unchanged(name, keep_scores):
    metric = ScoreStatistics(keep_scores=keep_scores)
    metric.update(torch.tensor([0.25, 0.35, -0.1]), ids=[0, 1, 2])
    before_state, before_result = _snapshot(metric), _values(metric.compute())
    scores, ids = BAD_BATCHES[name]
    with pytest.raises(ValueError):
        metric.update(scores, ids=ids)
    _assert_same_state(metric, before_state)
    assert _values(metric.compute()) == before_result


@pytest.mark.parametrize("name", ["too few ids", "nan", "above one", "2-D", "list"])
def test_rejected_forward_keeps_the_accumulated_states(name):
    # forward() resets to compute the batch value; a refused batch must not lose what came before.
    metric = ScoreStatistics(keep_scores=True)
    metric.update(torch.tensor([0.25, 0.35, -0.1]), ids=[0, 1, 2])
    before_state, before_result = _snapshot(metric), _values(metric.compute())
    scores, ids = BAD_BATCHES[name]
    with pytest.raises(ValueError):
        metric(scores, ids=ids)
    _assert_same_state(metric, before_state)
    assert _values(metric.compute()) == before_result
    # and the metric still works normally afterwards
    batch = _values(metric(torch.tensor([0.5]), ids=[3]))
    assert batch["clip/count"] == 1.0 and batch["clip/mean"] == pytest.approx(0.5)
    assert _values(metric.compute())["clip/count"] == 4.0
    assert metric.per_sample()[0].tolist() == [0, 1, 2, 3]


def test_forward_returns_the_batch_and_accumulates():
    metric = ScoreStatistics()
    metric.update(torch.tensor([0.2, 0.4]))
    batch = _values(metric(torch.tensor([0.1])))
    assert batch["clip/count"] == 1.0 and batch["clip/mean"] == pytest.approx(0.1)
    total = _values(metric.compute())
    assert total["clip/count"] == 3.0 and total["clip/min"] == pytest.approx(0.1)


# --------------------------------------------------------------------------- dtype casts


@pytest.mark.parametrize(
    "cast",
    [
        lambda m: m.to(torch.bfloat16),
        lambda m: m.to(torch.float16),
        lambda m: m.to("cpu", torch.bfloat16),
        lambda m: m.half(),
        lambda m: m.bfloat16(),
        lambda m: m.float(),
        lambda m: m.double(),
        lambda m: m.type(torch.float16),
        lambda m: m.set_dtype(torch.float16),
    ],
    ids=["to-bf16", "to-fp16", "to-cpu-bf16", "half", "bfloat16", "float", "double", "type", "set_dtype"],
)
@pytest.mark.parametrize("keep_scores", [False, True], ids=["stats", "keep_scores"])
def test_dtype_casts_keep_states_and_their_values(cast, keep_scores):
    metric = ScoreStatistics(keep_scores=keep_scores)
    metric.update(PRECISE, ids=list(range(4)))
    before_state, before_result = _snapshot(metric), _values(metric.compute())
    returned = cast(metric)
    assert returned is metric
    _assert_state_dtypes(metric)
    _assert_same_state(metric, before_state)  # not rounded through the cast dtype either
    assert _values(metric.compute()) == before_result


def test_states_accumulate_in_float64_after_a_cast_and_reset():
    metric = ScoreStatistics()
    metric.to(torch.bfloat16)
    metric.reset()
    _assert_state_dtypes(metric)
    metric.update(PRECISE)
    assert float(metric.total) == pytest.approx(float(PRECISE.sum()), abs=1e-15)


def test_cached_compute_result_is_not_rounded_by_a_cast():
    metric = ScoreStatistics()
    metric.update(PRECISE)
    first = metric.compute()
    metric.to(torch.float16)
    second = metric.compute()
    assert all(value.dtype == torch.float64 for value in second.values())
    assert _values(second) == _values(first)


def test_states_stay_float64_inside_a_module_cast():
    module = torch.nn.Module()
    module.layer = torch.nn.Linear(2, 2)
    module.stats = ScoreStatistics(keep_scores=True)
    module.stats.update(PRECISE, ids=[0, 1, 2, 3])
    before_state, before_result = _snapshot(module.stats), _values(module.stats.compute())
    for cast in (lambda m: m.to(torch.float16), lambda m: m.half(), lambda m: m.to(torch.bfloat16)):
        cast(module)
        assert module.layer.weight.dtype in (torch.float16, torch.bfloat16)  # the cast did happen
        _assert_state_dtypes(module.stats)
        _assert_same_state(module.stats, before_state)
    assert _values(module.stats.compute()) == before_result
    module.stats.update(PRECISE, ids=[4, 5, 6, 7])
    assert float(module.stats.total) == pytest.approx(2 * float(PRECISE.sum()), abs=1e-14)


def test_module_float64_cast_then_back_keeps_values():
    module = torch.nn.Module()
    module.stats = ScoreStatistics()
    module.stats.update(PRECISE)
    module.double().float()
    _assert_state_dtypes(module.stats)
    assert float(module.stats.total) == float(PRECISE.sum())


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_state_dict_round_trip_keeps_dtypes():
    metric = ScoreStatistics()
    metric.persistent(True)
    metric.update(PRECISE)
    other = ScoreStatistics()
    other.persistent(True)
    other.load_state_dict(metric.state_dict())
    _assert_state_dtypes(other)
    assert _values(other.compute()) == _values(metric.compute())


# --------------------------------------------------------------------------- merging


def test_merge_state_with_the_same_scale_combines_samples():
    a, b = ScoreStatistics(scale="clipscore"), ScoreStatistics(scale="clipscore")
    a.update(torch.tensor([0.2, 0.3]))
    b.update(torch.tensor([0.4, -0.1, 0.1]))
    a.merge_state(b)
    expected = _values(summarize_scores(2.5 * torch.tensor([0.2, 0.3, 0.4, 0.0, 0.1])))
    result = _values(a.compute())
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-7)


@pytest.mark.parametrize(
    ("mine", "theirs", "name"),
    [
        ({"scale": "cosine"}, {"scale": "torchmetrics"}, "scale"),
        ({"scale": "clipscore"}, {"scale": "cosine"}, "scale"),
        ({"prefix": "a/"}, {"prefix": "b/"}, "prefix"),
        ({"keep_scores": True}, {"keep_scores": False}, "keep_scores"),
    ],
)
def test_merge_state_across_settings_is_refused_and_changes_nothing(mine, theirs, name):
    a, b = ScoreStatistics(**mine), ScoreStatistics(**theirs)
    a.update(torch.tensor([0.2, 0.3]))
    b.update(torch.tensor([0.4]))
    before = _snapshot(a)
    with pytest.raises(ValueError, match=name):
        a.merge_state(b)
    _assert_same_state(a, before)


# --------------------------------------------------------------------------- properties


cosine_lists = st.lists(
    st.floats(min_value=-1.0, max_value=1.0, allow_nan=False, allow_infinity=False), min_size=1, max_size=50
)


@SETTINGS
@given(values=cosine_lists, data=st.data(), scale=st.sampled_from(["cosine", "torchmetrics", "clipscore"]))
def test_any_split_into_batches_gives_the_same_compute(values, data, scale):
    cuts = sorted(set(data.draw(st.lists(st.integers(min_value=1, max_value=len(values)), max_size=6))))
    bounds = [0, *cuts, len(values)]
    whole, split = ScoreStatistics(scale=scale), ScoreStatistics(scale=scale)
    whole.update(torch.tensor(values, dtype=torch.float64))
    for start, stop in zip(bounds, bounds[1:]):
        if stop > start:
            split.update(torch.tensor(values[start:stop], dtype=torch.float64))
    a, b = _values(whole.compute()), _values(split.compute())
    assert a["clip/count"] == b["clip/count"] == len(values)
    assert a["clip/min"] == b["clip/min"] and a["clip/max"] == b["clip/max"]
    factor = {"cosine": 1.0, "torchmetrics": 100.0, "clipscore": 2.5}[scale]
    assert b["clip/mean"] == pytest.approx(a["clip/mean"], abs=1e-12 * factor)
    assert b["clip/std"] ** 2 == pytest.approx(a["clip/std"] ** 2, abs=1e-12 * factor**2)


@SETTINGS
@given(values=cosine_lists, data=st.data())
def test_any_split_over_two_metrics_merged_gives_the_same_compute(values, data):
    # The same property across metric objects (the DDP reductions, run by merge_state).
    mask = data.draw(st.lists(st.booleans(), min_size=len(values), max_size=len(values)))
    whole, left, right = ScoreStatistics(), ScoreStatistics(), ScoreStatistics()
    whole.update(torch.tensor(values, dtype=torch.float64))
    for target, keep in ((left, True), (right, False)):
        part = [v for v, m in zip(values, mask) if m is keep]
        if part:
            target.update(torch.tensor(part, dtype=torch.float64))
    left.merge_state(right)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = _values(whole.compute()), _values(left.compute())
    assert a["clip/count"] == b["clip/count"]
    assert a["clip/min"] == b["clip/min"] and a["clip/max"] == b["clip/max"]
    assert b["clip/mean"] == pytest.approx(a["clip/mean"], abs=1e-12)
    assert b["clip/std"] ** 2 == pytest.approx(a["clip/std"] ** 2, abs=1e-12)
