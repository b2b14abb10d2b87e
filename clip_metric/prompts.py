"""Validation prompt libraries.

A prompt library is the fixed set of prompts that is rendered at every validation
step and scored with CLIP. This module loads such libraries from the built-in set,
from in-memory lists / dicts, or from ``.txt``, ``.json``, ``.jsonl``, ``.tsv`` and
``.csv`` files, and gives each prompt a generation seed that depends only on its
text, so that the same prompt is always rendered from the same noise regardless of
its position in the library, the world size or the batch size.

The module is pure Python; it does not import torch.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Union

from clip_metric.utilities.readers import iter_jsonl, parse_json, read_table, read_text

__all__ = [
    "BUILTIN_LIBRARY",
    "BUILTIN_LIBRARY_PATH",
    "SUPPORTED_EXTENSIONS",
    "Prompt",
    "PromptSource",
    "builtin_prompts",
    "load_prompt_library",
    "prompt_seed",
    "select_prompts",
]

BUILTIN_LIBRARY: Final[str] = "default"
"""Name that selects the built-in library in :func:`load_prompt_library`."""

BUILTIN_LIBRARY_PATH: Final[Path] = Path(__file__).resolve().parent / "data" / "prompts.json"
"""Location of the built-in library (a JSON file in the ``{"id": {"prompt", "category"}}`` format)."""

SUPPORTED_EXTENSIONS: Final[tuple[str, ...]] = (".txt", ".json", ".jsonl", ".tsv", ".csv")
"""File extensions understood by :func:`load_prompt_library` (case-insensitive)."""

_SEED_MASK: Final[int] = 0x7FFFFFFF

# os.PathLike last: jsonargparse parses it with str(), which would swallow a YAML list/mapping.
PromptSource = Union[bool, str, Sequence[Any], Mapping[str, Any], "os.PathLike[str]"]
"""Everything :func:`load_prompt_library` accepts as ``source``."""


def prompt_seed(text: str) -> int:
    """Return the generation seed of a prompt.

    The seed is the first 8 bytes of the SHA-256 digest of the UTF-8 encoded text,
    read as a big-endian unsigned integer and masked to its lowest 31 bits. It
    therefore lies in ``[0, 2**31 - 1]`` (valid for ``torch.Generator.manual_seed``,
    NumPy and every common RNG) and is identical across processes, machines and
    Python versions; unlike :func:`hash`, it is not affected by ``PYTHONHASHSEED``.
    The text is hashed exactly as given: no whitespace stripping or Unicode
    normalisation happens here (the loaders strip surrounding whitespace before
    building a :class:`Prompt`).

    Args:
        text: The prompt text.

    Returns:
        A non-negative integer below ``2**31``.

    Raises:
        TypeError: If ``text`` is not a string.

    Example:
        >>> from clip_metric.prompts import prompt_seed
        >>> prompt_seed("a red fox pouncing into deep snow")
        1838700160
        >>> import hashlib
        >>> digest = hashlib.sha256("a red fox pouncing into deep snow".encode("utf-8")).digest()
        >>> int.from_bytes(digest[:8], "big") & 0x7FFFFFFF
        1838700160
    """
    if not isinstance(text, str):
        raise TypeError(f"prompt_seed expects a str, got {type(text).__name__}: {text!r}")
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & _SEED_MASK


@dataclass(frozen=True)
class Prompt:
    """One validation prompt.

    Args:
        id: Stable short name of the prompt, unique within its library (used in
            logged metric and image names).
        text: The prompt text given to the generator and to CLIP. Must contain at
            least one non-whitespace character.
        category: Optional category used to spread subsets and to report
            per-category scores.

    The ``seed`` field is not an argument: it is always ``prompt_seed(text)``, so a
    prompt keeps its seed when it is moved, renamed or loaded from another file.

    Raises:
        TypeError: If ``id``, ``text`` or ``category`` has the wrong type.
        ValueError: If ``id`` or ``text`` is empty or whitespace-only.

    Example:
        >>> from clip_metric.prompts import Prompt, prompt_seed
        >>> p = Prompt("animals-fox", "a red fox pouncing into deep snow", category="animals")
        >>> p.seed == prompt_seed(p.text)
        True
        >>> p.category
        'animals'
    """

    id: str
    text: str
    category: str | None = None
    seed: int = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str):
            raise TypeError(f"Prompt id must be a str, got {type(self.id).__name__}: {self.id!r}")
        if not self.id.strip():
            raise ValueError(f"Prompt id must not be empty, got {self.id!r}")
        if not isinstance(self.text, str):
            raise TypeError(
                f"Prompt {self.id!r}: text must be a str, got {type(self.text).__name__}: {self.text!r}"
            )
        if not self.text.strip():
            raise ValueError(f"Prompt {self.id!r}: text must not be empty or whitespace-only")
        if self.category is not None and not isinstance(self.category, str):
            raise TypeError(
                f"Prompt {self.id!r}: category must be a str or None, "
                f"got {type(self.category).__name__}: {self.category!r}"
            )
        object.__setattr__(self, "seed", prompt_seed(self.text))


# --------------------------------------------------------------------------- helpers


class _Origin:
    """Describes where entries come from, to build precise error messages."""

    def __init__(self, name: str) -> None:
        self.name = name

    def error(self, where: str | None, problem: str) -> ValueError:
        location = f"{self.name}, {where}" if where else self.name
        return ValueError(f"invalid prompt library {location}: {problem}")

    def empty(self) -> ValueError:
        return ValueError(f"no prompts found in {self.name}")


class _Builder:
    """Accumulates prompts while checking ids for duplicates."""

    def __init__(self, origin: _Origin) -> None:
        self.origin = origin
        self.prompts: list[Prompt] = []
        self._seen: dict[str, str] = {}

    def add(self, id_: Any, text: Any, category: Any, where: str) -> None:
        origin = self.origin
        if isinstance(id_, bool) or not isinstance(id_, (str, int)):
            raise origin.error(where, f"id must be a string, got {type(id_).__name__}: {id_!r}")
        id_ = str(id_).strip()
        if not id_:
            raise origin.error(where, "id is empty")
        if not isinstance(text, str):
            raise origin.error(
                where, f"prompt {id_!r} must be a string, got {type(text).__name__}: {text!r}"
            )
        text = text.strip()
        if not text:
            raise origin.error(where, f"prompt {id_!r} is empty or whitespace-only")
        if category is not None:
            if not isinstance(category, str):
                raise origin.error(
                    where,
                    f"category of {id_!r} must be a string, "
                    f"got {type(category).__name__}: {category!r}",
                )
            category = category.strip() or None
        if id_ in self._seen:
            raise origin.error(where, f"duplicate id {id_!r} (first defined at {self._seen[id_]})")
        self._seen[id_] = where
        self.prompts.append(Prompt(id=id_, text=text, category=category))

    def add_entry(self, entry: Any, default_id: str, where: str) -> None:
        """Add a string, a :class:`Prompt` or a ``{"prompt"|"text", "id", "category"}`` object."""
        if isinstance(entry, Prompt):
            self.add(entry.id, entry.text, entry.category, where)
            return
        if isinstance(entry, str):
            self.add(default_id, entry, None, where)
            return
        if isinstance(entry, Mapping):
            text = _entry_text(self.origin, entry, where)
            id_ = entry.get("id", default_id)
            self.add(id_, text, entry.get("category"), where)
            return
        raise self.origin.error(
            where,
            f"entry must be a string or an object with a 'prompt' key, "
            f"got {type(entry).__name__}: {entry!r}",
        )

    def finish(self) -> list[Prompt]:
        if not self.prompts:
            raise self.origin.empty()
        return self.prompts


def _entry_text(origin: _Origin, entry: Mapping[str, Any], where: str) -> Any:
    has_prompt = "prompt" in entry
    has_text = "text" in entry
    if has_prompt and has_text and entry["prompt"] != entry["text"]:
        raise origin.error(where, "entry has both a 'prompt' and a 'text' key with different values")
    if not has_prompt and not has_text:
        keys = ", ".join(repr(k) for k in entry) or "none"
        raise origin.error(where, f"entry lacks a 'prompt' key (keys: {keys})")
    return entry["prompt"] if has_prompt else entry["text"]


def _from_mapping(builder: _Builder, data: Mapping[Any, Any], where_of: Any) -> None:
    """``{"id": "prompt"}`` or ``{"id": {"prompt": ..., "category": ...}}``."""
    for key, value in data.items():
        where = where_of(key)
        if not isinstance(key, str):
            raise builder.origin.error(where, f"key must be a string, got {type(key).__name__}")
        if isinstance(value, str):
            builder.add(key, value, None, where)
        elif isinstance(value, Mapping):
            builder.add(key, _entry_text(builder.origin, value, where), value.get("category"), where)
        else:
            raise builder.origin.error(
                where,
                f"value must be a prompt string or an object with a 'prompt' key, "
                f"got {type(value).__name__}: {value!r}",
            )


def _from_sequence(builder: _Builder, data: Sequence[Any], where_of: Any) -> None:
    for index, entry in enumerate(data, start=1):
        builder.add_entry(entry, f"item-{index}", where_of(index))


def _load_txt(path: Path, builder: _Builder) -> None:
    for number, line in enumerate(_parse(path, str.splitlines), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        builder.add(f"line-{number}", stripped, None, f"line {number}")


class _KeyLines:
    """Line numbers of a JSON text's object keys, found in one pass when first needed."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._lines: dict[str, int] | None = None

    def where(self, key: Any) -> _LazyWhere:
        return _LazyWhere(self, key)

    def line(self, key: str) -> int | None:
        if self._lines is None:
            self._lines = {}
            line = 1
            last = 0
            for match in _JSON_KEY.finditer(self.text):
                line += self.text.count("\n", last, match.start())
                last = match.start()
                try:
                    name = json.loads(match.group(1))
                except ValueError:
                    continue
                self._lines.setdefault(name, line)
        return self._lines.get(key)


class _LazyWhere:
    """``key 'x' (line n)``, worked out only if an error message needs it."""

    def __init__(self, lines: _KeyLines, key: Any) -> None:
        self.lines, self.key = lines, key

    def __str__(self) -> str:
        line = self.lines.line(self.key) if isinstance(self.key, str) else None
        return f"key {self.key!r}" + (f" (line {line})" if line is not None else "")


_JSON_KEY = re.compile(r'("(?:[^"\\]|\\.)*")\s*:')


def _load_json(path: Path, builder: _Builder) -> None:
    text = read_text(path, "prompt library")
    data = _parse(path, lambda _: parse_json(text, path), text)
    if isinstance(data, Mapping):
        _from_mapping(builder, data, _KeyLines(text).where)
    elif isinstance(data, list):
        _from_sequence(builder, data, lambda index: f"item {index}")
    else:
        raise builder.origin.error(
            None,
            f"top-level JSON value must be an object or a list, got {type(data).__name__}",
        )


def _parse(path: Path, parse: Any, text: str | None = None) -> Any:
    text = read_text(path, "prompt library") if text is None else text
    try:
        return parse(text)
    except ValueError as err:
        raise ValueError(f"invalid prompt library {err}") from None


def _load_jsonl(path: Path, builder: _Builder) -> None:
    for number, entry in _parse(path, lambda text: list(iter_jsonl(text, path))):
        where = f"line {number}"
        if not isinstance(entry, Mapping):
            raise builder.origin.error(
                where, f"each line must be a JSON object, got {type(entry).__name__}: {entry!r}"
            )
        builder.add_entry(entry, f"line-{number}", where)


def _load_table(path: Path, builder: _Builder, delimiter: str) -> None:
    header, rows = _parse(path, lambda text: read_table(text, path, delimiter))
    if not header:
        raise builder.origin.empty()
    if "prompt" not in (name.lower() for name in header):
        found = ", ".join(repr(cell) for cell in header)
        raise builder.origin.error("line 1", f"header has no 'Prompt' column (found: {found})")
    for row_number, (line, row) in enumerate(rows, start=1):
        where = f"row {row_number} (line {line})"
        if "prompt" not in row:
            raise builder.origin.error(where, "missing 'Prompt' value")
        builder.add(f"row-{row_number}", row["prompt"], row.get("category"), where)


_LOADERS = {
    ".txt": _load_txt,
    ".json": _load_json,
    ".jsonl": _load_jsonl,
    ".tsv": lambda path, builder: _load_table(path, builder, "\t"),
    ".csv": lambda path, builder: _load_table(path, builder, ","),
}


def _load_file(path: Path) -> list[Prompt]:
    if not path.exists() and not path.is_symlink():
        raise FileNotFoundError(
            f"prompt library file not found: {str(path)!r} "
            "(pass a list of strings for in-memory prompts, or True / 'default' for the built-in library)"
        )
    suffix = path.suffix.lower()
    loader = _LOADERS.get(suffix)
    if loader is None:
        supported = ", ".join(SUPPORTED_EXTENSIONS)
        raise ValueError(
            f"unsupported prompt library file {path}: unknown extension {path.suffix!r} "
            f"(supported: {supported})"
        )
    builder = _Builder(_Origin(str(path)))
    loader(path, builder)
    return builder.finish()


@functools.lru_cache(maxsize=1)
def _builtin() -> tuple[Prompt, ...]:
    return tuple(_load_file(BUILTIN_LIBRARY_PATH))


def builtin_prompts() -> list[Prompt]:
    """Return the built-in prompt library.

    The library holds 144 prompts written for this package, twelve in each of the
    categories ``people``, ``animals``, ``landscapes``, ``objects``, ``food``,
    ``vehicles``, ``architecture``, ``text-rendering``, ``counting``, ``colours``,
    ``spatial`` and ``styles``. Ids are prefixed with the category
    (``"animals-red-fox-snow"``) and never change once released.

    Returns:
        A new list of :class:`Prompt`, in file order.

    Example:
        >>> from clip_metric.prompts import builtin_prompts
        >>> prompts = builtin_prompts()
        >>> len(prompts) >= 120
        True
        >>> next(p for p in prompts if p.id == "animals-red-fox-snow").category
        'animals'
    """
    return list(_builtin())


def _stable_key(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def select_prompts(prompts: Sequence[Prompt], max_prompts: int | None) -> list[Prompt]:
    """Return a deterministic subset of at most ``max_prompts`` prompts.

    Prompts are ranked round-robin over their categories: within each category
    (uncategorised prompts form one group) prompts are ordered by the SHA-256 of
    their text (ties by id), categories are visited in the order of the SHA-256 of
    their names, and the first ``max_prompts`` of that ranking are kept. The
    ranking does not depend on ``max_prompts``, so a smaller subset is always
    contained in a larger one, and every category is represented as soon as
    ``max_prompts`` reaches the number of categories. The result keeps the original
    library order.

    Args:
        prompts: The full library.
        max_prompts: Maximum number of prompts to keep, or ``None`` for all.

    Returns:
        A new list with the selected prompts, in library order.

    Raises:
        ValueError: If ``max_prompts`` is not ``None`` or a positive integer.

    Example:
        >>> from clip_metric.prompts import builtin_prompts, select_prompts
        >>> library = builtin_prompts()
        >>> small = select_prompts(library, 12)
        >>> len({p.category for p in small})
        12
        >>> set(small) <= set(select_prompts(library, 30))
        True
    """
    _check_max_prompts(max_prompts)
    if max_prompts is None or max_prompts >= len(prompts):
        return list(prompts)
    groups: dict[str | None, list[int]] = {}
    for index, prompt in enumerate(prompts):
        groups.setdefault(prompt.category, []).append(index)
    ranking: list[tuple[int, str, int]] = []
    for category, members in groups.items():
        category_key = _stable_key("" if category is None else "category:" + category)
        members.sort(key=lambda i: (_stable_key(prompts[i].text), prompts[i].id))
        ranking.extend((rank, category_key, index) for rank, index in enumerate(members))
    ranking.sort()
    chosen = sorted(index for _, _, index in ranking[:max_prompts])
    return [prompts[index] for index in chosen]


def _check_max_prompts(max_prompts: Any) -> None:
    if max_prompts is None:
        return
    if isinstance(max_prompts, bool) or not isinstance(max_prompts, int) or max_prompts < 1:
        raise ValueError(f"max_prompts must be a positive integer or None, got {max_prompts!r}")


def load_prompt_library(source: PromptSource, max_prompts: int | None = None) -> list[Prompt]:
    """Load a prompt library.

    ``source`` may be:

    * ``True`` or ``"default"``: the built-in library (see :func:`builtin_prompts`).
      To load a file literally named ``default``, pass ``"./default"``.
    * A list or tuple whose items are prompt strings (ids ``"item-<n>"``, 1-based),
      :class:`Prompt` objects, or objects with a ``"prompt"`` (or ``"text"``) key and
      optional ``"id"`` and ``"category"`` keys.
    * A dict ``{"id": "prompt"}`` or ``{"id": {"prompt": "...", "category": "..."}}``.
    * A path (``str`` or :class:`os.PathLike`) to a file, chosen by its extension:

      - ``.txt``: one prompt a line; blank lines and lines starting with ``#`` are
        skipped; ids are ``"line-<n>"`` with ``n`` the 1-based line number.
      - ``.json``: an object in one of the dict shapes above (the format of
        SimpleTuner's ``user_prompt_library``) or a list as above. Unknown keys in
        entry objects are ignored.
      - ``.jsonl``: one object a line with a ``"prompt"`` or ``"text"`` key and
        optional ``"id"`` (default ``"line-<n>"``) and ``"category"``.
      - ``.tsv`` / ``.csv``: a header row with a ``Prompt`` column and optionally a
        ``Category`` column (matched case-insensitively, as in Parti Prompts'
        ``Prompt, Category, Challenge, Note``); other columns are ignored; ids are
        ``"row-<n>"`` with ``n`` the 1-based data row. TSV fields are not quoted.

    Files are read as UTF-8 (a byte-order mark is allowed). Prompt texts and
    categories are stripped of surrounding whitespace; an empty category becomes
    ``None``. Duplicate texts are allowed and keep their distinct ids.

    Args:
        source: Where to load the prompts from, see above.
        max_prompts: If given, keep a deterministic, category-balanced subset of at
            most this many prompts (see :func:`select_prompts`).

    Returns:
        The prompts, in library order.

    Raises:
        ValueError: If ``source`` is ``False`` or ``None`` (these mean "disabled"
            and must be handled by the caller), if ``max_prompts`` is not a positive
            integer, if the file has an unsupported extension, cannot be read or
            decoded, is not valid JSON, has an entry that is not a string or lacks a
            ``"prompt"`` key, an empty prompt, a duplicate id, a table without a
            ``Prompt`` column, or no prompts at all. File errors name the file and the
            line, row or key.
        FileNotFoundError: If ``source`` is a path that does not exist.
        TypeError: If ``source`` has an unsupported type.

    Example:
        >>> from clip_metric.prompts import load_prompt_library
        >>> prompts = load_prompt_library(["a cat under a table", "two dogs on a sofa"])
        >>> [p.id for p in prompts]
        ['item-1', 'item-2']
        >>> prompts = load_prompt_library({"fox": {"prompt": "a red fox", "category": "animals"}})
        >>> prompts[0].text, prompts[0].category
        ('a red fox', 'animals')
        >>> len(load_prompt_library("default", max_prompts=24))
        24
    """
    _check_max_prompts(max_prompts)
    if source is None or source is False:
        raise ValueError(
            f"prompt library source is {source!r}, which means the prompt library is disabled; "
            "check for it before calling load_prompt_library, or pass True / 'default' "
            "for the built-in library"
        )
    if source is True or (isinstance(source, str) and source == BUILTIN_LIBRARY):
        prompts = builtin_prompts()
    elif isinstance(source, (str, os.PathLike)):
        prompts = _load_file(Path(os.fspath(source)))
    elif isinstance(source, Mapping):
        builder = _Builder(_Origin("the given dict"))
        _from_mapping(builder, source, lambda key: f"key {key!r}")
        prompts = builder.finish()
    elif isinstance(source, (list, tuple)):
        builder = _Builder(_Origin("the given list"))
        _from_sequence(builder, source, lambda index: f"item {index}")
        prompts = builder.finish()
    else:
        raise TypeError(
            "prompt library source must be True, 'default', a path, a list or a dict, "
            f"got {type(source).__name__}: {source!r}"
        )
    return select_prompts(prompts, max_prompts)
