"""Image/caption pairs from files, in the layouts image datasets already use.

Images: files, folders (their PNG/JPEG/WebP files, not recursive: images in subfolders are
counted and reported, not scored) or glob patterns. A symbolic link is an image of its own, found where the link is (its caption is the one beside the link);
dangling links, link loops and special files (FIFOs, devices, sockets) with image names are
skipped and named, never opened. Captions, first match wins:

1. ``--prompts parti`` (or ``geneval``, ``default``): images named after the library's prompt
   ids (``parti-0001.png``, or ``parti-0001-2.png`` for a second image of that prompt);
   ``--prompts FILE``: ``.jsonl`` (``file_name`` + ``text``/``prompt`` per line), ``.json``
   (``{"file_name": "prompt"}``), ``.csv``/``.tsv`` (``file_name`` + ``text``/``prompt`` columns),
   or ``.txt`` (one prompt a line, in the sorted order of the images; counts must match);
2. a ``metadata.jsonl`` in the image's folder (Hugging Face ``imagefolder`` layout);
3. a ``.txt`` beside the image with the same stem (``x.png`` + ``x.txt``).

Nothing is dropped silently: images without a caption, captions of missing images, unreadable
caption files and files given twice are reported by name; a file name captioned twice is an
error.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from clip_metric.cli._names import shown
from clip_metric.prompts import builtin_prompts, bundled_library_name
from clip_metric.utilities.readers import file_problem, iter_jsonl, located, parse_json, read_table, read_text, split_lines

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
_TEXT_FIELDS = ("text", "prompt", "caption")


@dataclass
class Pairs:
    """Images matched to captions, and what could not be matched (by name).

    ``keys[i]`` names the prompt of ``images[i]`` (the library's prompt id, else the caption), so
    several images of one prompt count as one prompt; ``sources`` are the caption files read.
    """

    images: list[Path] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    sources: list[Path] = field(default_factory=list)
    missing_captions: list[Path] = field(default_factory=list)
    missing_images: list[str] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


# What the skipped-file report says for each reason a path is not an image file.
_SKIP_REASONS = {
    "missing": "no such file",
    "dangling": "dangling symbolic link",
    "directory": "a directory",
    "special": "not a regular file (FIFO, device or socket)",
}


def _kind(path: Path) -> str | None:
    """Why ``path`` cannot be read as an image file, or None if it can."""
    problem = file_problem(path)
    if problem is None:
        return None
    kind, detail = problem
    return _SKIP_REASONS.get(kind, f"cannot be read ({detail})")  # e.g. a symbolic link loop


def _images_below(folder: Path) -> int:
    """How many image files the subfolders of ``folder`` hold (links to folders not followed)."""
    count = 0
    for root, dirs, files in os.walk(folder, onerror=lambda err: None):
        if Path(root) != folder:
            count += sum(1 for name in files if Path(name).suffix.lower() in IMAGE_EXTENSIONS)
    return count


def find_images(
    sources: Sequence[str | os.PathLike],
    skipped: list[tuple[Path, str]] | None = None,
    nested: dict[Path, int] | None = None,
) -> list[Path]:
    """Expand files, folders and glob patterns into a sorted, de-duplicated list of images.

    Paths are made absolute but links are not followed, so two links to one file are two images.
    Entries that cannot be read as files are appended to ``skipped`` with the reason. Folders
    are not searched recursively: ``nested`` receives, for each given folder whose subfolders
    hold images, how many they hold.

    Raises:
        FileNotFoundError: for a source that matches nothing.
        ValueError: for a file that is not a PNG, JPEG or WebP image.
    """
    skipped = [] if skipped is None else skipped
    found: dict[Path, None] = {}
    for source in sources:
        path = Path(source)
        if path.is_dir():
            matches = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            below = _images_below(path) if nested is not None else 0
            if below:
                nested[Path(os.path.abspath(path))] = below
        elif path.exists() or path.is_symlink():
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                raise ValueError(f"{shown(path)} is not an image file (expected one of {IMAGE_EXTENSIONS})")
            matches = [path]
        else:
            matches = sorted(Path(p) for p in glob.glob(str(source)) if Path(p).suffix.lower() in IMAGE_EXTENSIONS)
            if not matches:
                raise FileNotFoundError(f"No images found for {str(source)!r}")
        for match in matches:
            absolute = Path(os.path.abspath(match))
            reason = _kind(absolute)
            if reason is not None:
                skipped.append((absolute, reason))
            else:
                found.setdefault(absolute, None)
    return sorted(found)


def _add_caption(table: dict[str, str], key: str, caption: str, path: Path, line: int) -> None:
    if key in table:
        raise located(path, line, f"{key!r} is captioned twice")
    table[key] = caption


def _field(row: Mapping, names: Iterable[str], path: Path, number: int) -> str:
    if not isinstance(row, Mapping):
        raise located(path, number, f"expected a JSON object but got {type(row).__name__}: {row!r}"[:200])
    for name in names:
        value = row.get(name)
        if isinstance(value, str) and value.strip():
            return value
    raise located(path, number, f"expected a non-empty {' or '.join(repr(n) for n in names)} field")


def read_caption_table(path: Path) -> dict[str, str]:
    """``{file_name: caption}`` from a ``.jsonl``, ``.json``, ``.csv`` or ``.tsv`` file.

    Raises:
        ValueError: naming the file and line, for malformed content or a file name given twice.
    """
    suffix = path.suffix.lower()
    text = read_text(path, "prompts file")
    table: dict[str, str] = {}
    if suffix == ".jsonl":
        for number, row in iter_jsonl(text, path):
            _add_caption(table, _field(row, ("file_name",), path, number), _field(row, _TEXT_FIELDS, path, number), path, number)
    elif suffix == ".json":
        data = parse_json(text, path)
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise located(path, None, "expected a JSON object mapping file names to prompts")
        table = dict(data)
    elif suffix in (".csv", ".tsv"):
        header, rows = read_table(text, path, "\t" if suffix == ".tsv" else ",")
        columns = {name.lower() for name in header}
        for wanted in (("file_name",), _TEXT_FIELDS):
            if header and not columns & set(wanted):
                # A missing column is the header's fault, not the first row's.
                raise located(path, "header", f"expected a {' or '.join(repr(n) for n in wanted)} column but the "
                              f"columns are {header!r}")
        for number, row in rows:
            _add_caption(table, _field(row, ("file_name",), path, number), _field(row, _TEXT_FIELDS, path, number), path, number)
    else:
        raise located(path, None, "unsupported prompts file (expected .jsonl, .json, .csv, .tsv or .txt)")
    return table


def _lookup(table: dict[str, str], image: Path, base: Path | None) -> tuple[str, str] | None:
    keys = [image.name, str(image)]
    if base is not None:
        try:
            keys.insert(0, str(image.relative_to(base)))
        except ValueError:
            pass
    for key in keys:
        if key in table:
            return key, table[key]
    return None


def pair_images_with_captions(images: Sequence[Path], prompts_file: str | os.PathLike | None = None) -> Pairs:
    """Match each image to its caption (see the module docstring for the layouts).

    Raises:
        ValueError: for a malformed prompts file, or a ``.txt`` prompts file whose line count
            differs from the number of images.
    """
    pairs = Pairs()
    library = bundled_library_name(prompts_file)  # a bundled name is the library, never ./parti
    if library is not None:
        return _pair_with_library(images, library)
    if prompts_file is not None:
        path = Path(prompts_file)
        pairs.sources.append(path)
        if path.suffix.lower() == ".txt":
            lines = [line.strip() for line in split_lines(read_text(path, "prompts file"), path) if line.strip()]
            if len(lines) != len(images):
                raise ValueError(f"{shown(path)} has {len(lines)} prompts but {len(images)} images were given")
            pairs.images, pairs.prompts, pairs.keys = list(images), lines, list(lines)
            return pairs
        table = read_caption_table(path)
        base = Path(os.path.abspath(path.parent))
        used = set()
        for image in images:
            found = _lookup(table, image, base)
            _add(pairs, image, found[1] if found else None)
            if found:
                used.add(found[0])
        pairs.missing_images = sorted(k for k in table if k not in used)
        return pairs

    metadata: dict[Path, dict[str, str]] = {}
    for image in images:
        folder = image.parent
        if folder not in metadata:
            meta = folder / "metadata.jsonl"
            metadata[folder] = {}
            if meta.exists() or meta.is_symlink():
                pairs.sources.append(meta)
                metadata[folder] = read_caption_table(meta)
        found = _lookup(metadata[folder], image, folder)
        caption = found[1] if found else None
        if caption is None:
            sidecar = image.with_suffix(".txt")
            if sidecar.exists() or sidecar.is_symlink():
                pairs.sources.append(sidecar)
                try:
                    caption = read_text(sidecar, "caption file").strip() or None
                except (OSError, ValueError) as err:
                    pairs.skipped.append((image, f"its caption cannot be read: {err}"))
                    continue
        _add(pairs, image, caption)
    return pairs


def _pair_with_library(images: Sequence[Path], name: str) -> Pairs:
    """Images named after a bundled library's prompt ids (``parti-0001.png``, ``parti-0001-2.png``).

    A stem is the prompt id, optionally followed by ``-<k>`` for the k-th image of that prompt.
    Prompts of the library no image is named after are reported as missing images.
    """
    library = {prompt.id: prompt.text for prompt in builtin_prompts(name)}
    pairs, used = Pairs(), set()
    for image in images:
        stem = image.stem
        key = stem if stem in library else stem.rsplit("-", 1)[0] if stem.rsplit("-", 1)[-1].isdigit() else stem
        _add(pairs, image, library.get(key), key)
        if key in library:
            used.add(key)
    pairs.missing_images = [f"{key} ({name})" for key in library if key not in used]
    return pairs


def _add(pairs: Pairs, image: Path, caption: str | None, key: str | None = None) -> None:
    if caption is None or not caption.strip():
        pairs.missing_captions.append(image)
    else:
        pairs.images.append(image)
        pairs.prompts.append(caption.strip())
        pairs.keys.append(caption.strip() if key is None else key)
