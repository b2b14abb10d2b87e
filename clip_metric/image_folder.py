"""Image/caption pairs from files, in the layouts image datasets already use.

Images: files, folders (their PNG/JPEG/WebP files, not recursive) or glob patterns. Captions,
first match wins:

1. ``--prompts FILE``: ``.jsonl`` (``file_name`` + ``text``/``prompt`` per line), ``.json``
   (``{"file_name": "prompt"}``), ``.csv``/``.tsv`` (``file_name`` + ``text``/``prompt`` columns),
   or ``.txt`` (one prompt a line, in the sorted order of the images; counts must match);
2. a ``metadata.jsonl`` in the image's folder (Hugging Face ``imagefolder`` layout);
3. a ``.txt`` beside the image with the same stem (``x.png`` + ``x.txt``).

Nothing is dropped silently: images without a caption, and captions of missing images, are
reported by name.
"""

from __future__ import annotations

import csv
import glob
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")


@dataclass
class Pairs:
    """Images matched to captions, and what could not be matched (by name)."""

    images: list[Path] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    missing_captions: list[Path] = field(default_factory=list)
    missing_images: list[str] = field(default_factory=list)


def find_images(sources: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand files, folders and glob patterns into a sorted, de-duplicated list of images.

    Raises:
        FileNotFoundError: for a source that matches nothing.
        ValueError: for a file that is not a PNG, JPEG or WebP image.
    """
    found: dict[Path, None] = {}
    for source in sources:
        path = Path(source)
        if path.is_dir():
            matches = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                raise ValueError(f"{path} is not an image file (expected one of {IMAGE_EXTENSIONS})")
            matches = [path]
        else:
            matches = sorted(Path(p) for p in glob.glob(str(source)) if Path(p).suffix.lower() in IMAGE_EXTENSIONS)
            if not matches:
                raise FileNotFoundError(f"No images found for {str(source)!r}")
        for match in matches:
            found.setdefault(match.resolve(), None)
    return sorted(found)


def _read_caption_table(path: Path) -> dict[str, str]:
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    table: dict[str, str] = {}
    if suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {number}: invalid JSON ({err.msg})") from None
            table[_field(row, ("file_name",), path, number)] = _field(row, ("text", "prompt", "caption"), path, number)
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, line {err.lineno}: invalid JSON ({err.msg})") from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ValueError(f"{path}: expected a JSON object mapping file names to prompts")
        table = dict(data)
    elif suffix in (".csv", ".tsv"):
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ",")
        for number, row in enumerate(reader, start=2):
            table[_field(row, ("file_name",), path, number)] = _field(row, ("text", "prompt", "caption"), path, number)
    else:
        raise ValueError(f"{path}: unsupported prompts file (expected .jsonl, .json, .csv, .tsv or .txt)")
    return table


def _field(row: dict, names: Iterable[str], path: Path, number: int) -> str:
    for name in names:
        value = row.get(name)
        if isinstance(value, str) and value.strip():
            return value
    raise ValueError(f"{path}, line {number}: expected a non-empty {' or '.join(repr(n) for n in names)} field")


def _lookup(table: dict[str, str], image: Path, base: Path | None) -> str | None:
    keys = [image.name, str(image)]
    if base is not None:
        try:
            keys.insert(0, str(image.relative_to(base)))
        except ValueError:
            pass
    for key in keys:
        if key in table:
            return table[key]
    return None


def pair_images_with_captions(images: Sequence[Path], prompts_file: str | os.PathLike | None = None) -> Pairs:
    """Match each image to its caption (see the module docstring for the layouts).

    Raises:
        ValueError: for a malformed prompts file, or a ``.txt`` prompts file whose line count
            differs from the number of images.
    """
    pairs = Pairs()
    if prompts_file is not None:
        path = Path(prompts_file)
        if not path.is_file():
            raise FileNotFoundError(f"Prompts file not found: {path}")
        if path.suffix.lower() == ".txt":
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            if len(lines) != len(images):
                raise ValueError(f"{path} has {len(lines)} prompts but {len(images)} images were given")
            pairs.images, pairs.prompts = list(images), lines
            return pairs
        table = _read_caption_table(path)
        used = set()
        for image in images:
            caption = _lookup(table, image, path.parent.resolve())
            _add(pairs, image, caption)
            if caption is not None:
                used.update(k for k in (image.name, str(image)) if k in table)
                try:
                    used.add(str(image.relative_to(path.parent.resolve())))
                except ValueError:
                    pass
        pairs.missing_images = sorted(k for k in table if k not in used)
        return pairs

    metadata: dict[Path, dict[str, str]] = {}
    for image in images:
        folder = image.parent
        if folder not in metadata:
            meta = folder / "metadata.jsonl"
            metadata[folder] = _read_caption_table(meta) if meta.is_file() else {}
        caption = _lookup(metadata[folder], image, folder)
        if caption is None:
            sidecar = image.with_suffix(".txt")
            if sidecar.is_file():
                caption = sidecar.read_text(encoding="utf-8").strip() or None
        _add(pairs, image, caption)
    return pairs


def _add(pairs: Pairs, image: Path, caption: str | None) -> None:
    if caption is None or not caption.strip():
        pairs.missing_captions.append(image)
    else:
        pairs.images.append(image)
        pairs.prompts.append(caption.strip())
