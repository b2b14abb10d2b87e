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
import heapq
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Union

from clip_metric.utilities.checks import check_optional_positive_int
from clip_metric.utilities.readers import iter_jsonl, parse_json, read_table, read_text, split_lines

__all__ = [
    "BUILTIN_LIBRARIES",
    "BUILTIN_LIBRARY",
    "BUILTIN_LIBRARY_PATH",
    "SUPPORTED_EXTENSIONS",
    "Prompt",
    "Tags",
    "PromptSource",
    "balanced_order",
    "builtin_prompts",
    "bundled_library_name",
    "load_prompt_library",
    "prompt_seed",
    "proportional_order",
    "select_prompts",
]

BUILTIN_LIBRARY: Final[str] = "default"
"""Name that selects the package's own library in :func:`load_prompt_library`."""

_DATA: Final[Path] = Path(__file__).resolve().parent / "data"

BUILTIN_LIBRARY_PATH: Final[Path] = _DATA / "prompts.json"
"""Location of the package's own library (a JSON file in the ``{"id": {"prompt", "category"}}`` format)."""

BUILTIN_LIBRARIES: Final[dict[str, str]] = {
    "default": "the package's own 144 prompts in 12 categories",
    "parti": "Parti Prompts (P2, Yu et al. 2022): 1,632 prompts, tags category (12) and challenge (11); Apache-2.0",
    "geneval": "GenEval (Ghosh et al. 2023): 553 prompts, tags tag (6 tasks), objects, count, color, position; MIT",
}
"""Names :func:`load_prompt_library` takes for the libraries bundled with the package."""

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


class Tags(Mapping[str, str]):
    """An immutable, hashable, ordered mapping of tag names to values (both strings).

    Example:
        >>> tags = Tags({"category": "Animals", "challenge": "Basic"})
        >>> tags["challenge"], list(tags), tags == {"category": "Animals", "challenge": "Basic"}
        ('Basic', ['category', 'challenge'], True)
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        pairs = tuple((items or {}).items())
        for name, value in pairs:
            if not isinstance(name, str) or not name.strip():
                raise TypeError(f"Expected tag names to be non-empty strings but got {name!r}")
            if not isinstance(value, str):
                raise TypeError(f"Expected tag {name!r} to have a string value but got {type(value).__name__}: {value!r}")
        object.__setattr__(self, "_items", pairs)

    def __getitem__(self, name: str) -> str:
        for key, value in self._items:
            if key == name:
                return value
        raise KeyError(name)

    def __iter__(self) -> Any:
        return (key for key, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Tags are immutable")

    def __reduce__(self) -> Any:
        return (Tags, (dict(self._items),))  # immutability blocks the default slot restore

    def __repr__(self) -> str:
        return f"Tags({dict(self._items)!r})"


@dataclass(frozen=True, init=False)
class Prompt:
    """One validation prompt.

    Args:
        id: Stable short name of the prompt, unique within its library (used in
            logged metric and image names).
        text: The prompt text given to the generator and to CLIP. Must contain at
            least one non-whitespace character.
        category: Shorthand for ``tags={"category": category}``.
        tags: What the prompt tests, as ``{name: value}`` strings (Parti Prompts:
            ``category`` and ``challenge``; GenEval: ``tag`` and what it asks for). The
            first tag spreads subsets; every tag gets a mean per value in the callback.

    The ``seed`` field is not an argument: it is always ``prompt_seed(text)``, so a
    prompt keeps its seed when it is moved, renamed or loaded from another file.

    Raises:
        TypeError: If ``id``, ``text``, ``category`` or a tag has the wrong type.
        ValueError: If ``id`` or ``text`` is empty or whitespace-only, or ``category``
            disagrees with ``tags["category"]``.

    Example:
        >>> from clip_metric.prompts import Prompt, prompt_seed
        >>> p = Prompt("animals-fox", "a red fox pouncing into deep snow", category="animals")
        >>> p.seed == prompt_seed(p.text)
        True
        >>> p.category, dict(p.tags)
        ('animals', {'category': 'animals'})
    """

    id: str
    text: str
    tags: Tags
    seed: int = field(init=False)  # always prompt_seed(text): dataclasses.replace recomputes it

    def __init__(
        self, id: str, text: str, category: str | None = None, *, tags: Mapping[str, str] | None = None
    ) -> None:
        if not isinstance(id, str):
            raise TypeError(f"Prompt id must be a str, got {type(id).__name__}: {id!r}")
        if not id.strip():
            raise ValueError(f"Prompt id must not be empty, got {id!r}")
        if not isinstance(text, str):
            raise TypeError(f"Prompt {id!r}: text must be a str, got {type(text).__name__}: {text!r}")
        if not text.strip():
            raise ValueError(f"Prompt {id!r}: text must not be empty or whitespace-only")
        if category is not None and not isinstance(category, str):
            raise TypeError(
                f"Prompt {id!r}: category must be a str or None, got {type(category).__name__}: {category!r}"
            )
        merged = dict(tags or {})
        if category is not None:
            if merged.get("category", category) != category:
                raise ValueError(f"Prompt {id!r}: category {category!r} differs from tags['category'] {merged['category']!r}")
            merged = {"category": category, **{k: v for k, v in merged.items() if k != "category"}}
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "tags", merged if isinstance(merged, Tags) else Tags(merged))
        object.__setattr__(self, "seed", prompt_seed(text))

    @property
    def category(self) -> str | None:
        """The ``category`` tag, or None."""
        return self.tags.get("category")


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

    def add(self, id_: Any, text: Any, tags: Mapping[str, Any] | None, where: str) -> None:
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
        clean: dict[str, str] = {}
        for name, value in (tags or {}).items():
            if value is None:
                continue
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif not isinstance(value, (str, int, float)):
                if name == "category":
                    raise origin.error(
                        where, f"category of {id_!r} must be a string, got {type(value).__name__}: {value!r}"
                    )
                continue  # lists and objects describe the prompt but are not tags
            value = str(value).strip()
            if value:
                clean[str(name).strip().lower()] = value
        if id_ in self._seen:
            raise origin.error(where, f"duplicate id {id_!r} (first defined at {self._seen[id_]})")
        self._seen[id_] = where
        self.prompts.append(Prompt(id_, text, tags=clean))

    def add_entry(self, entry: Any, default_id: str, where: str) -> None:
        """Add a string, a :class:`Prompt` or a ``{"prompt"|"text", "id", tags...}`` object."""
        if isinstance(entry, Prompt):
            self.add(entry.id, entry.text, entry.tags, where)
            return
        if isinstance(entry, str):
            self.add(default_id, entry, None, where)
            return
        if isinstance(entry, Mapping):
            text = _entry_text(self.origin, entry, where)
            id_ = entry.get("id", default_id)
            self.add(id_, text, _entry_tags(entry), where)
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


_NOT_TAGS = ("prompt", "text", "id")


def _entry_tags(entry: Mapping[str, Any]) -> dict[str, Any]:
    """Every field of an entry but its prompt and id: ``category`` and any others are tags."""
    return {key: value for key, value in entry.items() if key not in _NOT_TAGS}


def _from_mapping(builder: _Builder, data: Mapping[Any, Any], where_of: Any) -> None:
    """``{"id": "prompt"}`` or ``{"id": {"prompt": ..., "category": ...}}``."""
    for key, value in data.items():
        where = where_of(key)
        if not isinstance(key, str):
            raise builder.origin.error(where, f"key must be a string, got {type(key).__name__}")
        if isinstance(value, str):
            builder.add(key, value, None, where)
        elif isinstance(value, Mapping):
            builder.add(key, _entry_text(builder.origin, value, where), _entry_tags(value), where)
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
    for number, line in enumerate(_parse(path, lambda text: split_lines(text, path)), start=1):
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
        tags = {name: value for name, value in row.items() if name not in _NOT_TAGS}
        builder.add(f"row-{row_number}", row["prompt"], tags, where)


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
            f"(bundled libraries are named {', '.join(repr(n) for n in BUILTIN_LIBRARIES)}, case-sensitive; or pass "
            "a list of strings for in-memory prompts)"
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


def _parti() -> list[Prompt]:
    """Parti Prompts as published (``PartiPrompts.tsv``); its Note column is not a tag."""
    path = _DATA / "parti" / "PartiPrompts.tsv"
    _, rows = read_table(read_text(path, "prompt library"), path, "\t")
    builder = _Builder(_Origin(str(path)))
    for number, (line, row) in enumerate(rows, start=1):
        tags = {"category": row.get("category"), "challenge": row.get("challenge")}
        builder.add(f"parti-{number:04d}", row.get("prompt"), tags, f"line {line}")
    return builder.finish()


def _geneval() -> list[Prompt]:
    """GenEval's prompts as published (``evaluation_metadata.jsonl``), tagged by what they ask for."""
    path = _DATA / "geneval" / "evaluation_metadata.jsonl"
    builder = _Builder(_Origin(str(path)))
    for number, (line, entry) in enumerate(iter_jsonl(read_text(path, "prompt library"), path), start=1):
        include = entry.get("include", [])
        tags: dict[str, Any] = {"tag": entry.get("tag"), "objects": len(include)}
        if entry.get("tag") == "counting":
            tags["count"] = include[0].get("count")
        colors = [item["color"] for item in include if "color" in item]
        if len(colors) == 1:
            tags["color"] = colors[0]
        positions = [item["position"][0] for item in include if "position" in item]
        if positions:
            tags["position"] = positions[0]
        builder.add(f"geneval-{number:03d}", entry.get("prompt"), tags, f"line {line}")
    return builder.finish()


@functools.lru_cache(maxsize=None)
def _builtin(name: str = BUILTIN_LIBRARY) -> tuple[Prompt, ...]:
    if name == "parti":
        return tuple(_parti())
    if name == "geneval":
        return tuple(_geneval())
    return tuple(_load_file(BUILTIN_LIBRARY_PATH))


def bundled_library_name(source: Any) -> str | None:
    """The bundled library ``source`` names, or None when it names none (a path, a list, ...).

    The one rule for every entry point (:func:`load_prompt_library`, the callback,
    ``clip-metric score --prompts``): ``True`` is ``"default"``, and a string that is a bundled
    library's name (:data:`BUILTIN_LIBRARIES`, case-sensitive) is that library even when a
    file or folder of that name is in the working directory; ``"./parti"`` (or a
    :class:`~pathlib.Path`) names the file.

    Example:
        >>> from pathlib import Path
        >>> bundled_library_name("parti"), bundled_library_name("./parti"), bundled_library_name(Path("parti"))
        ('parti', None, None)
        >>> bundled_library_name(True), bundled_library_name("Parti")
        ('default', None)
    """
    if source is True:
        return BUILTIN_LIBRARY
    if isinstance(source, str) and source in BUILTIN_LIBRARIES:
        return source
    return None


def builtin_prompts(name: str = BUILTIN_LIBRARY) -> list[Prompt]:
    """Return a library bundled with the package: ``"default"``, ``"parti"`` or ``"geneval"``.

    ``"parti"`` is Parti Prompts and ``"geneval"`` GenEval's prompts, copied unchanged from
    their authors' repositories with their licences (see :data:`BUILTIN_LIBRARIES`); ids are
    ``parti-0001`` ... in file order and ``geneval-001`` ...; files load once per process.

    Raises:
        ValueError: for an unknown name.

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
        >>> parti = builtin_prompts("parti")
        >>> len(parti), dict(parti[0].tags)
        (1632, {'category': 'Abstract', 'challenge': 'Basic'})
    """
    if name not in BUILTIN_LIBRARIES:
        raise ValueError(f"Expected a bundled library name, one of {tuple(BUILTIN_LIBRARIES)}, but got {name!r}")
    return list(_builtin(name))


def _stable_key(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def select_prompts(prompts: Sequence[Prompt], max_prompts: int | None) -> list[Prompt]:
    """Return a deterministic subset of at most ``max_prompts`` prompts, proportional over the first tag.

    The subset is the first ``max_prompts`` prompts of :func:`proportional_order`: each value
    of the first tag (the ``category`` of the package's own library and of Parti Prompts,
    GenEval's task ``tag``; untagged prompts form one group) keeps its share of the full
    library, within one prompt, so the subset's mean estimates the mean of the whole library
    (not the mean of equal-sized categories). Inside a group the prompts are taken in a
    pseudo-random order fixed by the SHA-256 of their text (ties by id), so the order of the
    library file cannot bias a subset. The ranking does not depend on ``max_prompts``, so a
    smaller subset is always contained in a larger one; a group holding the share ``w`` of
    the library is represented in every subset of ``1 / w`` prompts or more. The result keeps
    the original library order.

    Args:
        prompts: The full library.
        max_prompts: Maximum number of prompts to keep, or ``None`` for all.

    Returns:
        A new list with the selected prompts, in library order.

    Raises:
        ValueError: If ``max_prompts`` is not ``None`` or a positive integer.

    Example:
        >>> from collections import Counter
        >>> from clip_metric.prompts import load_prompt_library, select_prompts
        >>> parti = load_prompt_library("parti")
        >>> small = select_prompts(parti, 102)  # 1/16 of the library
        >>> counts = Counter(p.category for p in small)
        >>> counts["Animals"], counts["Indoor Scenes"]  # 314/16 = 19.6 and 40/16 = 2.5: 19 or 20, 2 or 3
        (20, 2)
        >>> set(small) <= set(select_prompts(parti, 256))
        True
    """
    _check_max_prompts(max_prompts)
    if max_prompts is None or max_prompts >= len(prompts):
        return list(prompts)
    chosen = sorted(_proportional_ranking(prompts)[:max_prompts])
    return [prompts[index] for index in chosen]


def proportional_order(prompts: Sequence[Prompt]) -> list[Prompt]:
    """The library in the ranking :func:`select_prompts` keeps the first ``max_prompts`` of.

    Every prefix holds each value of the first tag in proportion to its share of ``prompts``:
    a group of ``n_g`` of ``N`` prompts has ``floor(k * n_g / N)`` or ``ceil(k * n_g / N)``
    prompts among the first ``k``, for every ``k``. The mean of any prefix therefore estimates
    the mean of all of ``prompts``, which is what ``clip/mean`` and ``clip/mean_ci`` of an
    evaluation that stops early (``target_ci=...``) describe. ``set(proportional_order(library)[:k])
    == set(select_prompts(library, k))`` for every ``k``, so two evaluations that stop at
    different points share all the prompts of the shorter one.

    How: the ``j``-th prompt of a group of share ``w`` may come no earlier than position
    ``floor((j - 1) / w) + 1`` and no later than ``ceil(j / w)``; positions are filled one at a
    time with the prompt whose latest position is earliest (ties by the SHA-256 of
    ``"<tag>:<value>"``), which meets every such window (earliest deadline first, exact integer
    arithmetic). Inside a group prompts come in the order of the SHA-256 of their text, ties by
    id. The order depends only on the prompts' texts, ids and first tags, never on their
    position in ``prompts``, the machine, the Python version or the world size.

    Args:
        prompts: The library (after ``max_prompts``, if any: a subset gets its own order).

    Returns:
        A new list with the same prompt objects, in evaluation order.

    Example:
        >>> from collections import Counter
        >>> from clip_metric.prompts import load_prompt_library, proportional_order, select_prompts
        >>> parti = load_prompt_library("parti")
        >>> order = proportional_order(parti)
        >>> set(order[:64]) == set(select_prompts(parti, 64))
        True
        >>> k = 300
        >>> counts = Counter(p.category for p in order[:k])
        >>> sizes = Counter(p.category for p in parti)
        >>> all(abs(counts[c] - k * n / len(parti)) < 1 for c, n in sizes.items())
        True
    """
    return [prompts[index] for index in _proportional_ranking(prompts)]


balanced_order = proportional_order
"""Former name of :func:`proportional_order`, kept for existing callers."""


def _proportional_ranking(prompts: Sequence[Prompt]) -> list[int]:
    """Library indices in :func:`proportional_order`."""
    groups: dict[str | None, list[int]] = {}
    for index, prompt in enumerate(prompts):
        first = next(iter(prompt.tags.items()), None)  # subsets are proportional over the first tag
        groups.setdefault(None if first is None else f"{first[0]}:{first[1]}", []).append(index)
    total = len(prompts)
    members: list[list[int]] = []
    for group in sorted(groups, key=lambda g: (_stable_key("" if g is None else g), "" if g is None else g)):
        indices = groups[group]
        indices.sort(key=lambda i: (_stable_key(prompts[i].text), prompts[i].id))
        members.append(indices)
    # The j-th (1-based) prompt of group g (n_g prompts) is released at position
    # floor((j - 1) * N / n_g) + 1 and due at ceil(j * N / n_g). These windows admit a schedule
    # (any span of positions contains at most its length of whole windows), and earliest deadline
    # first finds one; then |count_g(k) - k * n_g / N| < 1 for every prefix k.
    taken = [0] * len(members)
    waiting = [(1, g) for g in range(len(members))]  # (release position, group)
    heapq.heapify(waiting)
    ready: list[tuple[int, int]] = []  # (deadline, group); groups are numbered in hash order
    ranking: list[int] = []
    for position in range(1, total + 1):
        while waiting and waiting[0][0] <= position:
            _, g = heapq.heappop(waiting)
            heapq.heappush(ready, (-(-(taken[g] + 1) * total // len(members[g])), g))
        _, g = heapq.heappop(ready)  # never empty: the windows admit a schedule
        ranking.append(members[g][taken[g]])
        taken[g] += 1
        if taken[g] < len(members[g]):
            heapq.heappush(waiting, (taken[g] * total // len(members[g]) + 1, g))
    return ranking


def _check_max_prompts(max_prompts: Any) -> None:
    if max_prompts is None:
        return
    check_optional_positive_int("max_prompts", max_prompts)


def load_prompt_library(source: PromptSource, max_prompts: int | None = None) -> list[Prompt]:
    """Load a prompt library.

    ``source`` may be:

    * ``True`` or ``"default"``: the package's own library; ``"parti"``: Parti
      Prompts; ``"geneval"``: GenEval's prompts (see :func:`builtin_prompts`), even when
      a file or folder of that name is in the working directory (see
      :func:`bundled_library_name`). To load a file literally named ``default`` (or
      ``parti``), pass ``"./default"``.
    * A list or tuple whose items are prompt strings (ids ``"item-<n>"``, 1-based),
      :class:`Prompt` objects, or objects with a ``"prompt"`` (or ``"text"``) key and
      optional ``"id"`` and ``"category"`` keys.
    * A dict ``{"id": "prompt"}`` or ``{"id": {"prompt": "...", "category": "..."}}``.
    * A path (``str`` or :class:`os.PathLike`) to a file, chosen by its extension:

      - ``.txt``: one prompt a line; blank lines and lines starting with ``#`` are
        skipped; ids are ``"line-<n>"`` with ``n`` the 1-based line number. Lines end at
        ``"\\n"`` only (a form feed or U+2028 inside a line is part of its prompt), and a
        byte-order mark at the start of any line is removed (see
        :func:`~clip_metric.utilities.readers.split_lines`).
      - ``.json``: an object in one of the dict shapes above (the format of
        SimpleTuner's ``user_prompt_library``) or a list as above. Other fields of
        entry objects with string, number or boolean values become tags (lists and
        objects are not tags and are left out).
      - ``.jsonl``: one object a line with a ``"prompt"`` or ``"text"`` key and
        optional ``"id"`` (default ``"line-<n>"``) and ``"category"``.
      - ``.tsv`` / ``.csv``: a header row with a ``Prompt`` column (matched
        case-insensitively); every other column is a tag (lower-cased names, empty
        cells left out), so Parti Prompts' ``Prompt, Category, Challenge, Note``
        gives tags ``category``, ``challenge`` and ``note``; ids are ``"row-<n>"``
        with ``n`` the 1-based data row. TSV fields are not quoted.

    Files are read as UTF-8 (a byte-order mark is allowed). Prompt texts and
    categories are stripped of surrounding whitespace; an empty category becomes
    ``None``. Duplicate texts are allowed and keep their distinct ids.

    Args:
        source: Where to load the prompts from, see above.
        max_prompts: If given, keep a deterministic subset of at most this many
            prompts, each first-tag value in proportion to its share (see :func:`select_prompts`).

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
    bundled = bundled_library_name(source)
    if bundled is not None:
        prompts = builtin_prompts(bundled)
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
