import dataclasses
import random

import pytest
import torch

from clip_metric.demos import shapes
from clip_metric.demos.shapes import (
    ATTRIBUTES,
    Scene,
    all_scenes,
    caption,
    draw_scene,
    draw_scenes,
    perturb,
    random_scene,
)

FIELDS = tuple(ATTRIBUTES)


def _differing(a: Scene, b: Scene) -> list[str]:
    return [name for name in FIELDS if getattr(a, name) != getattr(b, name)]


def test_attributes_match_scene_fields():
    assert FIELDS == tuple(f.name for f in dataclasses.fields(Scene))
    assert set(ATTRIBUTES["color"]) == set(shapes.COLORS)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(shape="hexagon", color="red", background="blue", position="left", count=1),
        dict(shape="circle", color="mauve", background="blue", position="left", count=1),
        dict(shape="circle", color="red", background="red", position="left", count=1),
        dict(shape="circle", color="red", background="blue", position="middle", count=1),
        dict(shape="circle", color="red", background="blue", position="left", count=4),
        dict(shape="circle", color="red", background="blue", position="left", count=True),
    ],
)
def test_invalid_scene_rejected(kwargs):
    with pytest.raises(ValueError):
        Scene(**kwargs)


def test_scene_is_frozen_and_hashable():
    scene = Scene("circle", "red", "blue", "left", 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        scene.count = 3
    assert len({scene, Scene("circle", "red", "blue", "left", 2)}) == 1


def test_all_scenes_unique_and_valid():
    scenes = list(all_scenes())
    assert len(scenes) == len(set(scenes)) == 4 * 6 * 5 * 5 * 3


@pytest.mark.parametrize("make", [lambda: random.Random(7), lambda: torch.Generator().manual_seed(7)])
def test_random_scene_deterministic(make):
    a, b = make(), make()
    first = [random_scene(a) for _ in range(50)]
    assert first == [random_scene(b) for _ in range(50)]
    assert len(set(first)) > 30  # actually random


def test_random_scene_covers_vocabulary():
    rng = random.Random(0)
    scenes = [random_scene(rng) for _ in range(2000)]
    for name, values in ATTRIBUTES.items():
        assert {getattr(s, name) for s in scenes} == set(values)
    assert all(s.color != s.background for s in scenes)


def test_caption_examples():
    scene = Scene("circle", "red", "blue", "left", 2)
    assert caption(scene) == "two red circles on a blue background, on the left"
    assert caption(scene, 1) == "two red circles on the left of a blue background"
    assert caption(scene, 2) == "a blue background with two red circles on the left"
    one = Scene("cross", "yellow", "black", "center", 1)
    assert caption(one) == "a yellow cross on a black background, in the center"
    assert caption(Scene("cross", "white", "green", "top", 3)) == (
        "three white crosses on a green background, at the top"
    )


@pytest.mark.parametrize("template", [-1, shapes.NUM_TEMPLATES, 0.0, "0"])
def test_caption_bad_template(template):
    with pytest.raises(ValueError):
        caption(Scene("circle", "red", "blue", "left", 2), template)


@pytest.mark.parametrize("template", range(shapes.NUM_TEMPLATES))
def test_captions_are_unique(template):
    texts = [caption(s, template) for s in all_scenes()]
    assert len(set(texts)) == len(texts)


def test_perturb_changes_exactly_one_attribute():
    rng = random.Random(1)
    changed = set()
    for _ in range(500):
        scene = random_scene(rng)
        other = perturb(scene, rng)
        diff = _differing(scene, other)
        assert len(diff) == 1
        changed.update(diff)
        assert other.color != other.background
        assert caption(scene) != caption(other)
    assert changed == set(FIELDS)


@pytest.mark.parametrize("attribute", FIELDS)
def test_perturb_named_attribute(attribute):
    gen = torch.Generator().manual_seed(3)
    for _ in range(50):
        scene = random_scene(gen)
        assert _differing(scene, perturb(scene, gen, attribute=attribute)) == [attribute]


def test_perturb_deterministic_and_validates():
    scene = Scene("square", "green", "white", "bottom", 3)
    assert perturb(scene, random.Random(5)) == perturb(scene, random.Random(5))
    with pytest.raises(ValueError):
        perturb(scene, random.Random(5), attribute="size")


@pytest.mark.parametrize("size", [32, 64])
def test_draw_scene_dtype_shape_and_colours(size):
    scene = Scene("square", "red", "blue", "center", 1)
    image = draw_scene(scene, size=size)
    assert image.dtype == torch.uint8
    assert image.shape == (3, size, size)
    assert image[:, 0, 0].tolist() == list(shapes.COLORS["blue"])
    assert image[:, size // 2, size // 2].tolist() == list(shapes.COLORS["red"])


def test_draw_positions_and_counts():
    # The shape pixels lie on the side named by the position.
    for position, (rows, cols) in {
        "left": (slice(None), slice(0, 16)),
        "right": (slice(None), slice(16, 32)),
        "top": (slice(0, 16), slice(None)),
        "bottom": (slice(16, 32), slice(None)),
        "center": (slice(8, 24), slice(None)),
    }.items():
        for count in (1, 2, 3):
            image = draw_scene(Scene("circle", "white", "black", position, count))
            ink = image[0].float() - shapes.COLORS["black"][0]
            assert ink[rows, cols].sum() / ink.sum() > 0.97, (position, count)
    # More shapes, more separate blobs along the row through the centre.
    for count in (1, 2, 3):
        row = draw_scene(Scene("square", "white", "black", "center", count))[0, 16] > 127
        runs = int(row[0]) + int((row[1:] & ~row[:-1]).sum())
        assert runs == count


def test_draw_shapes_differ():
    for count in (1, 3):
        images = [draw_scene(Scene(shape, "white", "black", "center", count)).float() for shape in shapes.SHAPES]
        for i in range(len(images)):
            for j in range(i + 1, len(images)):
                # Clearly different pixels (more than half the colour contrast), per shape drawn.
                assert ((images[i] - images[j]).abs()[0] > 112).sum() >= 6 * count


def test_draw_deterministic_with_generator():
    scenes = [random_scene(random.Random(i)) for i in range(16)]
    a = draw_scenes(scenes, generator=torch.Generator().manual_seed(0))
    b = draw_scenes(scenes, generator=torch.Generator().manual_seed(0))
    c = draw_scenes(scenes, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(draw_scenes(scenes, generator=random.Random(4)), draw_scenes(scenes, generator=random.Random(4)))
    # Without a generator the canonical drawing is returned, identical to the single-scene path.
    canonical = draw_scenes(scenes)
    assert torch.equal(canonical[3], draw_scene(scenes[3]))
    # Jitter is small: the jittered image stays close to the canonical one.
    assert (a.float() - canonical.float()).abs().mean() < 30


def test_draw_scenes_empty_and_bad_size():
    assert draw_scenes([]).shape == (0, 3, 32, 32)
    with pytest.raises(ValueError):
        draw_scene(Scene("circle", "red", "blue", "left", 1), size=4)


def test_draw_is_fast():
    import time

    rng = random.Random(0)
    scenes = [random_scene(rng) for _ in range(4096)]
    start = time.perf_counter()
    images = draw_scenes(scenes, generator=torch.Generator().manual_seed(0))
    assert images.shape == (4096, 3, 32, 32)
    assert time.perf_counter() - start < 10  # ~0.5 s on two cores
