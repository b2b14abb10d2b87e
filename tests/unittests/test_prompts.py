from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from clip_metric.prompts import (
    BUILTIN_LIBRARY,
    BUILTIN_LIBRARY_PATH,
    Prompt,
    builtin_prompts,
    balanced_order,
    load_prompt_library,
    prompt_seed,
    proportional_order,
    select_prompts,
)

# Values computed once with
#   int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") & 0x7FFFFFFF
# and frozen here: a change means every stored validation image changes.
EXPECTED_SEEDS = {
    "a red fox pouncing into deep snow": 1838700160,
    'a striped awning with the word "Café" painted on it': 842350451,
    "東京の夜景、雨に濡れた通り 🌧️": 2066940078,
}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- seeds


@pytest.mark.parametrize(("text", "expected"), sorted(EXPECTED_SEEDS.items()))
def test_prompt_seed_frozen_values(text: str, expected: int) -> None:
    assert prompt_seed(text) == expected
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    assert int.from_bytes(digest[:8], "big") & 0x7FFFFFFF == expected


def test_prompt_seed_range_and_type() -> None:
    for prompt in builtin_prompts():
        assert 0 <= prompt.seed < 2**31
    with pytest.raises(TypeError, match="expects a str"):
        prompt_seed(b"bytes")  # type: ignore[arg-type]


def test_prompt_seed_stable_across_processes() -> None:
    # The module file is loaded on its own (not through the package) so that the
    # child process also proves that it needs nothing beyond the standard library.
    texts = list(EXPECTED_SEEDS)
    module_path = Path(__file__).resolve().parents[2] / "clip_metric" / "prompts.py"
    code = (
        "import importlib.util, json, sys\n"
        "spec = importlib.util.spec_from_file_location('standalone_prompts', sys.argv[1])\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "sys.modules[spec.name] = module\n"
        "spec.loader.exec_module(module)\n"
        "assert 'torch' not in sys.modules\n"
        "texts = json.loads(sys.stdin.read())\n"
        "sys.stdout.write(json.dumps([module.prompt_seed(t) for t in texts]))\n"
    )
    for hash_seed in ("0", "12345"):
        result = subprocess.run(
            [sys.executable, "-c", code, str(module_path)],
            input=json.dumps(texts),
            capture_output=True,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            check=True,
            encoding="utf-8",
        )
        assert json.loads(result.stdout) == [EXPECTED_SEEDS[t] for t in texts]


def test_seed_independent_of_position_and_id(tmp_path: Path) -> None:
    text = "a red fox pouncing into deep snow"
    first = load_prompt_library([text, "a cat"])[0]
    last = load_prompt_library(["a cat", "a dog", text])[2]
    from_file = load_prompt_library(write(tmp_path / "p.txt", f"# c\n\n  {text}  \n"))[0]
    assert first.id != last.id != from_file.id
    assert first.seed == last.seed == from_file.seed == EXPECTED_SEEDS[text]


# --------------------------------------------------------------------------- Prompt


def test_prompt_dataclass() -> None:
    p = Prompt("x", "a cat", "animals")
    assert (p.id, p.text, p.category, p.seed) == ("x", "a cat", "animals", prompt_seed("a cat"))
    assert Prompt("x", "a cat").category is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.text = "a dog"  # type: ignore[misc]
    moved = dataclasses.replace(p, text="a dog")
    assert moved.seed == prompt_seed("a dog")
    assert p == Prompt("x", "a cat", "animals")
    with pytest.raises(ValueError, match="empty"):
        Prompt("x", "   ")
    with pytest.raises(ValueError, match="id must not be empty"):
        Prompt("", "a cat")
    with pytest.raises(TypeError, match="text must be a str"):
        Prompt("x", 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="category"):
        Prompt("x", "a cat", 5)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- built-in


def test_builtin_library() -> None:
    prompts = builtin_prompts()
    assert len(prompts) >= 120
    counts = Counter(p.category for p in prompts)
    assert None not in counts
    assert len(counts) >= 10
    assert min(counts.values()) >= 8
    ids = [p.id for p in prompts]
    assert len(set(ids)) == len(ids)
    assert len({p.text for p in prompts}) == len(prompts)
    for p in prompts:
        assert p.id == p.id.strip().lower() and " " not in p.id
        assert p.id.startswith(p.category.split("-")[0] + "-")
        assert p.text == p.text.strip()
    assert "animals-red-fox-snow" in ids


def test_builtin_sources_agree() -> None:
    assert BUILTIN_LIBRARY == "default"
    assert BUILTIN_LIBRARY_PATH.is_file()
    assert load_prompt_library(True) == load_prompt_library("default") == builtin_prompts()
    assert load_prompt_library(BUILTIN_LIBRARY_PATH) == builtin_prompts()
    # builtin_prompts returns a fresh list each call
    builtin_prompts().clear()
    assert len(builtin_prompts()) >= 120


# --------------------------------------------------------------------------- formats


def test_txt(tmp_path: Path) -> None:
    path = write(
        tmp_path / "prompts.txt",
        "# my prompts\n"
        "a cat under a table\n"
        "\n"
        "   \n"
        "  a dog behind a fence  \n"
        "   # indented comment\n"
        "a cat under a table\n",
    )
    prompts = load_prompt_library(path)
    assert [(p.id, p.text, p.category) for p in prompts] == [
        ("line-2", "a cat under a table", None),
        ("line-5", "a dog behind a fence", None),
        ("line-7", "a cat under a table", None),
    ]
    # duplicate texts keep their distinct ids and share a seed
    assert prompts[0].seed == prompts[2].seed
    assert load_prompt_library(str(path)) == prompts


def test_txt_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "win.TXT"
    path.write_bytes("\ufeffa cat\r\na dog\r\n".encode())
    assert [p.text for p in load_prompt_library(path)] == ["a cat", "a dog"]


def test_json_simple_and_nested(tmp_path: Path) -> None:
    path = write(
        tmp_path / "library.json",
        json.dumps(
            {
                "fox": "a red fox in the snow",
                "sign": {"prompt": 'a sign that says "OPEN"', "category": "text"},
                "nocat": {"prompt": "a blue banana", "adapter_strength": 0.5},
                "blankcat": {"prompt": "a tree", "category": "  "},
            }
        ),
    )
    prompts = load_prompt_library(path)
    assert [(p.id, p.text, p.category) for p in prompts] == [
        ("fox", "a red fox in the snow", None),
        ("sign", 'a sign that says "OPEN"', "text"),
        ("nocat", "a blue banana", None),
        ("blankcat", "a tree", None),
    ]


def test_json_list(tmp_path: Path) -> None:
    path = write(tmp_path / "list.json", json.dumps(["a cat", "a dog", {"prompt": "a cow", "id": "cow"}]))
    assert [(p.id, p.text) for p in load_prompt_library(path)] == [
        ("item-1", "a cat"),
        ("item-2", "a dog"),
        ("cow", "a cow"),
    ]


def test_jsonl(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.jsonl",
        '{"prompt": "a cat", "category": "animals"}\n'
        "\n"
        '{"text": "a dog", "id": "dog"}\n'
        '{"prompt": "a cow", "id": 7, "extra": true}\n',
    )
    prompts = load_prompt_library(path)
    assert [(p.id, p.text, p.category) for p in prompts] == [
        ("line-1", "a cat", "animals"),
        ("dog", "a dog", None),
        ("7", "a cow", None),
    ]


def test_tsv_parti_columns(tmp_path: Path) -> None:
    path = write(
        tmp_path / "parti.tsv",
        "Prompt\tCategory\tChallenge\tNote\n"
        'a sign that says "hi"\tWorld Knowledge\tWriting & Symbols\t\n'
        "\n"
        "three cats on a bench\tAnimals\tQuantity\tsome note\n"
        "a lonely lighthouse\t\t\t\n",
    )
    prompts = load_prompt_library(path)
    assert [(p.id, p.text, p.category) for p in prompts] == [
        ("row-1", 'a sign that says "hi"', "World Knowledge"),
        ("row-2", "three cats on a bench", "Animals"),
        ("row-3", "a lonely lighthouse", None),
    ]


def test_csv(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.csv",
        "Note,prompt\n"
        'x,"a cat, a dog and a cow"\n'
        'y,"a sign that says ""hi"""\n',
    )
    prompts = load_prompt_library(path)
    assert [(p.id, p.text, p.category) for p in prompts] == [
        ("row-1", "a cat, a dog and a cow", None),
        ("row-2", 'a sign that says "hi"', None),
    ]


def test_in_memory_sources() -> None:
    assert [p.id for p in load_prompt_library(("a", "b"))] == ["item-1", "item-2"]
    prompts = load_prompt_library({"k": "a cat", "m": {"prompt": "a dog", "category": "animals"}})
    assert [(p.id, p.text, p.category) for p in prompts] == [("k", "a cat", None), ("m", "a dog", "animals")]
    given = [Prompt("a", "a cat", "animals"), Prompt("b", "a dog")]
    assert load_prompt_library(given) == given


def test_unicode_prompts(tmp_path: Path) -> None:
    texts = ["東京の夜景、雨に濡れた通り 🌧️", "une crème brûlée sur une table en marbre", "Ελληνικό χωριό"]
    txt = write(tmp_path / "uni.txt", "\n".join(texts))
    js = write(tmp_path / "uni.json", json.dumps({f"k{i}": t for i, t in enumerate(texts)}, ensure_ascii=True))
    jsl = write(tmp_path / "uni.jsonl", "\n".join(json.dumps({"prompt": t}, ensure_ascii=False) for t in texts))
    tsv = write(tmp_path / "uni.tsv", "Prompt\n" + "\n".join(texts))
    for path in (txt, js, jsl, tsv):
        prompts = load_prompt_library(path)
        assert [p.text for p in prompts] == texts
    assert load_prompt_library(txt)[0].seed == EXPECTED_SEEDS[texts[0]]


# --------------------------------------------------------------------------- subsets


def test_subset_deterministic_nested_and_spread() -> None:
    library = builtin_prompts()
    n_categories = len({p.category for p in library})
    previous: set[str] = set()
    for k in range(1, len(library) + 1):
        subset = load_prompt_library(True, max_prompts=k)
        assert len(subset) == k
        assert subset == load_prompt_library("default", max_prompts=k)
        ids = {p.id for p in subset}
        assert previous <= ids
        previous = ids
        # library order is kept
        positions = [library.index(p) for p in subset]
        assert positions == sorted(positions)
        # 12 categories of 12: proportional is equal, so category sizes differ by at most one
        counts = Counter(p.category for p in subset)
        if k >= n_categories:
            assert len(counts) == n_categories
        assert max(counts.values()) - min(counts.values()) <= 1 or k < n_categories
    assert load_prompt_library(True, max_prompts=10_000) == library


def test_subset_independent_of_library_order() -> None:
    library = builtin_prompts()
    shuffled = list(reversed(library))
    a = {p.id for p in select_prompts(library, 20)}
    b = {p.id for p in select_prompts(shuffled, 20)}
    assert a == b


def _first_tag(prompt: Prompt) -> tuple[str, str] | None:
    return next(iter(prompt.tags.items()), None)


def _assert_every_prefix_is_proportional(library: list[Prompt]) -> None:
    order = proportional_order(library)
    assert sorted(map(id, order)) == sorted(map(id, library))  # each prompt once
    sizes = Counter(map(_first_tag, library))
    counts: Counter = Counter()
    total = len(library)
    for k, prompt in enumerate(order, start=1):
        counts[_first_tag(prompt)] += 1
        for group, size in sizes.items():
            # |count - k * size / total| < 1, in integers
            assert abs(counts[group] * total - k * size) < total, (k, group, counts[group], k * size / total)


def _library(sizes: list[int], salt: str = "") -> list[Prompt]:
    return [
        Prompt(f"g{g}-{j}", f"prompt {j} of group {g}{salt}", category=f"group-{g}")
        for g, size in enumerate(sizes)
        for j in range(size)
    ]


@pytest.mark.parametrize("name", ["parti", "geneval", "default"])
def test_every_prefix_of_a_bundled_library_holds_each_category_in_proportion(name: str) -> None:
    _assert_every_prefix_is_proportional(load_prompt_library(name))


def test_every_prefix_holds_each_group_in_proportion_whatever_the_sizes() -> None:
    import random

    rng = random.Random(0)
    for trial in range(60):
        sizes = [rng.choice([1, 2, 3, rng.randint(1, 40), rng.randint(1, 300)]) for _ in range(rng.randint(1, 14))]
        library = _library(sizes, salt=f" ({trial})")
        rng.shuffle(library)
        _assert_every_prefix_is_proportional(library)
    # Untagged prompts form one group; prompts whose first tags differ form groups of their own.
    _assert_every_prefix_is_proportional([Prompt(f"u{i}", f"untagged {i}") for i in range(30)] + _library([5, 90]))
    _assert_every_prefix_is_proportional([Prompt(f"n{i}", f"note {i}", tags={"note": f"n{i}"}) for i in range(50)])


def test_a_subset_of_the_parti_library_keeps_each_category_share() -> None:
    parti = load_prompt_library("parti")
    sizes = Counter(p.category for p in parti)
    subset = select_prompts(parti, 256)
    counts = Counter(p.category for p in subset)
    assert all(abs(counts[c] - 256 * n / len(parti)) < 1 for c, n in sizes.items()), counts
    assert counts["Animals"] in (49, 50) and counts["Indoor Scenes"] in (6, 7)  # 314 and 40 of 1,632


def test_the_order_depends_on_texts_ids_and_first_tags_alone() -> None:
    parti = load_prompt_library("parti")
    ids = [p.id for p in proportional_order(parti)]
    assert [p.id for p in proportional_order(list(reversed(parti)))] == ids
    assert [p.id for p in proportional_order(parti[1::2] + parti[::2])] == ids
    # Integer arithmetic and SHA-256 only: the same on every machine, Python version and world size.
    assert ids[:12] == [
        "parti-1049", "parti-0347", "parti-0069", "parti-1317", "parti-0151", "parti-0782",
        "parti-0346", "parti-1491", "parti-0796", "parti-0911", "parti-0945", "parti-1585",
    ]
    code = "from clip_metric.prompts import *; print(','.join(p.id for p in proportional_order(load_prompt_library('parti'))))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip().split(",") == ids
    assert balanced_order(parti) == proportional_order(parti)  # the former name


def test_inside_a_category_prompts_come_in_the_order_of_the_sha256_of_their_text() -> None:
    # A library file that lists each category's prompts easiest first cannot bias a prefix.
    library = _library([40, 25]) + [Prompt("dup-b", "prompt 3 of group 1", category="group-1")]
    order = proportional_order(library)
    for group in ("group-0", "group-1"):
        members = [p for p in order if p.category == group]
        assert members == sorted(members, key=lambda p: (hashlib.sha256(p.text.encode()).hexdigest(), p.id))
    # Far from the library order: the ranks of the first ten of group 0 spread over its 40 positions.
    first = [library.index(p) for p in order if p.category == "group-0"][:10]
    assert max(first) - min(first) > 20


def test_subset_uncategorised(tmp_path: Path) -> None:
    path = write(tmp_path / "p.txt", "\n".join(f"prompt number {i}" for i in range(50)))
    small = load_prompt_library(path, max_prompts=5)
    large = load_prompt_library(path, max_prompts=20)
    assert len(small) == 5 and len(large) == 20
    assert set(small) <= set(large)
    assert small == load_prompt_library(path, max_prompts=5)


@pytest.mark.parametrize("bad", [0, -3, 2.5, "5", True])
def test_max_prompts_validation(bad: object) -> None:
    with pytest.raises(ValueError, match="Expected `max_prompts` to be a positive int") as info:
        load_prompt_library(True, max_prompts=bad)  # type: ignore[arg-type]
    assert repr(bad) in str(info.value)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("source", [False, None])
def test_disabled_source(source: object) -> None:
    with pytest.raises(ValueError, match="disabled"):
        load_prompt_library(source)  # type: ignore[arg-type]


def test_unsupported_source_type() -> None:
    with pytest.raises(TypeError, match="int"):
        load_prompt_library(3)  # type: ignore[arg-type]


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        load_prompt_library(missing)
    with pytest.raises(FileNotFoundError, match="a cat on a mat"):
        load_prompt_library("a cat on a mat")


def test_directory(tmp_path: Path) -> None:
    folder = tmp_path / "dir.txt"
    folder.mkdir()
    with pytest.raises(ValueError, match="dir.txt is a directory, not a file"):
        load_prompt_library(folder)


def test_unknown_extension(tmp_path: Path) -> None:
    path = write(tmp_path / "prompts.yaml", "a: b\n")
    with pytest.raises(ValueError, match=r"prompts\.yaml.*unknown extension '\.yaml'"):
        load_prompt_library(path)


def test_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin.txt"
    path.write_bytes(b"a cat\na cr\xe8me\n")
    with pytest.raises(ValueError, match=r"latin\.txt, line 2: not valid UTF-8"):
        load_prompt_library(path)


def test_invalid_json(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.json", '{\n  "a": "a cat",\n  "b": "a dog"\n  "c": "x"\n}\n')
    with pytest.raises(ValueError, match=r"broken\.json, line 4: invalid JSON: .*\(column 3\)"):
        load_prompt_library(path)


def test_json_wrong_top_level(tmp_path: Path) -> None:
    path = write(tmp_path / "scalar.json", '"a cat"')
    with pytest.raises(ValueError, match=r"scalar\.json.*must be an object or a list"):
        load_prompt_library(path)


def test_json_entry_not_string(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.json", '{\n  "ok": "a cat",\n  "bad": 42\n}\n')
    with pytest.raises(ValueError, match=r"bad\.json, key 'bad' \(line 3\): value must be a prompt string"):
        load_prompt_library(path)


def test_json_entry_lacks_prompt(tmp_path: Path) -> None:
    path = write(tmp_path / "noprompt.json", '{\n  "ok": "a cat",\n  "x": {"promt": "typo"}\n}\n')
    with pytest.raises(ValueError, match=r"noprompt\.json, key 'x' \(line 3\): entry lacks a 'prompt' key"):
        load_prompt_library(path)


def test_json_prompt_not_string(tmp_path: Path) -> None:
    path = write(tmp_path / "num.json", '{"x": {"prompt": ["a", "list"]}}')
    with pytest.raises(ValueError, match=r"num\.json, key 'x' \(line 1\): prompt 'x' must be a string"):
        load_prompt_library(path)


def test_json_list_entry_not_string(tmp_path: Path) -> None:
    path = write(tmp_path / "list.json", '["a cat", 3]')
    with pytest.raises(ValueError, match=r"list\.json, item 2: entry must be a string"):
        load_prompt_library(path)


def test_json_bad_category(tmp_path: Path) -> None:
    path = write(tmp_path / "cat.json", '{"x": {"prompt": "a cat", "category": ["animals"]}}')
    with pytest.raises(ValueError, match=r"cat\.json, key 'x'.*category of 'x' must be a string"):
        load_prompt_library(path)


def test_json_empty_prompt(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.json", '{\n  "a": "a cat",\n  "b": "   "\n}')
    with pytest.raises(ValueError, match=r"empty\.json, key 'b' \(line 3\): prompt 'b' is empty or whitespace-only"):
        load_prompt_library(path)


def test_json_duplicate_key(tmp_path: Path) -> None:
    path = write(tmp_path / "dup.json", '{\n  "a": "a cat",\n  "b": "a dog",\n  "a": "a cow"\n}\n')
    with pytest.raises(ValueError, match=r"dup\.json, line 4: duplicate key 'a'"):
        load_prompt_library(path)


def test_json_duplicate_list_ids(tmp_path: Path) -> None:
    path = write(tmp_path / "dupl.json", '[{"prompt": "a cat", "id": "x"}, {"prompt": "a dog", "id": "x"}]')
    with pytest.raises(ValueError, match=r"dupl\.json, item 2: duplicate id 'x' \(first defined at item 1\)"):
        load_prompt_library(path)


@pytest.mark.parametrize("content", ["{}", "[]"])
def test_json_empty_library(tmp_path: Path, content: str) -> None:
    path = write(tmp_path / "none.json", content)
    with pytest.raises(ValueError, match=r"no prompts found in .*none\.json"):
        load_prompt_library(path)


def test_txt_empty_prompt_free_file(tmp_path: Path) -> None:
    path = write(tmp_path / "comments.txt", "# only\n\n   \n# comments\n")
    with pytest.raises(ValueError, match=r"no prompts found in .*comments\.txt"):
        load_prompt_library(path)


def test_jsonl_errors(tmp_path: Path) -> None:
    bad_json = write(tmp_path / "a.jsonl", '{"prompt": "a cat"}\n{"prompt": "a dog",}\n')
    with pytest.raises(ValueError, match=r"a\.jsonl, line 2: invalid JSON"):
        load_prompt_library(bad_json)
    not_object = write(tmp_path / "b.jsonl", '{"prompt": "a cat"}\n\n"a dog"\n')
    with pytest.raises(ValueError, match=r"b\.jsonl, line 3: each line must be a JSON object"):
        load_prompt_library(not_object)
    no_prompt = write(tmp_path / "c.jsonl", '{"caption": "a cat"}\n')
    with pytest.raises(ValueError, match=r"c\.jsonl, line 1: entry lacks a 'prompt' key \(keys: 'caption'\)"):
        load_prompt_library(no_prompt)
    empty = write(tmp_path / "d.jsonl", '{"prompt": "a cat"}\n{"text": ""}\n')
    with pytest.raises(ValueError, match=r"d\.jsonl, line 2: prompt 'line-2' is empty"):
        load_prompt_library(empty)
    dup = write(tmp_path / "e.jsonl", '{"prompt": "a", "id": "x"}\n{"prompt": "b", "id": "x"}\n')
    with pytest.raises(ValueError, match=r"e\.jsonl, line 2: duplicate id 'x' \(first defined at line 1\)"):
        load_prompt_library(dup)
    conflict = write(tmp_path / "f.jsonl", '{"prompt": "a", "text": "b"}\n')
    with pytest.raises(ValueError, match=r"f\.jsonl, line 1: entry has both"):
        load_prompt_library(conflict)
    nothing = write(tmp_path / "g.jsonl", "\n\n")
    with pytest.raises(ValueError, match=r"no prompts found in .*g\.jsonl"):
        load_prompt_library(nothing)


def test_table_errors(tmp_path: Path) -> None:
    no_column = write(tmp_path / "cols.tsv", "Text\tCategory\na cat\tAnimals\n")
    with pytest.raises(ValueError, match=r"cols\.tsv, line 1: header has no 'Prompt' column \(found: 'Text', 'Category'\)"):
        load_prompt_library(no_column)
    empty_cell = write(tmp_path / "cell.csv", "Prompt,Category\na cat,Animals\n  ,Animals\n")
    with pytest.raises(ValueError, match=r"cell\.csv, row 2 \(line 3\): prompt 'row-2' is empty"):
        load_prompt_library(empty_cell)
    short_row = write(tmp_path / "short.csv", "Category,Prompt\nAnimals,a cat\nAnimals\n")
    with pytest.raises(ValueError, match=r"short\.csv, row 2 \(line 3\): missing 'Prompt' value"):
        load_prompt_library(short_row)
    header_only = write(tmp_path / "header.tsv", "Prompt\tCategory\n")
    with pytest.raises(ValueError, match=r"no prompts found in .*header\.tsv"):
        load_prompt_library(header_only)
    blank = write(tmp_path / "blank.csv", "")
    with pytest.raises(ValueError, match=r"no prompts found in .*blank\.csv"):
        load_prompt_library(blank)


def test_in_memory_errors() -> None:
    with pytest.raises(ValueError, match=r"the given list, item 2: prompt 'item-2' is empty"):
        load_prompt_library(["a cat", " "])
    with pytest.raises(ValueError, match=r"the given list, item 1: entry must be a string"):
        load_prompt_library([None])
    with pytest.raises(ValueError, match=r"the given dict, key 'b': value must be a prompt string"):
        load_prompt_library({"a": "a cat", "b": 1})
    with pytest.raises(ValueError, match="no prompts found in the given list"):
        load_prompt_library([])
    with pytest.raises(ValueError, match="no prompts found in the given dict"):
        load_prompt_library({})
    with pytest.raises(ValueError, match=r"item 2: duplicate id 'a'"):
        load_prompt_library([Prompt("a", "x"), Prompt("a", "y")])


def test_bundled_libraries_have_their_counts_tags_and_survive_pickling() -> None:
    import pickle

    parti, geneval = load_prompt_library("parti"), load_prompt_library("geneval")
    assert (len(parti), len(geneval)) == (1632, 553)
    assert len({p.tags["category"] for p in parti}) == 12 and len({p.tags["challenge"] for p in parti}) == 11
    assert {p.tags["tag"] for p in geneval} == {
        "single_object", "two_object", "counting", "colors", "position", "color_attr"
    }
    assert pickle.loads(pickle.dumps(parti[:5])) == parti[:5]
    subset = load_prompt_library("parti", max_prompts=41)  # the smallest category holds 40 of 1,632
    assert len({p.category for p in subset}) == 12 and set(subset) <= set(load_prompt_library("parti", 100))


def test_extra_columns_and_fields_are_tags(tmp_path: Path) -> None:
    table = write(tmp_path / "lib.csv", "Prompt,Category,Difficulty\na cat,animals,easy\n")
    (prompt,) = load_prompt_library(table)
    assert dict(prompt.tags) == {"category": "animals", "difficulty": "easy"}
    lines = write(tmp_path / "lib.jsonl", '{"prompt": "a dog", "style": "photo", "n": 2, "objects": ["dog"]}\n')
    (prompt,) = load_prompt_library(lines)
    assert dict(prompt.tags) == {"style": "photo", "n": "2"}  # a list is not a tag
