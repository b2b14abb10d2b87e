"""Readers for the text files users hand us: prompt libraries, caption tables, score files.

One place decides how such files are read, so every loader behaves the same way: UTF-8 with or
without a byte-order mark, errors that name the file and the line, duplicate keys and columns
refused instead of silently resolved, strict CSV quoting, and linear cost in the file's size.
Pure Python; no torch.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def located(path: str | os.PathLike, where: str | int | None, problem: str) -> ValueError:
    """``ValueError("<path>, line <n>: <problem>")``, the wording of every file error."""
    if isinstance(where, int):
        where = f"line {where}"
    return ValueError(f"{path}, {where}: {problem}" if where else f"{path}: {problem}")


def file_problem(path: Path) -> tuple[str, str] | None:
    """Why ``path`` cannot be read as a regular file, without opening it, or None if it can.

    Returns ``(kind, detail)``: kind ``"missing"``, ``"dangling"`` (a link to nothing),
    ``"unreadable"`` (a link loop, no permission, ...), ``"directory"`` or ``"special"`` (a FIFO,
    device or socket: opening a FIFO would block until someone writes to it).
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        return ("dangling", "a dangling symbolic link") if path.is_symlink() else ("missing", "no such file")
    except OSError as err:
        return "unreadable", str(err.strerror or err)
    if stat.S_ISDIR(info.st_mode):
        return "directory", "a directory"
    if not stat.S_ISREG(info.st_mode):
        return "special", "not a regular file"
    return None


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """The text of a UTF-8 file, its byte-order mark removed.

    Raises:
        FileNotFoundError: if nothing is at ``path`` (a dangling link is named as one).
        ValueError: if ``path`` is a directory or a special file (FIFO, device, socket), cannot
            be read, or is not UTF-8 (naming the line).
    """
    path = Path(path)
    problem = file_problem(path)
    if problem is not None:
        kind, detail = problem
        if kind == "dangling":
            raise FileNotFoundError(f"{what} {path} is a dangling symbolic link")
        if kind == "missing":
            raise FileNotFoundError(f"{what} not found: {path}")
        if kind == "directory":
            raise ValueError(f"{what} {path} is a directory, not a file")
        if kind == "special":
            raise ValueError(f"{what} {path} is not a regular file")
        raise ValueError(f"cannot read {what} {path}: {detail}")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read {what} {path}: {err.strerror or err}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise located(path, line, f"not valid UTF-8 ({err.reason} at byte {err.start})") from None


def _line_of_nth(text: str, key: str, n: int) -> int | None:
    """Line of the ``n``-th (1-based) occurrence of ``key`` as a JSON object key, or None."""
    pattern = re.compile(re.escape(json.dumps(key, ensure_ascii=False)) + r"\s*:")
    for count, match in enumerate(pattern.finditer(text), start=1):
        if count == n:
            return text.count("\n", 0, match.start()) + 1
    return None


class _DuplicateKey(Exception):
    def __init__(self, key: str, occurrences_before: int) -> None:
        self.key = key
        self.occurrences_before = occurrences_before


def parse_json(text: str, path: str | os.PathLike, first_line: int = 1) -> Any:
    """Parse JSON, refusing duplicate keys at any depth and absurd nesting.

    Args:
        text: the JSON text.
        path: named in errors.
        first_line: line number of the text's first line (for JSON Lines).

    Raises:
        ValueError: naming the line for invalid JSON, a duplicate key, NaN/Infinity literals,
            or nesting too deep to parse.
    """
    counts: dict[str, int] = {}

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            counts[key] = counts.get(key, 0) + 1
            if key in result:
                raise _DuplicateKey(key, counts[key])
            result[key] = value
        return result

    def refuse_constant(name: str) -> Any:
        raise ValueError(name)

    try:
        return json.loads(text, object_pairs_hook=pairs_hook, parse_constant=refuse_constant)
    except json.JSONDecodeError as err:
        raise located(path, first_line + err.lineno - 1, f"invalid JSON: {err.msg} (column {err.colno})") from None
    except _DuplicateKey as dup:
        # Keys are counted in the order the parser closes objects, so the line is a best effort.
        line = _line_of_nth(text, dup.key, dup.occurrences_before)
        where = first_line + line - 1 if line is not None else first_line
        raise located(path, where, f"duplicate key {dup.key!r}") from None
    except RecursionError:
        raise located(path, first_line, "JSON nested too deeply to read") from None
    except ValueError as err:  # NaN / Infinity literals
        raise located(path, first_line, f"invalid JSON: {err} is not a number JSON allows") from None


def check_line_ends(text: str, path: str | os.PathLike) -> str:
    """``text`` unchanged, unless its lines end in ``"\\r"`` alone (old Mac files).

    Lines end at ``"\\n"`` only, so such a file would be read as one line: it holds ``"\\r"``
    but no ``"\\n"``, and is refused rather than read as one long line.

    Raises:
        ValueError: naming the file, for a text with ``"\\r"`` and no ``"\\n"``.
    """
    if "\r" in text and "\n" not in text:
        raise located(
            path,
            None,
            "its lines end in '\\r' alone (no '\\n' in the file); lines end at '\\n' or '\\r\\n', and a lone "
            "'\\r' stays inside its line: convert the file, e.g. tr '\\r' '\\n' < old > new",
        )
    return text


def split_lines(text: str, path: str | os.PathLike | None = None) -> list[str]:
    """The lines of a text, the one line splitter of every line-based reader.

    Lines end at ``"\\n"`` only, and one ``"\\r"`` before it goes with it (Windows files):
    :meth:`str.splitlines` would also split at a form feed, U+0085, U+2028 or U+2029, which
    prompts and JSON strings may hold, and number the lines differently from every editor. A
    byte-order mark at the start of a line (files joined with ``cat``, each written with one)
    is removed: it is never part of the text. ``text.count("\\n")`` numbers lines the same way.

    Example:
        >>> split_lines("a red fox\\u2028in snow\\r\\n\\ufeffa cat\\f\\n")
        ['a red fox\\u2028in snow', 'a cat\\x0c', '']

    Args:
        text: the text to split.
        path: the file it was read from; given, a text whose lines end in ``"\\r"`` alone is
            refused (see :func:`check_line_ends`).
    """
    if path is not None:
        check_line_ends(text, path)
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if line.endswith("\r"):
            line = line[:-1]
        if line.startswith("\ufeff"):
            line = line[1:]
        lines[index] = line
    return lines


def iter_jsonl(text: str, path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """``(line_number, value)`` for every non-blank line of a JSON Lines text.

    Lines are those of :func:`split_lines` (JSON Lines' separator is ``"\\n"``; a string may
    hold U+2028 unescaped).
    """
    for number, line in enumerate(split_lines(text, path), start=1):
        if line.strip():
            yield number, parse_json(line, path, first_line=number)


def read_table(text: str, path: str | os.PathLike, delimiter: str) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """A CSV or TSV text with a header row: the column names as written and the rows.

    TSV has no quoting convention (fields cannot hold tabs), so quotes inside TSV fields are kept
    verbatim; CSV uses standard double-quote escaping, parsed strictly (an unclosed quote, or
    text after a closing one, is an error naming the line where its field starts). Blank lines
    are skipped, and a byte-order mark starting a line is dropped, as :func:`split_lines` does;
    a text with no header gives no columns and no rows. Each row is a
    ``{lower-cased column: value}`` dict with the line number it starts on.

    Raises:
        ValueError: for malformed quoting, empty or duplicate column names
            (compared case-insensitively), or a row with more fields than the header.
    """
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    check_line_ends(text, path)
    text = text.replace("\n\ufeff", "\n")  # a byte-order mark starting a line is no text (see split_lines)
    # Records end at "\n" only, as in split_lines: the csv module would also end one at a lone
    # "\r", so each "\r" not before "\n" is parked as a character the text lacks and put back.
    carriage = _absent_character(text) if "\r" in text else None
    if carriage is not None:
        text = _LONE_CARRIAGE_RETURN.sub(carriage, text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting, strict=True)
    header: list[str] | None = None
    names: list[str] = []
    rows: list[tuple[int, dict[str, str]]] = []
    start = 1
    try:
        for cells in reader:
            line, start = start, reader.line_num + 1
            if carriage is not None:
                cells = [cell.replace(carriage, "\r") for cell in cells]
            if not any(cell.strip() for cell in cells):
                continue
            if header is None:
                header = [cell.strip() for cell in cells]
                names = [cell.lower() for cell in header]
                seen: dict[str, int] = {}
                for index, name in enumerate(names):
                    if not name:
                        raise located(path, line, f"header column {index + 1} has no name")
                    if name in seen:
                        raise located(path, line, f"duplicate column {cells[index].strip()!r} in the header")
                    seen[name] = index
                continue
            if len(cells) > len(header):
                raise located(path, line, f"{len(cells)} fields but the header has {len(header)} columns")
            rows.append((line, dict(zip(names, cells))))
    except csv.Error as err:
        raise located(path, start, f"malformed {'TSV' if delimiter == chr(9) else 'CSV'}: {err}") from None
    return header or [], rows


_LONE_CARRIAGE_RETURN = re.compile("\r(?!\n)")


def _absent_character(text: str) -> str:
    """A private-use character that does not occur in ``text`` (a stand-in while parsing)."""
    present = set(text)
    for code in range(0xE000, 0xF900):
        if chr(code) not in present:
            return chr(code)
    raise ValueError("Expected a text without every private-use character but got one that holds them all")
