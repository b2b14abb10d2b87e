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
the same columns (no header object) for spreadsheets; its header row (``prompt_id,prompt,seed,
score,tags,file``) is what marks it as a score file.

Readers open regular files only (a FIFO would block, a link to ``/dev/zero`` never ends) and read
at most :data:`MAX_FILE_BYTES`.

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
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clip_metric.utilities.readers import iter_jsonl, located, read_table

FORMAT = "clip-metric-scores"
VERSION = 1
COLUMNS = ("prompt_id", "prompt", "seed", "score", "tags", "file")
# The largest score each scale can give; a file that does not say its scale may hold any of them.
SCALE_BOUNDS = {"cosine": 1.0, "clipscore": 2.5, "torchmetrics": 100.0}
MAX_FILE_BYTES = 1 << 31
"""The largest score file read (2 GiB, about ten million rows): a bound on memory, whatever the path holds."""
# A header line is a few hundred bytes; is_score_file reads no further than this to find it.
_MAX_HEADER_BYTES = 1 << 20

__all__ = [
    "COLUMNS", "FORMAT", "MAX_FILE_BYTES", "ScoreFile", "ScoreRecord", "is_score_file", "read_scores", "write_scores",
]


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
    texts = [("prompt_id", record.prompt_id), ("prompt", record.prompt), ("file", record.file)]
    texts += [(f"tag {name!r}", text) for item in record.tags.items() for text in item]
    for what, text in texts:
        if text is not None and not _encodable(text):
            # A lone surrogate (from a file name decoded with surrogateescape, or text cut in
            # the middle of a pair) has no UTF-8 form: the file could not be written.
            raise ValueError(
                f"Expected {what} of prompt {record.prompt_id!r} to be valid Unicode text but got {text!r} "
                "(it holds a lone surrogate, which UTF-8 cannot encode)"
            )
    return record


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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


def _link_exclusive(temporary: str, path: Path) -> None:
    """Give the written ``temporary`` the name ``path``, failing if ``path`` exists (no race with another writer)."""
    try:
        # A hard link fails if the name exists: no check-then-write race with another run.
        os.link(temporary, path)
    except FileExistsError:
        raise
    except OSError:
        # A file system without hard links (FAT, exFAT, some network and FUSE mounts: EPERM,
        # ENOTSUP, ...): claim the name with an exclusive create, then rename the full file over
        # that empty placeholder. Any other failure to link fails the create or the rename too.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        os.close(os.open(path, flags, 0o666))
        try:
            os.replace(temporary, path)
        except BaseException:
            os.unlink(path)
            raise
    else:
        os.unlink(temporary)


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

    With ``exclusive=True`` the name is claimed with a hard link, or, on a file system without
    hard links, with an exclusive create of the name that the full file is then renamed over.

    Raises:
        FileExistsError: with ``exclusive=True``, if ``path`` exists.
        ValueError: for a row the reader would refuse (a non-finite or boolean score, an empty
            prompt or prompt id, a non-integer seed, the same prompt and seed twice) or text
            UTF-8 cannot encode (a lone surrogate), naming the prompt; nothing is written then.
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
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as err:  # the rows were checked: a header value
        raise ValueError(
            f"Expected header values that are valid Unicode text but got {err.object[err.start:err.end]!r} "
            f"in {dict(header or {})!r} (a lone surrogate, which UTF-8 cannot encode)"
        ) from None
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = _create_temporary(path.parent, path.name)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if exclusive:
            _link_exclusive(temporary, path)
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


def _open_regular(path: Path, what: str = "score file") -> int:
    """A read-only descriptor of the regular file at ``path``, or an error naming what it is instead.

    The kind is checked before opening (opening a FIFO blocks until a writer comes, a device may
    act on being opened) and again on the descriptor, in case the name changed in between.

    Raises:
        FileNotFoundError: if nothing is at ``path`` (a dangling link is named as one).
        ValueError: for a directory, a FIFO, a device or a socket.
        OSError: if the file cannot be opened.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise FileNotFoundError(f"{what} {path} is a dangling symbolic link") from None
        raise FileNotFoundError(f"{what} not found: {path}") from None
    _check_regular(path, info.st_mode, what)
    handle = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
                     | getattr(os, "O_BINARY", 0))
    try:
        _check_regular(path, os.fstat(handle).st_mode, what)
    except BaseException:
        os.close(handle)
        raise
    return handle


def _check_regular(path: Path, mode: int, what: str) -> None:
    if stat.S_ISREG(mode):
        return
    kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a socket"
            if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a file")
    raise ValueError(f"{what} {path} is {kind}, not a regular file")


def _read_bounded(handle: int, limit: int) -> bytes:
    """Up to ``limit + 1`` bytes of ``handle`` (one more than allowed says it is too long)."""
    chunks, size = [], 0
    while size <= limit:
        chunk = os.read(handle, min(1 << 20, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def is_score_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a regular file that starts with a score-file header; reads its first line only.

    A JSON Lines file's first line is the header object (``"format": "clip-metric-scores"``); a
    ``.csv`` one's is the column row the writer puts there. A FIFO, a device, a directory or an
    unreadable path is not a score file (nothing is opened that could block).

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp(), "notes.jsonl")
        >>> _ = path.write_text('{"note": 1}\\n')
        >>> is_score_file(path)
        False
    """
    path = Path(path)
    try:
        handle = _open_regular(path)
    except (OSError, ValueError):
        return False
    try:
        first = os.read(handle, 64)
        if first.startswith(b"\xef\xbb\xbf"):
            first = first[3:]
        is_csv = path.suffix.lower() == ".csv"
        if not first.startswith(b"prompt_id" if is_csv else b"{"):
            return False  # most files of a run's folder (checkpoints, images) stop here
        head = first + _read_bounded(handle, _MAX_HEADER_BYTES)
    except OSError:
        return False
    finally:
        os.close(handle)
    line = head.split(b"\n", 1)[0]
    if is_csv:
        return line.rstrip(b"\r").decode("utf-8", "replace") == ",".join(COLUMNS)
    try:
        return json.loads(line).get("format") == FORMAT
    except (ValueError, AttributeError):
        return False


def _read_text(path: Path) -> str:
    handle = _open_regular(path)
    try:
        raw = _read_bounded(handle, MAX_FILE_BYTES)
    except OSError as err:
        raise ValueError(f"cannot read score file {path}: {err.strerror or err}") from None
    finally:
        os.close(handle)
    if len(raw) > MAX_FILE_BYTES:
        raise ValueError(f"score file {path} is larger than {MAX_FILE_BYTES} bytes, the most a score file is read to")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise located(path, line, f"not valid UTF-8 ({err.reason} at byte {err.start})") from None


def read_scores(path: str | os.PathLike) -> ScoreFile:
    """Read and check a score file.

    Only a regular file is opened (a FIFO or a device is refused before it could block or
    fill memory), and at most :data:`MAX_FILE_BYTES` are read.

    Raises:
        FileNotFoundError: if there is no file.
        ValueError: naming the file and line, for a missing or foreign header, fewer or more rows
            than the header announces (an incomplete file), a malformed row (non-finite or
            boolean score, non-integer seed, missing prompt), or the same prompt and seed twice;
            naming the file, for a path that is not a regular file or a file too large to read.
    """
    path = Path(path)
    text = _read_text(path)
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
