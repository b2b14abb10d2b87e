"""Procedurally drawn scenes of simple coloured shapes, with matching captions.

A :class:`Scene` is a small set of discrete attributes (which shape, how many, its colour, the
background colour and where the shapes sit). Every attribute is chosen so that it can be read off
a 32x32 image without ambiguity, which makes the scenes a convenient toy domain for training and
testing text-image models offline: :func:`caption` turns a scene into an English sentence,
:func:`draw_scene` / :func:`draw_scenes` render it with plain tensor operations (no image library
involved), and :func:`perturb` produces a "hard negative" that differs in exactly one attribute.

Example:
    >>> import torch
    >>> from clip_metric.demos.shapes import Scene, caption, draw_scene
    >>> scene = Scene(shape="circle", color="red", background="blue", position="left", count=2)
    >>> caption(scene)
    'two red circles on a blue background, on the left'
    >>> image = draw_scene(scene)
    >>> image.shape, image.dtype
    (torch.Size([3, 32, 32]), torch.uint8)
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Union

import torch

__all__ = [
    "ATTRIBUTES",
    "COLORS",
    "COUNTS",
    "NUM_TEMPLATES",
    "POSITIONS",
    "SHAPES",
    "Scene",
    "all_scenes",
    "caption",
    "draw_scene",
    "draw_scenes",
    "perturb",
    "random_scene",
]

Generator = Union[torch.Generator, random.Random]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
"""Shapes a scene can show (triangles point up, crosses are upright plus signs)."""

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 225),
    "yellow": (240, 215, 40),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
"""Colour names and their nominal RGB values (used for both shapes and backgrounds)."""

POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "center")
"""Where the group of shapes sits in the image."""

COUNTS: tuple[int, ...] = (1, 2, 3)
"""How many (identical) shapes a scene holds."""

ATTRIBUTES: dict[str, tuple] = {
    "shape": SHAPES,
    "color": tuple(COLORS),
    "background": tuple(COLORS),
    "position": POSITIONS,
    "count": COUNTS,
}
"""The vocabulary of every :class:`Scene` field, in field order."""

_COUNT_WORDS = {2: "two", 3: "three"}
_PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
_POSITION_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
_TEMPLATES = (
    "{objects} on a {background} background, {where}",
    "{objects} {where} of a {background} background",
    "a {background} background with {objects} {where}",
)
NUM_TEMPLATES: int = len(_TEMPLATES)
"""Number of caption templates accepted by :func:`caption`."""

# Layout, in units of the image side. Each position fixes the centre of the group and the axis the
# shapes are lined up along; each count fixes the spacing between shapes and their radius.
_GROUP_CENTERS = {
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
    "center": (0.5, 0.5),
}
_GROUP_AXES = {"left": (0, 1), "right": (0, 1), "top": (1, 0), "bottom": (1, 0), "center": (1, 0)}
_SPACING = {1: 0.0, 2: 0.40, 3: 0.32}
_RADIUS = {1: 0.19, 2: 0.15, 3: 0.12}
# Jitter amplitudes used when a generator is given to the drawing functions.
_GROUP_JITTER = 0.04
_OBJECT_JITTER = 0.015
_RADIUS_JITTER = 0.1
_COLOR_JITTER = 12.0


@dataclass(frozen=True)
class Scene:
    """One scene: ``count`` identical shapes of one colour on a plain background.

    Args:
        shape: One of :data:`SHAPES`.
        color: Colour name of the shapes, one of :data:`COLORS`.
        background: Colour name of the background; must differ from ``color``.
        position: Where the group of shapes sits, one of :data:`POSITIONS`. Shapes at ``left`` or
            ``right`` are stacked vertically, the others are lined up horizontally.
        count: Number of shapes, one of :data:`COUNTS`.

    Raises:
        ValueError: If a field is outside its vocabulary or ``color == background``.

    Example:
        >>> Scene("square", "yellow", "black", "top", 3)
        Scene(shape='square', color='yellow', background='black', position='top', count=3)
    """

    shape: str
    color: str
    background: str
    position: str
    count: int

    def __post_init__(self) -> None:
        for name, allowed in ATTRIBUTES.items():
            value = getattr(self, name)
            if value not in allowed or isinstance(value, bool):
                raise ValueError(f"Scene.{name} must be one of {allowed}, got {value!r}")
        if self.color == self.background:
            raise ValueError(f"Scene color and background must differ, both are {self.color!r}")


def _randbelow(generator: Generator | None, n: int) -> int:
    if isinstance(generator, random.Random):
        return generator.randrange(n)
    return int(torch.randint(n, (1,), generator=generator).item())


def _choice(generator: Generator | None, options: Sequence):
    return options[_randbelow(generator, len(options))]


def random_scene(generator: Generator | None = None) -> Scene:
    """Draw a scene uniformly at random (background uniform over colours other than the shapes').

    Args:
        generator: A ``torch.Generator`` or ``random.Random`` to draw from. ``None`` uses torch's
            global random state.

    Returns:
        A random :class:`Scene`. The result depends only on the generator's state.

    Example:
        >>> import random
        >>> random_scene(random.Random(0)) == random_scene(random.Random(0))
        True
    """
    shape = _choice(generator, SHAPES)
    color = _choice(generator, ATTRIBUTES["color"])
    background = _choice(generator, [c for c in ATTRIBUTES["background"] if c != color])
    position = _choice(generator, POSITIONS)
    count = _choice(generator, COUNTS)
    return Scene(shape, color, background, position, count)


def all_scenes() -> Iterator[Scene]:
    """Iterate over every valid scene once, in a fixed order.

    Returns:
        An iterator of all ``len(SHAPES) * 6 * 5 * len(POSITIONS) * len(COUNTS)`` scenes.

    Example:
        >>> len(list(all_scenes()))
        1800
    """
    for values in itertools.product(*ATTRIBUTES.values()):
        fields = dict(zip(ATTRIBUTES, values))
        if fields["color"] != fields["background"]:
            yield Scene(**fields)


def perturb(scene: Scene, generator: Generator | None = None, attribute: str | None = None) -> Scene:
    """Return a copy of ``scene`` with exactly one attribute changed to another valid value.

    Args:
        scene: The scene to change.
        generator: A ``torch.Generator`` or ``random.Random`` to draw from. ``None`` uses torch's
            global random state.
        attribute: Name of the field to change (a key of :data:`ATTRIBUTES`); drawn uniformly when
            ``None``.

    Returns:
        A valid :class:`Scene` equal to ``scene`` in every field except ``attribute``. A new shape
        colour never equals the background and vice versa.

    Raises:
        ValueError: If ``attribute`` is not a scene field.

    Example:
        >>> import random
        >>> s = Scene("circle", "red", "blue", "left", 2)
        >>> perturb(s, random.Random(0), attribute="count").count in (1, 3)
        True
    """
    if attribute is None:
        attribute = _choice(generator, tuple(ATTRIBUTES))
    elif attribute not in ATTRIBUTES:
        raise ValueError(f"attribute must be one of {tuple(ATTRIBUTES)}, got {attribute!r}")
    current = getattr(scene, attribute)
    forbidden = {current}
    if attribute == "color":
        forbidden.add(scene.background)
    elif attribute == "background":
        forbidden.add(scene.color)
    options = [v for v in ATTRIBUTES[attribute] if v not in forbidden]
    return replace(scene, **{attribute: _choice(generator, options)})


def caption(scene: Scene, template: int = 0) -> str:
    """Describe a scene in English.

    Args:
        scene: The scene to describe.
        template: Which of the :data:`NUM_TEMPLATES` sentence templates to use. Template 0 reads
            like ``"two red circles on a blue background, on the left"``, template 1 like
            ``"two red circles on the left of a blue background"`` and template 2 like
            ``"a blue background with two red circles on the left"``.

    Returns:
        The caption; it depends only on ``scene`` and ``template``.

    Raises:
        ValueError: If ``template`` is out of range.

    Example:
        >>> caption(Scene("triangle", "white", "green", "center", 1), template=2)
        'a green background with a white triangle in the center'
    """
    if not isinstance(template, int) or not 0 <= template < NUM_TEMPLATES:
        raise ValueError(f"template must be an int in [0, {NUM_TEMPLATES}), got {template!r}")
    if scene.count == 1:
        article = "an" if scene.color[0] in "aeiou" else "a"
        objects = f"{article} {scene.color} {scene.shape}"
    else:
        objects = f"{_COUNT_WORDS[scene.count]} {scene.color} {_PLURALS[scene.shape]}"
    return _TEMPLATES[template].format(
        objects=objects, background=scene.background, where=_POSITION_PHRASES[scene.position]
    )


def _torch_generator(generator: Generator | None) -> torch.Generator | None:
    if isinstance(generator, random.Random):
        return torch.Generator().manual_seed(generator.getrandbits(63))
    return generator


def _uniform(shape: tuple[int, ...], amplitude: float, generator: torch.Generator | None) -> torch.Tensor:
    if generator is None:
        return torch.zeros(shape)
    return (torch.rand(shape, generator=generator) * 2.0 - 1.0) * amplitude


def draw_scenes(
    scenes: Sequence[Scene],
    size: int = 32,
    generator: Generator | None = None,
) -> torch.Tensor:
    """Render a batch of scenes at once (vectorised over the batch).

    Shapes are drawn from signed distance functions with one pixel of anti-aliasing, so the result
    looks the same at any ``size``.

    Args:
        scenes: The scenes to draw.
        size: Side of the square images in pixels.
        generator: Optional ``torch.Generator`` or ``random.Random``. When given, the group position
            (about 1 pixel at size 32), each shape's position and size (about 10 %) and both colours
            (about 12 of 255 per channel) are jittered from it, so the images depend only on the
            generator's state. When ``None`` the canonical, jitter-free drawing is returned.

    Returns:
        A ``uint8`` tensor of shape ``(len(scenes), 3, size, size)``.

    Example:
        >>> images = draw_scenes([Scene("cross", "black", "white", "right", 3)] * 4, size=64)
        >>> images.shape
        torch.Size([4, 3, 64, 64])
    """
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    n = len(scenes)
    if n == 0:
        return torch.zeros(0, 3, size, size, dtype=torch.uint8)
    gen = _torch_generator(generator)
    k = max(COUNTS)

    # Per-object geometry in image-side units: centres (n, k), radii (n, k), validity (n, k).
    group = torch.tensor([_GROUP_CENTERS[s.position] for s in scenes])  # (n, 2)
    axis = torch.tensor([_GROUP_AXES[s.position] for s in scenes], dtype=torch.float32)
    counts = torch.tensor([s.count for s in scenes])
    spacing = torch.tensor([_SPACING[s.count] for s in scenes])
    radius = torch.tensor([_RADIUS[s.count] for s in scenes])
    slot = torch.arange(k, dtype=torch.float32)
    offset = (slot[None, :] - (counts[:, None] - 1) / 2.0) * spacing[:, None]  # (n, k)
    valid = slot[None, :] < counts[:, None]
    centers = group[:, None, :] + offset[..., None] * axis[:, None, :]  # (n, k, 2)
    centers = centers + _uniform((n, 1, 2), _GROUP_JITTER, gen) + _uniform((n, k, 2), _OBJECT_JITTER, gen)
    radii = radius[:, None] * (1.0 + _uniform((n, k), _RADIUS_JITTER, gen))

    # Signed distance (in pixels) from every pixel centre to every object.
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    dx = coords[None, None, None, :] - centers[..., 0, None, None]  # (n, k, 1, size)
    dy = coords[None, None, :, None] - centers[..., 1, None, None]  # (n, k, size, 1)
    r = radii[..., None, None]
    ax, ay = dx.abs(), dy.abs()
    shape_id = torch.tensor([SHAPES.index(s.shape) for s in scenes])[:, None, None, None]

    sdf = torch.sqrt(dx * dx + dy * dy) - r  # circle
    square = torch.maximum(ax, ay) - 0.85 * r
    sdf = torch.where(shape_id == 1, square, sdf)
    # Upward triangle: apex at (0, -r), base corners at (+-r, 0.8 r).
    slope = math.hypot(1.8, 1.0)
    triangle = torch.maximum((1.8 * ax - (dy + r)) / slope, dy - 0.8 * r)
    sdf = torch.where(shape_id == 2, triangle, sdf)
    arm = r / 3.0
    cross = torch.minimum(torch.maximum(ax - arm, ay - r), torch.maximum(ax - r, ay - arm))
    sdf = torch.where(shape_id == 3, cross, sdf)

    coverage = (0.5 - sdf * size).clamp(0.0, 1.0)  # one pixel of anti-aliasing
    coverage = torch.where(valid[..., None, None], coverage, torch.zeros(()))
    alpha = coverage.amax(dim=1, keepdim=True)  # (n, 1, size, size)

    fg = torch.tensor([COLORS[s.color] for s in scenes], dtype=torch.float32)
    bg = torch.tensor([COLORS[s.background] for s in scenes], dtype=torch.float32)
    fg = (fg + _uniform((n, 3), _COLOR_JITTER, gen)).clamp(0, 255)
    bg = (bg + _uniform((n, 3), _COLOR_JITTER, gen)).clamp(0, 255)
    image = bg[:, :, None, None] + (fg - bg)[:, :, None, None] * alpha
    return image.round().clamp(0, 255).to(torch.uint8)


def draw_scene(scene: Scene, size: int = 32, generator: Generator | None = None) -> torch.Tensor:
    """Render one scene.

    Args:
        scene: The scene to draw.
        size: Side of the square image in pixels.
        generator: Optional ``torch.Generator`` or ``random.Random`` for small jitter of position,
            size and colour (see :func:`draw_scenes`); ``None`` gives the canonical drawing.

    Returns:
        A ``uint8`` tensor of shape ``(3, size, size)`` (channels first, RGB).

    Example:
        >>> draw_scene(Scene("circle", "red", "blue", "center", 1)).shape
        torch.Size([3, 32, 32])
    """
    return draw_scenes([scene], size=size, generator=generator)[0]
