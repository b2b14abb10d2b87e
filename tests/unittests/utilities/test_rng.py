"""Direct tests of ``clip_metric.utilities.rng``."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from clip_metric.utilities.rng import capture_rng_state, preserved_rng, restore_rng_state


def _draw() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _consume() -> None:
    random.random()
    np.random.rand(100)
    torch.rand(100)
    torch.randn(3, 3)


def test_preserved_rng_restores_python_numpy_and_torch():
    _seed_all(0)
    expected = _draw()
    _seed_all(0)
    with preserved_rng():
        _consume()
        assert _draw() != expected  # the block did move the generators
    assert _draw() == expected


def test_preserved_rng_restores_after_an_error():
    _seed_all(1)
    expected = _draw()
    _seed_all(1)
    with pytest.raises(KeyError, match="boom"):
        with preserved_rng():
            _consume()
            raise KeyError("boom")
    assert _draw() == expected


def test_preserved_rng_undoes_reseeding_inside_the_block():
    _seed_all(2)
    expected = _draw()
    _seed_all(2)
    with preserved_rng():
        _seed_all(12345)
        _consume()
    assert _draw() == expected


def test_nested_blocks_restore_each_level():
    _seed_all(3)
    outer = _draw()
    _seed_all(3)
    with preserved_rng():
        _consume()
        inner_expected = _draw()
        with preserved_rng():
            _consume()
        # the inner block restored what the outer block had reached
        _seed_all(3)
        _consume()
        assert _draw() == inner_expected
    assert _draw() == outer


def test_capture_and_restore_state_round_trip():
    _seed_all(4)
    state = capture_rng_state()
    assert {"python", "numpy", "torch"} <= set(state)
    first = _draw()
    _consume()
    restore_rng_state(state)
    assert _draw() == first


def test_explicit_generators_are_not_touched():
    generator = torch.Generator().manual_seed(5)
    with preserved_rng():
        a = torch.rand(3, generator=generator)
    b = torch.rand(3, generator=generator)
    assert not torch.equal(a, b)  # the private generator kept advancing
