"""The input contract, by property: any input either scores or is refused with a message.

Whatever images and prompts are generated, ``ClipEncoder.score`` returns finite cosines in
``[-1, 1]`` or raises ``ValueError``/``TypeError`` with a message: never another exception,
never NaN, and an accepted input is scored as its canonical uint8 form would be.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clip_metric import ClipEncoder, ScoreStatistics

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir):
    return ClipEncoder.from_pretrained(tiny_clip_dir, precision="32")


dtypes = st.sampled_from(
    [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float16, torch.bfloat16, torch.float32,
     torch.float64, torch.bool]
)
side = st.integers(0, 12)
channels = st.sampled_from([1, 3, 4, 3, 3, 2, 5])
# Mostly image-shaped (a batch or a single image), sometimes anything.
shapes = st.one_of(
    st.tuples(st.integers(0, 3), channels, side, side),
    st.tuples(channels, side, side),
    st.lists(st.integers(0, 9), min_size=1, max_size=5).map(tuple),
)
fill = st.sampled_from([0.0, 0.5, 1.0, 255.0, -1.0, 256.0, float("nan"), float("inf")])


@st.composite
def tensors(draw):
    shape = draw(shapes)
    dtype = draw(dtypes)
    seed = draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)
    base = torch.rand(shape, generator=generator) * draw(st.sampled_from([1.0, 2.0, 255.0, 300.0]))
    if draw(st.integers(0, 3)) == 0:  # now and then one odd value
        base = base.reshape(-1)
        if base.numel():
            base[0] = draw(fill)
        base = base.reshape(shape)
    if dtype.is_floating_point:
        return base.to(dtype)
    if dtype == torch.bool:
        return base > 0.5
    info = torch.iinfo(dtype)
    return torch.nan_to_num(base, nan=0.0, posinf=0.0).clamp(info.min, info.max).to(dtype)


prompt_text = st.one_of(
    st.text(min_size=0, max_size=40),
    st.sampled_from(["a red circle", "   ", "\ud800 lone surrogate", "x" * 500]),
)
good_text = st.sampled_from(["a red circle", "two blue squares on a white background", "x " * 100])
odd_prompts = st.one_of(
    st.lists(prompt_text, min_size=0, max_size=4),
    prompt_text,
    st.just(None),
    st.just(b"bytes"),
    st.lists(st.integers(), min_size=1, max_size=2),
)


def prompts_for(images):
    """Mostly one good prompt per image, sometimes anything at all."""
    n = images.shape[0] if images.ndim == 4 else 1
    good = st.lists(good_text, min_size=n, max_size=n)
    return st.integers(0, 4).flatmap(lambda k: odd_prompts if k == 0 else good)
value_ranges = st.sampled_from(
    [(0.0, 1.0), (0.0, 255.0), (0.0, 1.0), (-1.0, 1.0), (0.0, 255.0), (1.0, 0.0), (0.0, float("inf"))]
)


def _check_outcome(call):
    try:
        scores = call()
    except (ValueError, TypeError) as err:
        assert str(err), "an error must say what is wrong"
        return None
    assert torch.isfinite(scores).all()
    assert scores.abs().max() <= 1.0
    return scores


@SETTINGS
@given(data=st.data(), value_range=value_ranges)
def test_any_tensor_input_scores_or_is_refused_with_a_message(encoder, data, value_range):
    images = data.draw(tensors())
    prompts = data.draw(prompts_for(images))
    _check_outcome(lambda: encoder.score(images, prompts, value_range))


@SETTINGS
@given(images=tensors())
def test_accepted_integer_and_float_images_score_as_their_uint8_form(encoder, images):
    if images.ndim not in (3, 4) or images.dtype == torch.bool or 0 in images.shape:
        return
    n = 1 if images.ndim == 3 else images.shape[0]
    scores = _check_outcome(lambda: encoder.score(images, ["a red circle"] * n))
    if scores is None or images.is_floating_point():
        return
    canonical = images.to(torch.int64).clamp(0, 255).to(torch.uint8)  # accepted, so already in 0-255
    assert torch.equal(canonical.to(torch.int64), images.to(torch.int64))
    assert torch.allclose(encoder.score(canonical, ["a red circle"] * n), scores, atol=1e-6)


@SETTINGS
@given(array=st.builds(
    lambda shape, dtype, seed: (np.random.default_rng(seed).random(shape) * 300).astype(dtype),
    st.lists(st.integers(1, 6), min_size=2, max_size=4).map(tuple),
    st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64, np.bool_]),
    st.integers(0, 1000),
))
def test_any_numpy_input_scores_or_is_refused_with_a_message(encoder, array):
    _check_outcome(lambda: encoder.score(array, "a red circle"))


@SETTINGS
@given(scores=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=0, max_size=6),
       ids=st.one_of(st.none(), st.lists(st.integers(-5, 5), max_size=7), st.just("ab"), st.just(3)))
def test_statistics_take_valid_cosines_or_change_nothing(scores, ids):
    stats = ScoreStatistics(keep_scores=True)
    stats.update(torch.tensor([0.5]))
    before = {k: v.clone() for k, v in stats.compute().items()}
    try:
        stats.update(torch.tensor(scores, dtype=torch.float32), ids=ids)
    except (ValueError, TypeError) as err:
        assert str(err)
        after = stats.compute()
        # NaN (mean_ci of one sample) equals NaN here: nothing changed.
        assert all(torch.allclose(before[k], after[k], rtol=0, atol=0, equal_nan=True) for k in before)
        assert len(stats.per_sample()[0]) == 1
        return
    assert all(-1 <= s <= 1 for s in scores) and len(scores) > 0
    assert int(stats.compute()["clip/count"]) == 1 + len(scores)
