"""The documentation is executable: every Python example in ``docs/*.md`` runs, every link resolves.

Printed output shown in a comment is checked too: where a ``print(...)`` line ends in a comment
that starts with ``{`` or ``[`` (or the next line is such a comment), what the call printed must
match the bracketed literal, ``...`` standing for any text (prose after the literal is ignored).

Each fenced ```` ```python ```` block runs on its own (``exec`` in a fresh namespace, with a
temporary directory as working directory), unless the line right before its opening fence is an
HTML comment ``<!-- not-run: reason -->`` (hub downloads, GPUs, ``torchrun``, W&B). Blocks that are
not run are still compiled, so they cannot rot into invalid Python. Relative links between the
documentation files (and into the repository) must point at existing files, and ``#anchors`` at
existing headings.
"""

from __future__ import annotations

import builtins
import doctest
import io
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
DOC_FILES = sorted(DOCS.glob("*.md"))

_FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
_NOT_RUN = re.compile(r"^\s*<!--\s*not-run\s*:\s*(?P<reason>.*?)\s*-->\s*$")
_ANY_NOT_RUN = re.compile(r"<!--\s*not-run\b")
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    not_run: str | None  # the reason, for blocks marked not-run

    @property
    def name(self) -> str:
        return f"{self.path.name}:{self.line}"


def _blocks(path: Path) -> list[Block]:
    """Fenced code blocks of a Markdown file, with the not-run marker of each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, index = [], 0
    while index < len(lines):
        match = _FENCE_OPEN.match(lines[index])
        if not match:
            index += 1
            continue
        fence, start = match["fence"], index
        end = start + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        if end == len(lines):
            raise AssertionError(f"{path.name}:{start + 1}: code fence is never closed")
        marker = _NOT_RUN.match(lines[start - 1]) if start > 0 else None
        code = textwrap.dedent("\n".join(lines[start + 1 : end])) + "\n"
        blocks.append(Block(path, start + 1, match["lang"].lower(), code, marker["reason"] if marker else None))
        index = end + 1
    return blocks


def _all_blocks() -> list[Block]:
    return [block for path in DOC_FILES for block in _blocks(path)]


PYTHON_BLOCKS = [b for b in _all_blocks() if b.lang in ("python", "py")]
RUN_BLOCKS = [b for b in PYTHON_BLOCKS if b.not_run is None]


def test_docs_exist_and_have_runnable_examples():
    names = {path.name for path in DOC_FILES}
    expected = {"index.md", "getting-started.md", "metric.md", "inputs.md", "scores.md", "callback.md",
                "attention.md", "cli.md"}
    assert expected <= names, sorted(expected - names)
    assert len(RUN_BLOCKS) >= 20


_PRINT_LINE = re.compile(r"^\s*print\(")
_COMMENT = re.compile(r"#\s?(?P<text>[\[{].*)$")


def _bracketed(text: str) -> str | None:
    """The balanced ``{...}`` or ``[...]`` literal that ``text`` starts with (quotes respected)."""
    depth, quote = 0, None
    for index, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
            if depth == 0:
                return text[: index + 1]
    return None


def expected_outputs(code: str) -> dict[int, str]:
    """Line number (1-based, in ``code``) of each ``print`` whose output a comment shows."""
    lines = code.splitlines()
    expected = {}
    for number, line in enumerate(lines, start=1):
        if not _PRINT_LINE.match(line):
            continue
        candidates = [line.partition("  #")[2].strip()]
        if number < len(lines) and lines[number].lstrip().startswith("#"):
            candidates.append(lines[number].lstrip()[1:].strip())
        for candidate in candidates:
            match = _COMMENT.match("#" + candidate) if candidate[:1] in "[{" else None
            literal = _bracketed(match["text"]) if match else None
            if literal:
                expected[number] = literal
                break
    return expected


@pytest.mark.parametrize("block", RUN_BLOCKS, ids=lambda b: b.name)
def test_python_example_runs(block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expected = expected_outputs(block.code)
    printed: dict[int, list[str]] = {}

    def recording_print(*args, **kwargs):
        frame = sys._getframe(1)
        if frame.f_code.co_filename == block.name and frame.f_lineno in expected and "file" not in kwargs:
            buffer = io.StringIO()
            builtins.print(*args, **kwargs, file=buffer)
            printed.setdefault(frame.f_lineno, []).append(buffer.getvalue().rstrip("\n"))
        builtins.print(*args, **kwargs)

    namespace = {"__name__": "__main__", "__file__": str(tmp_path / "example.py"), "print": recording_print}
    exec(compile(block.code, block.name, "exec"), namespace)  # noqa: S102 - the docs' own examples
    checker = doctest.OutputChecker()
    for number, literal in expected.items():
        for output in printed.get(number, []):
            assert checker.check_output(literal + "\n", output + "\n", doctest.ELLIPSIS), (
                f"{block.path.name}:{block.line + number}: the comment shows {literal} but the example printed {output}"
            )


def test_printed_output_comments_are_found():
    code = "print({'a': 1})  # {'a': ...}\nprint([1])\n# [1]: prose\nprint(2)  # 2\n"
    assert expected_outputs(code) == {1: "{'a': ...}", 2: "[1]"}


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda b: b.name)
def test_python_example_compiles(block):
    compile(block.code, block.name, "exec")


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.name)
def test_not_run_markers_have_a_reason_and_a_python_block(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    marked = {block.line - 1 for block in _blocks(path) if block.not_run is not None}
    for number, line in enumerate(lines, start=1):
        if not _ANY_NOT_RUN.search(line):
            continue
        match = _NOT_RUN.match(line)
        assert match and match["reason"], f"{path.name}:{number}: write `<!-- not-run: reason -->`"
        assert number in marked, f"{path.name}:{number}: a not-run marker must sit right before a code fence"
    for block in _blocks(path):
        if block.not_run is not None:
            assert block.lang in ("python", "py"), f"{block.name}: only Python blocks are run; drop the marker"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    anchors: set[str] = set()
    counts: dict[str, int] = {}
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE_OPEN.match(line):
            in_code = not in_code
            continue
        if in_code or not line.startswith("#"):
            continue
        slug = _slug(line.lstrip("#"))
        n = counts.get(slug, 0)
        counts[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _links(path: Path) -> list[tuple[int, str]]:
    links, in_code = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if _FENCE_OPEN.match(line):
            in_code = not in_code
            continue
        if in_code:
            continue
        for match in _LINK.finditer(re.sub(r"`[^`]*`", "", line)):
            links.append((number, match["target"]))
    return links


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.name)
def test_relative_links_resolve(path):
    broken = []
    for number, target in _links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        if not destination.exists():
            broken.append(f"{path.name}:{number}: {target} (no such file)")
        elif anchor and destination.suffix == ".md" and anchor not in _anchors(destination):
            broken.append(f"{path.name}:{number}: {target} (no heading with anchor #{anchor})")
    assert not broken, "\n".join(broken)


def test_index_links_every_page():
    linked = {(DOCS / target.partition("#")[0]).resolve() for _, target in _links(DOCS / "index.md")}
    missing = [p.name for p in DOC_FILES if p.name != "index.md" and p.resolve() not in linked]
    assert not missing, f"docs/index.md does not link to {missing}"


def _lightning_cli_yaml() -> str:
    (block,) = [b for b in _all_blocks() if b.lang == "yaml" and "clip_metric.ClipScoreCallback" in b.code]
    return block.code


def test_lightning_cli_yaml_example_parses(tmp_path, monkeypatch):
    """The YAML of docs/callback.md builds a Trainer with the callback (no model is loaded)."""
    pytest.importorskip("jsonargparse")
    from lightning.pytorch.cli import LightningCLI

    from clip_metric import ClipScoreCallback, DiffusersGenerator
    from clip_metric.demos.text_to_image import ShapesTextToImage

    monkeypatch.chdir(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(_lightning_cli_yaml(), encoding="utf-8")
    # The example targets GPUs; this machine may have none.
    cli = LightningCLI(
        ShapesTextToImage,
        run=False,
        args=["--config", str(config), "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.strategy=auto"],
    )
    (callback,) = [c for c in cli.trainer.callbacks if isinstance(c, ClipScoreCallback)]
    assert isinstance(callback.generate_fn, DiffusersGenerator)
    assert callback.prompt_library and callback.encoder is None
