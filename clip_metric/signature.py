"""A signature that says exactly how a CLIP score was made, as sacreBLEU's does for BLEU.

Two ``clip/mean`` values can be compared only if everything that moves the number is the same:
the CLIP model and its weights, the image size and preprocessing, the precision, the score
scale, the prompts, how each prompt's seed is chosen and how many images each prompt gets.
:class:`ScoreSignature` pins those down as a dict and as one compact, human-readable string::

    clip-metric 0.1.0|model:openai/clip-vit-large-patch14-336@main|image:short336,bicubic+aa,crop336x336|precision:bf16-mixed|scale:cosine|prompts:parti#3f9a2c1e,n1632,all|seed:sha256(text)|images/prompt:1

The same settings give the same signature on any machine, world size and batch size: nothing
in it depends on where or how fast the scores were computed.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

__all__ = ["SEED_RULE", "ScoreSignature", "library_hash", "model_fingerprint", "rendering_field", "signature_of"]

SEED_RULE = "sha256(text)"
"""How a prompt's seed is chosen: the first 8 bytes of the SHA-256 of its text (31 bits)."""

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5")


@dataclass(frozen=True)
class ScoreSignature:
    """Everything that changes a CLIP score, field by field.

    Args:
        version: the package version.
        model: hub id (with ``@revision``), or ``local:<hash>`` of a local directory's weights,
            or ``preloaded:<hash>`` of a model object's parameters.
        image: image size, resize filter (``+aa`` when antialiased) and center crop.
        precision: the resolved precision of the CLIP forward (``"auto"`` never appears).
        scale: ``cosine``, ``torchmetrics`` or ``clipscore``.
        prompts: library name, a hash of the prompt texts in order, the count, and the subset rule.
        seed: how each prompt's seed is chosen.
        images_per_prompt: images scored per prompt: a count, or ``"<min>-<max>"`` (``"1-2"``)
            when prompts got different numbers of images.
        rendering: how the images were rendered, where the package rendered them (see
            :func:`rendering_field`); ``"-"`` where it did not know.

    Example:
        >>> a = ScoreSignature("0.1.0", "m", "32,bicubic+aa,crop32", "32", "cosine", "p#00,n2,all", SEED_RULE, 1)
        >>> b = ScoreSignature("0.1.0", "m", "32,bicubic+aa,crop32", "bf16-mixed", "cosine", "p#00,n2,all", SEED_RULE, 1)
        >>> a.differences(b)
        ['precision: 32 vs bf16-mixed']
    """

    version: str
    model: str
    image: str
    precision: str
    scale: str
    prompts: str
    seed: str
    images_per_prompt: int | str
    rendering: str = "-"

    def __str__(self) -> str:
        return "|".join(
            [f"clip-metric {self.version}"]
            + [f"{name.replace('_per_', '/')}:{getattr(self, name)}" for name in _FIELDS[1:]
               if not (name in _OPTIONAL and getattr(self, name) == "-")]  # unknown: the string older versions wrote
        )

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (for JSON, logger configs and score-file headers)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScoreSignature:
        """Read a signature back from :meth:`as_dict`.

        Raises:
            ValueError: if a field is missing, or holds the wrong type (a number ``model``, a
                string ``images_per_prompt``: the value and its type are named).
        """
        missing = [name for name in _FIELDS if name not in data and name not in _OPTIONAL]
        if missing:
            raise ValueError(f"Expected a score signature with fields {_FIELDS} but got one without {missing}")
        # Typed, so that "1" and 1 are never compared (nor printed alike as "1 vs 1").
        malformed = [
            f"{name}={data[name]!r} ({type(data[name]).__name__})"
            for name in _FIELDS
            if name in data and not _well_typed(name, data[name])
        ]
        if malformed:
            raise ValueError(
                "Expected a score signature of string fields and an images_per_prompt that is a positive integer "
                "or a '<min>-<max>' range with min <= max but got " + ", ".join(malformed)
            )
        return cls(**{name: data[name] for name in _FIELDS if name in data})

    def differences(self, other: ScoreSignature) -> list[str]:
        """``"field: mine vs theirs"`` for every field that differs (the package version included)."""
        return [
            f"{name}: {getattr(self, name)} vs {getattr(other, name)}"
            for name in _FIELDS
            if getattr(self, name) != getattr(other, name)
        ]


_FIELDS = tuple(f.name for f in fields(ScoreSignature))
_IMAGE_RANGE = re.compile(r"[1-9][0-9]*-[1-9][0-9]*")


def _well_typed(name: str, value: Any) -> bool:
    if name == "images_per_prompt":
        if isinstance(value, str):
            # A range reads "<min>-<max>": an inverted one ("3-1") is malformed, not a range.
            if _IMAGE_RANGE.fullmatch(value) is None:
                return False
            low, high = (int(part) for part in value.split("-"))
            return low <= high
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1
    return isinstance(value, str)
# Fields later versions added: a signature read from an older score file has their default.
_OPTIONAL = ("rendering",)


def rendering_field(rendering: Mapping[str, Any]) -> str:
    """The ``rendering`` field from rendering settings (``DiffusersGenerator.rendering`` and the like).

    Steps, guidance, size, pipeline and scheduler classes and dtype in a short form; a negative
    prompt and further pipeline arguments as hashes; absent settings (the pipeline's defaults) left out.

    Example:
        >>> rendering_field({"num_inference_steps": 30, "guidance_scale": 7.5, "height": 512, "width": 512,
        ...                  "scheduler": "DDIMScheduler"})
        'steps30,cfg7.5,512x512,DDIMScheduler'
    """
    import json

    parts = []
    if rendering.get("num_inference_steps") is not None:
        parts.append(f"steps{rendering['num_inference_steps']}")
    if rendering.get("guidance_scale") is not None:
        parts.append(f"cfg{float(rendering['guidance_scale']):g}")
    height, width = rendering.get("height"), rendering.get("width")
    if height is not None or width is not None:
        parts.append(f"{height or 'default'}x{width or 'default'}")
    parts += [str(rendering[key]) for key in ("pipeline", "scheduler", "dtype") if rendering.get(key)]
    if rendering.get("negative_prompt"):
        parts.append(f"neg#{library_hash([str(rendering['negative_prompt'])])}")
    if rendering.get("seed_offset"):
        parts.append(f"seed+{rendering['seed_offset']}")
    if rendering.get("kwargs"):
        parts.append(f"kwargs#{library_hash([json.dumps(rendering['kwargs'], sort_keys=True, default=repr)])}")
    return ",".join(parts) or "-"


def library_hash(texts: Sequence[str]) -> str:
    """A short hash of prompt texts, in order (8 hex digits of SHA-256).

    Example:
        >>> library_hash(["a red fox"]) == library_hash(["a red fox"]) != library_hash(["a red fox."])
        True
    """
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    return digest.hexdigest()[:8]


def _directory_hash(path: Path) -> str:
    digest = hashlib.sha256()
    weights = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    for file in weights:
        digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:12]


def _parameters_hash(model: Any) -> str:
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + b"\0")
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def model_fingerprint(encoder: Any) -> str:
    """The ``model`` field: hub id and revision, or a hash of a local directory's or a model's weights."""
    cached = encoder.__dict__.get("_fingerprint")
    if cached is not None:
        return cached
    source = encoder._source
    if source is None:
        fingerprint = f"preloaded:{_parameters_hash(encoder.model)}"
    else:
        name, kwargs = source
        path = Path(os.path.expanduser(name))
        if path.is_dir():
            fingerprint = f"local:{_directory_hash(path)}"
        else:
            fingerprint = f"{name}@{kwargs.get('revision') or 'main'}"
    encoder.__dict__["_fingerprint"] = fingerprint
    return fingerprint


def _image_field(transform: Any) -> str:
    size = transform.size or (transform.shortest_edge, transform.shortest_edge)
    size_text = f"{size[0]}" if size[0] == size[1] else f"{size[0]}x{size[1]}"
    if transform.size is None and transform.shortest_edge is not None:
        size_text = f"short{transform.shortest_edge}"
    filter_text = transform.interpolation + ("" if transform.interpolation == "nearest" else "+aa")
    crop = "nocrop" if transform.crop is None else f"crop{transform.crop[0]}x{transform.crop[1]}"
    return f"{size_text},{filter_text},{crop}"


def signature_of(
    encoder: Any,
    *,
    scale: str,
    library: str,
    texts: Sequence[str],
    subset: str = "all",
    images_per_prompt: int | str = 1,
) -> ScoreSignature:
    """The signature of scores from ``encoder`` on ``texts``.

    Args:
        encoder: the :class:`~clip_metric.ClipEncoder` that scores.
        scale: the score scale.
        library: the prompt library's name (``"parti"``, ``"default"``, a file name, ...).
        texts: the prompts scored, in library order, each once.
        subset: how the prompts were chosen from the library (``"all"``, ``"max512"``, ...).
        images_per_prompt: images scored per prompt (``"<min>-<max>"`` when it varies).
    """
    from clip_metric import __version__

    precision = encoder.active_precision or encoder.precision
    prompts = f"{library}#{library_hash(texts)},n{len(texts)},{subset}"
    return ScoreSignature(
        __version__, model_fingerprint(encoder), _image_field(encoder.transform), precision, scale, prompts,
        SEED_RULE, images_per_prompt,
    )
