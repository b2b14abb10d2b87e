"""Per-prompt score files: the one schema, its writer and its readers.

The Lightning callback writes one file per evaluation, ``clip-metric score --output`` writes one
per run, and ``clip-metric compare`` reads them. A file is JSON Lines: a header object first,
then one row per scored prompt::

    {"format": "clip-metric-scores", "version": 1, "rows": 2, "step": 100}
    {"prompt_id": "animals-fox", "prompt": "a red fox in the snow", "seed": 1838700160, "score": 0.3121, "tags": {"category": "animals"}}
    {"prompt_id": "vehicles-car", "prompt": "a blue car in the rain", "seed": 99, "score": 0.2873, "tags": {"category": "vehicles"}}

The header says how many rows follow, so a reader refuses a file that lost its end; files are
written to a temporary name and renamed into place, so a kill mid-write leaves the old file (or
none), and a link planted at the destination is replaced, never followed. ``.csv`` output holds
the same columns (no header object) for spreadsheets.

Row fields: ``prompt_id`` (str), ``prompt`` (str), ``score`` (float on the run's scale, within
that scale's range: 1 for cosines, 2.5 for CLIPScore, 100 for torchmetrics' scale, or 100 when
the header names no scale), ``seed`` (int or null), and optionally ``tags`` (the prompt's tags,
an object of strings; in CSV a JSON object in one cell) and ``file`` (the image path, for
scored folders).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clip_metric.utilities.readers import iter_jsonl, located, read_table, read_text

FORMAT = "clip-metric-scores"
VERSION = 1
COLUMNS = ("prompt_id", "prompt", "seed", "score", "tags", "file")
# The largest score each scale can give; a file that does not say its scale may hold any of them.
SCALE_BOUNDS = {"cosine": 1.0, "clipscore": 2.5, "torchmetrics": 100.0}

__all__ = ["COLUMNS", "FORMAT", "ScoreFile", "ScoreRecord", "is_score_file", "read_scores", "write_scores"]


@dataclass(frozen=True)
class ScoreRecord:
    """One scored prompt.

    ``tags`` are the prompt's tags (``{"category": "Animals", "challenge": "Basic"}``);
    ``category=`` is shorthand for the ``category`` tag, and :attr:`category` reads it.

    Example:
        >>> record = ScoreRecord("fox", "a red fox", 0.31, seed=7, category="animals")
        >>> record.key, record.tags, record.category
        (('fox', 'a red fox', 7), {'category': 'animals'}, 'animals')
    """

    prompt_id: str
    prompt: str
    score: float
    seed: int | None = None
    tags: Mapping[str, str] = field(default_factory=dict, compare=True, hash=False)
    file: str | None = None

    def __init__(
        self,
        prompt_id: str,
        prompt: str,
        score: float,
        seed: int | None = None,
        *,
        tags: Mapping[str, str] | None = None,
        file: str | None = None,
        category: str | None = None,
    ) -> None:
        merged = dict(tags or {})
        if category is not None:
            if merged.get("category", category) != category:
                raise ValueError(f"Expected category {category!r} to agree with tags['category'] {merged['category']!r}")
            merged = {"category": category, **{k: v for k, v in merged.items() if k != "category"}}
        for name, value in (("prompt_id", prompt_id), ("prompt", prompt), ("score", score), ("seed", seed),
                            ("tags", merged), ("file", file)):
            object.__setattr__(self, name, value)

    @property
    def category(self) -> str | None:
        """The ``category`` tag, or None."""
        value = self.tags.get("category")
        return value if isinstance(value, str) else None

    @property
    def key(self) -> tuple[str, str, int | None]:
        """What pairs two evaluations' rows: the same prompt (id and text) from the same seed."""
        return (self.prompt_id, self.prompt, self.seed)

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {"prompt_id": self.prompt_id, "prompt": self.prompt, "seed": self.seed, "score": self.score}
        if self.tags:
            row["tags"] = dict(self.tags)
        if self.file is not None:
            row["file"] = self.file
        return row


@dataclass(frozen=True)
class ScoreFile:
    """A score file as read: where it is, its header and its rows."""

    path: Path
    records: tuple[ScoreRecord, ...]
    step: int | None = None
    header: Mapping[str, Any] = field(default_factory=dict)


def _check_record(record: Any, bound: float = 100.0) -> ScoreRecord:
    """A row the reader will accept, or a ValueError now (not a file that cannot be read later)."""
    if not isinstance(record, ScoreRecord):
        raise ValueError(f"Expected ScoreRecord rows but got {type(record).__name__}")
    if isinstance(record.score, bool) or not isinstance(record.score, (int, float)) or not math.isfinite(record.score):
        raise ValueError(f"Expected a finite float score for prompt {record.prompt_id!r} but got {record.score!r}")
    if abs(record.score) > bound * (1 + 1e-6):
        raise ValueError(
            f"Expected a score within [-{bound:g}, {bound:g}] (the scale's range) for prompt {record.prompt_id!r} "
            f"but got {record.score!r}"
        )
    if not isinstance(record.prompt_id, str) or not record.prompt_id:
        raise ValueError(f"Expected a non-empty string prompt_id but got {record.prompt_id!r}")
    if not isinstance(record.prompt, str) or not record.prompt.strip():
        raise ValueError(f"Expected a non-empty string prompt for {record.prompt_id!r} but got {record.prompt!r}")
    if record.seed is not None and (isinstance(record.seed, bool) or not isinstance(record.seed, int)):
        raise ValueError(f"Expected an integer seed (or None) for {record.prompt_id!r} but got {record.seed!r}")
    if record.file is not None and not isinstance(record.file, str):
        raise ValueError(f"Expected a string file (or None) for {record.prompt_id!r} but got {record.file!r}")
    for name, value in record.tags.items():
        if not isinstance(name, str) or not name or not isinstance(value, str):
            raise ValueError(f"Expected string tags for {record.prompt_id!r} but got {name!r}: {value!r}")
    return record


def _checked_rows(records: Iterable[ScoreRecord], bound: float = 100.0) -> list[dict[str, Any]]:
    rows, seen = [], set()
    for record in records:
        _check_record(record, bound)
        if record.key in seen:
            raise ValueError(
                f"Expected each prompt once per seed but prompt {record.prompt_id!r} with seed {record.seed} "
                "is given twice"
            )
        seen.add(record.key)
        rows.append(record.to_dict())
    return rows


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    # Minimal quoting quotes a field holding "\n" but not one holding a lone "\r", which every
    # reader takes for a line break: such rows are written fully quoted.
    quoted = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writeheader()
    for row in rows:
        if "tags" in row:  # one cell: the tags as a JSON object
            row = {**row, "tags": json.dumps(row["tags"], ensure_ascii=False)}
        has_cr = any(isinstance(value, str) and "\r" in value for value in row.values())
        (quoted if has_cr else writer).writerow(row)
    return buffer.getvalue()


def _create_temporary(directory: Path, name: str) -> tuple[int, str]:
    """A new, empty temporary file beside the destination, with ordinary permissions.

    Unlike :func:`tempfile.mkstemp` (mode 0600), the file is created with mode 0666 less the
    umask, as any file the process writes, so the renamed score file is readable as usual.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        candidate = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(candidate, flags, 0o666), candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"Could not create a temporary file in {directory}")


def write_scores(
    path: str | os.PathLike,
    records: Iterable[ScoreRecord],
    *,
    step: int | None = None,
    header: Mapping[str, Any] | None = None,
    exclusive: bool = False,
) -> Path:
    """Write a score file atomically (temporary file, then rename).

    Args:
        path: destination; ``.csv`` writes CSV columns, anything else JSON Lines with a header.
        records: the rows.
        step: the training step, recorded in the header.
        header: more header fields (e.g. the run's scale).
        exclusive: refuse to replace an existing file (``FileExistsError``), atomically.

    Returns:
        The path written.

    Raises:
        FileExistsError: with ``exclusive=True``, if ``path`` exists.
        ValueError: for a row the reader would refuse (a non-finite or boolean score, an empty
            prompt or prompt id, a non-integer seed, the same prompt and seed twice); nothing is
            written then.
    """
    path = Path(path)
    if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
        raise ValueError(f"Expected `step` to be an int or None but got {step!r}")
    reserved = sorted({"format", "version", "rows", "step"} & set(header or {}))
    if reserved:
        raise ValueError(f"Expected header fields other than {reserved} (the writer sets them) but got {dict(header or {})!r}")
    rows = _checked_rows(records, SCALE_BOUNDS.get(dict(header or {}).get("scale"), 100.0))
    if path.suffix.lower() == ".csv":
        text = _csv_text(rows)
    else:
        head = {**dict(header or {}), "format": FORMAT, "version": VERSION, "rows": len(rows), "step": step}
        lines = [json.dumps(head, ensure_ascii=False, allow_nan=False)]
        lines += [json.dumps(row, ensure_ascii=False, allow_nan=False) for row in rows]
        text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = _create_temporary(path.parent, path.name)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        if exclusive:
            # A hard link fails if the name exists: no check-then-write race with another run.
            os.link(temporary, path)
            os.unlink(temporary)
        else:
            os.replace(temporary, path)  # replaces a link at `path`, never writes through it
    except BaseException:
        if os.path.lexists(temporary):
            os.unlink(temporary)
        raise
    return path


def _text(row: Mapping[str, Any], name: str, path: Path, line: int, optional: bool = False) -> str | None:
    value = row.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str) or (not optional and not value.strip()):
        raise located(path, line, f"expected a non-empty string {name!r} but got {value!r}")
    return value


def _row_to_record(row: Mapping[str, Any], path: Path, line: int, bound: float = 100.0) -> ScoreRecord:
    if not isinstance(row, Mapping):
        raise located(path, line, f"expected a JSON object but got {type(row).__name__}")
    score = row.get("score")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise located(path, line, f"expected a finite number 'score' but got {score!r}")
    if abs(score) > bound * (1 + 1e-6):
        raise located(path, line, f"expected a score within [-{bound:g}, {bound:g}] (the scale's range) but got {score!r}")
    seed = row.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise located(path, line, f"expected an integer 'seed' (or null) but got {seed!r}")
    prompt = _text(row, "prompt", path, line)
    prompt_id = row.get("prompt_id", prompt)
    if not isinstance(prompt_id, str) or not prompt_id:
        raise located(path, line, f"expected a non-empty string 'prompt_id' but got {prompt_id!r}")
    tags = row.get("tags") or {}
    if isinstance(tags, str):  # CSV: the tags cell holds a JSON object
        try:
            tags = json.loads(tags)
        except ValueError:
            raise located(path, line, f"expected a JSON object of tags but got {tags!r}") from None
    if not isinstance(tags, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise located(path, line, f"expected 'tags' to map names to strings but got {tags!r}")
    category = _text(row, "category", path, line, True)  # files that kept one category beside the tags
    return ScoreRecord(
        prompt_id, prompt, float(score), seed, tags=tags, category=category, file=_text(row, "file", path, line, True)
    )


def _csv_row(row: dict[str, str], path: Path, line: int) -> dict[str, Any]:
    out: dict[str, Any] = {k: (v if v != "" else None) for k, v in row.items()}
    for name, kind in (("score", float), ("seed", int)):
        if out.get(name) is not None:
            try:
                out[name] = kind(out[name])
            except ValueError:
                raise located(path, line, f"expected a number {name!r} but got {row[name]!r}") from None
    return out


def is_score_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` starts with a score-file header; reads its first line only.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp(), "notes.jsonl")
        >>> _ = path.write_text('{"note": 1}\\n')
        >>> is_score_file(path)
        False
    """
    try:
        with open(path, encoding="utf-8-sig") as handle:
            first = handle.readline()
        return json.loads(first).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read_scores(path: str | os.PathLike) -> ScoreFile:
    """Read and check a score file.

    Raises:
        FileNotFoundError: if there is no file.
        ValueError: naming the file and line, for a missing or foreign header, fewer or more rows
            than the header announces (an incomplete file), a malformed row (non-finite or
            boolean score, non-integer seed, missing prompt), or the same prompt and seed twice.
    """
    path = Path(path)
    text = read_text(path, "score file")
    if path.suffix.lower() == ".csv":
        _, table = read_table(text, path, ",")
        rows = [(line, _csv_row(row, path, line)) for line, row in table]
        header: dict[str, Any] = {}
    else:
        lines = list(iter_jsonl(text, path))
        if not lines or not isinstance(lines[0][1], Mapping) or lines[0][1].get("format") != FORMAT:
            raise located(path, lines[0][0] if lines else None, f"not a clip-metric score file (no {FORMAT!r} header)")
        header = dict(lines[0][1])
        if header.get("version") != VERSION:
            raise located(path, lines[0][0], f"unsupported score file version {header.get('version')!r}")
        rows = lines[1:]
        expected = header.get("rows")
        if isinstance(expected, bool) or not isinstance(expected, int) or expected < 0:
            raise located(path, lines[0][0], f"expected a non-negative integer 'rows' in the header but got {expected!r}")
        if len(rows) != expected:
            raise located(path, None, f"incomplete score file: the header announces {expected} rows but {len(rows)} follow")
    records, seen = [], {}
    for line, row in rows:
        record = _row_to_record(row, path, line, SCALE_BOUNDS.get(header.get("scale"), 100.0))
        if record.key in seen:
            raise located(
                path, line,
                f"prompt {record.prompt_id!r} with seed {record.seed} is scored twice (first on line {seen[record.key]})",
            )
        seen[record.key] = line
        records.append(record)
    step = header.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
        raise located(path, 1, f"expected an integer 'step' in the header but got {step!r}")
    return ScoreFile(path, tuple(records), step, header)
