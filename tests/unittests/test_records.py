"""Direct tests of the per-prompt score files: ``write_scores`` and ``read_scores``."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clip_metric.records import COLUMNS, FORMAT, VERSION, ScoreRecord, read_scores, write_scores

RECORDS = (
    ScoreRecord("animals-fox", "a red fox in the snow", 0.3121, seed=1838700160, category="animals"),
    ScoreRecord("vehicles-car", "a blue car, \"parked\" in the rain", 0.2873, seed=99, category="vehicles"),
    ScoreRecord("no-seed", "a prompt without a seed", -0.05, seed=None),
    ScoreRecord("with-file", "an image from a folder", 0.0, seed=3, file="images/0003.png"),
)


def _header(rows: int, **extra) -> str:
    return json.dumps({"format": FORMAT, "version": VERSION, "rows": rows, "step": 10, **extra})


def _row(**fields) -> str:
    row = {"prompt_id": "p", "prompt": "a prompt", "seed": 1, "score": 0.3}
    row.update(fields)
    return json.dumps(row)


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".json", ".JSONL", ".CSV"])
def test_round_trip(tmp_path, suffix):
    path = write_scores(tmp_path / f"scores{suffix}", RECORDS, step=120, header={"scale": "cosine"})
    assert path == tmp_path / f"scores{suffix}"
    read = read_scores(path)
    assert read.records == RECORDS
    assert read.path == path
    if suffix.lower() == ".csv":
        assert read.step is None
        assert path.read_text(encoding="utf-8").splitlines()[0] == ",".join(COLUMNS)
    else:
        assert read.step == 120
        assert read.header["scale"] == "cosine" and read.header["rows"] == len(RECORDS)


def test_jsonl_layout_is_a_header_then_one_row_per_record(tmp_path):
    path = write_scores(tmp_path / "s.jsonl", RECORDS[:2], step=5)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    assert json.loads(lines[0]) == {"format": FORMAT, "version": VERSION, "rows": 2, "step": 5}
    assert json.loads(lines[1])["prompt_id"] == "animals-fox"
    assert json.loads(lines[1])["tags"] == {"category": "animals"} and "file" not in json.loads(lines[1])


def test_empty_record_list_round_trips(tmp_path):
    path = write_scores(tmp_path / "empty.jsonl", [], step=0)
    read = read_scores(path)
    assert read.records == () and read.step == 0


def test_writes_parent_directories(tmp_path):
    path = write_scores(tmp_path / "run" / "clip_scores" / "step-00000001.jsonl", RECORDS, step=1)
    assert read_scores(path).records == RECORDS


def test_written_file_has_the_permissions_of_an_ordinary_file(tmp_path):
    ordinary = tmp_path / "ordinary.txt"
    ordinary.write_text("x")
    path = write_scores(tmp_path / "scores.jsonl", RECORDS, step=1)
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(ordinary.stat().st_mode)


def test_replacing_keeps_no_temporary_files(tmp_path):
    path = tmp_path / "scores.jsonl"
    write_scores(path, RECORDS, step=1)
    write_scores(path, RECORDS[:1], step=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.jsonl"]
    assert read_scores(path).step == 2 and len(read_scores(path).records) == 1


prompt_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40
).filter(lambda text: text.strip())
finite = st.floats(min_value=-100.0, max_value=100.0, allow_nan=False)  # the widest scale's range
records = st.lists(
    st.builds(
        ScoreRecord,
        prompt_id=prompt_text,
        prompt=prompt_text,
        score=finite,
        seed=st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1),
        category=st.none() | prompt_text,
    ),
    max_size=8,
    unique_by=lambda record: record.key,
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=records, suffix=st.sampled_from([".jsonl", ".csv"]))
def test_property_any_unicode_prompts_and_finite_scores_round_trip(tmp_path, rows, suffix):
    path = write_scores(tmp_path / f"prop{suffix}", rows, step=3)
    assert read_scores(path).records == tuple(rows)


# --------------------------------------------------------------------------- atomic writing


def test_replace_over_a_symlink_replaces_the_link_not_its_target(tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep me\n", encoding="utf-8")
    link = tmp_path / "scores.jsonl"
    link.symlink_to(target)
    write_scores(link, RECORDS, step=1)
    assert target.read_text(encoding="utf-8") == "keep me\n"
    assert not link.is_symlink()
    assert read_scores(link).records == RECORDS


def test_exclusive_refuses_an_existing_file_and_leaves_it(tmp_path):
    path = write_scores(tmp_path / "scores.jsonl", RECORDS, step=1)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        write_scores(path, RECORDS[:1], step=2, exclusive=True)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.jsonl"]


def test_exclusive_refuses_a_dangling_symlink_and_writes_nothing_through_it(tmp_path):
    link = tmp_path / "scores.jsonl"
    link.symlink_to(tmp_path / "missing-target")
    with pytest.raises(FileExistsError):
        write_scores(link, RECORDS, step=1, exclusive=True)
    assert not (tmp_path / "missing-target").exists()


def test_exclusive_writes_a_new_file(tmp_path):
    path = write_scores(tmp_path / "new.jsonl", RECORDS, step=4, exclusive=True)
    assert read_scores(path).records == RECORDS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.jsonl"]


@pytest.mark.parametrize("score", [math.nan, math.inf, -math.inf, True, "0.3", None])
def test_write_refuses_bad_scores_and_writes_nothing(tmp_path, score):
    path = tmp_path / "scores.jsonl"
    with pytest.raises(ValueError, match="score"):
        write_scores(path, [ScoreRecord("p", "a prompt", score)], step=1)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "record",
    [
        ScoreRecord("p", "   ", 0.3),
        ScoreRecord("p", "", 0.3),
        ScoreRecord("", "a prompt", 0.3),
        ScoreRecord("p", "a prompt", 0.3, seed=1.5),
        ScoreRecord("p", "a prompt", 0.3, seed=True),
        ScoreRecord("p", "a prompt", 0.3, category=3),
        ScoreRecord(3, "a prompt", 0.3),
    ],
    ids=["blank-prompt", "empty-prompt", "empty-id", "float-seed", "bool-seed", "int-category", "int-id"],
)
def test_write_refuses_rows_the_reader_would_refuse(tmp_path, record):
    with pytest.raises(ValueError):
        write_scores(tmp_path / "scores.jsonl", [record], step=1)
    assert list(tmp_path.iterdir()) == []


def test_write_refuses_non_records(tmp_path):
    with pytest.raises(ValueError, match="ScoreRecord"):
        write_scores(tmp_path / "scores.jsonl", [{"prompt": "a", "score": 0.1}], step=1)


def test_write_refuses_the_same_prompt_and_seed_twice(tmp_path):
    rows = [ScoreRecord("p", "a prompt", 0.3, seed=1), ScoreRecord("p", "a prompt", 0.4, seed=1)]
    with pytest.raises(ValueError, match="twice"):
        write_scores(tmp_path / "scores.jsonl", rows, step=1)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- refused files


def test_read_refuses_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.jsonl"):
        read_scores(tmp_path / "nothing.jsonl")


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        ([_row()], r", line 1: not a clip-metric score file"),
        ([], r": not a clip-metric score file"),
        ([json.dumps({"format": "something-else", "rows": 0})], r", line 1: not a clip-metric score file"),
        (['["format", "clip-metric-scores"]'], r", line 1: not a clip-metric score file"),
        ([_header(0, version=2)], r", line 1: unsupported score file version 2"),
        ([_header(1, step=1.5), _row()], r", line 1: expected an integer 'step'"),
        ([_header(1, step=True), _row()], r", line 1: expected an integer 'step'"),
    ],
    ids=["no-header", "empty", "foreign-format", "json-list", "version", "float-step", "bool-step"],
)
def test_read_refuses_missing_or_foreign_headers(tmp_path, lines, match):
    path = _write_lines(tmp_path / "scores.jsonl", lines)
    with pytest.raises(ValueError, match=match) as info:
        read_scores(path)
    assert str(info.value).startswith(str(path))


def test_read_refuses_a_pretty_printed_foreign_json_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model": "x", "steps": [1, 2]}, indent=2), encoding="utf-8")
    with pytest.raises(ValueError, match=rf"^{path}, line 1: invalid JSON"):
        read_scores(path)


def test_read_refuses_a_truncated_file(tmp_path):
    path = write_scores(tmp_path / "scores.jsonl", RECORDS, step=1)
    lines = path.read_text(encoding="utf-8").splitlines()
    _write_lines(path, lines[:-1])  # lost its last row
    with pytest.raises(ValueError, match=r"incomplete score file: the header announces 4 rows but 3 follow") as info:
        read_scores(path)
    assert str(info.value).startswith(str(path))


def test_read_refuses_a_file_cut_mid_row(tmp_path):
    path = write_scores(tmp_path / "scores.jsonl", RECORDS, step=1)
    text = path.read_text(encoding="utf-8")
    path.write_text(text[: len(text) - 20], encoding="utf-8")
    with pytest.raises(ValueError, match=rf"^{path}, line 5: invalid JSON"):
        read_scores(path)


def test_read_refuses_more_rows_than_announced(tmp_path):
    path = _write_lines(tmp_path / "scores.jsonl", [_header(1), _row(seed=1), _row(seed=2)])
    with pytest.raises(ValueError, match="announces 1 rows but 2 follow"):
        read_scores(path)


@pytest.mark.parametrize("rows", ["1", True, 1.0, None])
def test_read_refuses_a_row_count_that_is_not_an_integer(tmp_path, rows):
    header = json.dumps({"format": FORMAT, "version": VERSION, "rows": rows, "step": 1})
    path = _write_lines(tmp_path / "scores.jsonl", [header, _row()])
    with pytest.raises(ValueError, match=rf"^{path}"):
        read_scores(path)


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ('{"prompt_id": "p", "prompt": "a", "seed": 1, "score": NaN}', "NaN"),
        ('{"prompt_id": "p", "prompt": "a", "seed": 1, "score": Infinity}', "Infinity"),
        ('{"prompt_id": "p", "prompt": "a", "seed": 1, "score": -Infinity}', "Infinity"),
        (_row(score=True), "expected a finite number 'score' but got True"),
        (_row(score="0.3"), "expected a finite number 'score'"),
        (_row(score=None), "expected a finite number 'score'"),
        (_row(seed=1.0), r"expected an integer 'seed' \(or null\) but got 1.0"),
        (_row(seed=False), "expected an integer 'seed'"),
        (_row(seed="7"), "expected an integer 'seed'"),
        (_row(prompt=""), "expected a non-empty string 'prompt'"),
        (_row(prompt=3), "expected a non-empty string 'prompt'"),
        (_row(prompt_id=""), "expected a non-empty string 'prompt_id'"),
        (_row(category=5), "expected a non-empty string 'category'"),
        ("[1, 2]", "expected a JSON object"),
        ('{"prompt": "a", "prompt": "b", "score": 0.1}', "duplicate key 'prompt'"),
        ("{not json", "invalid JSON"),
    ],
)
def test_read_refuses_malformed_rows_naming_file_and_line(tmp_path, row, match):
    path = _write_lines(tmp_path / "scores.jsonl", [_header(2), _row(seed=0), row])
    with pytest.raises(ValueError, match=match) as info:
        read_scores(path)
    assert str(info.value).startswith(f"{path}, line 3: ")


def test_read_refuses_duplicate_rows_naming_both_lines(tmp_path):
    path = _write_lines(tmp_path / "scores.jsonl", [_header(3), _row(seed=1), _row(seed=2), _row(seed=1, score=0.5)])
    with pytest.raises(ValueError, match=r", line 4: prompt 'p' with seed 1 is scored twice \(first on line 2\)"):
        read_scores(path)


def test_same_prompt_with_different_seeds_or_ids_is_not_a_duplicate(tmp_path):
    lines = [_header(3), _row(seed=1), _row(seed=2), _row(seed=1, prompt_id="q")]
    assert len(read_scores(_write_lines(tmp_path / "scores.jsonl", lines)).records) == 3


def test_prompt_id_defaults_to_the_prompt(tmp_path):
    path = _write_lines(tmp_path / "scores.jsonl", [_header(1), json.dumps({"prompt": "a cat", "score": 0.2})])
    (record,) = read_scores(path).records
    assert record.prompt_id == "a cat" and record.seed is None


def test_blank_lines_are_skipped_but_line_numbers_kept(tmp_path):
    path = _write_lines(tmp_path / "scores.jsonl", [_header(2), "", _row(seed=1), "   ", _row(seed=True)])
    with pytest.raises(ValueError, match=r", line 5: expected an integer 'seed'"):
        read_scores(path)


def test_utf8_bom_is_accepted(tmp_path):
    path = write_scores(tmp_path / "scores.jsonl", RECORDS, step=1)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert read_scores(path).records == RECORDS


# --------------------------------------------------------------------------- CSV


def _csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("p,a prompt,1,nan,,", "finite number 'score'"),
        ("p,a prompt,1,inf,,", "finite number 'score'"),
        ("p,a prompt,1.0,0.3,,", "expected a number 'seed' but got '1.0'"),
        ("p,a prompt,1,True,,", "expected a number 'score' but got 'True'"),
        ("p,,1,0.3,,", "non-empty string 'prompt'"),
        ('p,"unterminated,1,0.3,,', "malformed CSV"),
    ],
)
def test_csv_refuses_malformed_rows_naming_file_and_line(tmp_path, line, match):
    path = _csv(tmp_path / "scores.csv", ",".join(COLUMNS) + "\np,a prompt,2,0.1,,\n" + line + "\n")
    with pytest.raises(ValueError, match=match) as info:
        read_scores(path)
    assert str(info.value).startswith(f"{path}, line 3: ")


def test_csv_refuses_duplicate_rows_and_duplicate_columns(tmp_path):
    path = _csv(tmp_path / "dup.csv", ",".join(COLUMNS) + "\np,a,1,0.1,,\np,a,1,0.2,,\n")
    with pytest.raises(ValueError, match="line 3: prompt 'p' with seed 1 is scored twice"):
        read_scores(path)
    path = _csv(tmp_path / "cols.csv", "prompt_id,prompt,score,Score\np,a,0.1,0.2\n")
    with pytest.raises(ValueError, match="line 1: duplicate column 'Score'"):
        read_scores(path)


def test_csv_prompts_with_commas_quotes_and_newlines_round_trip(tmp_path):
    rows = [ScoreRecord("q", 'a "quoted", multi\nline\r\nprompt', 0.125, seed=4)]
    assert read_scores(write_scores(tmp_path / "s.csv", rows)).records == tuple(rows)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
@pytest.mark.parametrize("text", ["carriage\rreturn", "next\x85line", "line\u2028separator", "para\u2029graph", "tab\tand\x0cfeed"])
def test_prompts_holding_line_break_characters_round_trip(tmp_path, suffix, text):
    rows = [ScoreRecord("a", text, 0.1, seed=1), ScoreRecord("b", "plain", 0.2, seed=1)]
    assert read_scores(write_scores(tmp_path / f"s{suffix}", rows)).records == tuple(rows)


def test_csv_without_carriage_returns_is_minimally_quoted(tmp_path):
    path = write_scores(tmp_path / "s.csv", [ScoreRecord("p", "a, b", 0.5, seed=2)])
    assert path.read_text(encoding="utf-8") == ",".join(COLUMNS) + '\np,"a, b",2,0.5,,\n'


def test_scores_beyond_the_scale_range_are_refused(tmp_path):
    path = write_scores(tmp_path / "s.jsonl", [ScoreRecord("a", "a cat", 0.5)], header={"scale": "cosine"})
    text = path.read_text().replace('"score": 0.5', '"score": 1e308')
    path.write_text(text)
    with pytest.raises(ValueError, match=r"line 2: expected a score within \[-1, 1\]"):
        read_scores(path)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_writer_killed_mid_write_leaves_a_complete_file(tmp_path):
    """kill -9 a process that keeps rewriting a large score file: the file on disk is always whole."""
    path = tmp_path / "clip_scores" / "step-00000001.jsonl"
    write_scores(path, [ScoreRecord("p0", "first version", 0.1, seed=0)], step=1)
    script = (
        "import itertools, sys\n"
        "from clip_metric.records import ScoreRecord, write_scores\n"
        "rows = [ScoreRecord(f'p{i}', 'prompt ' + 'x' * 200 + str(i), 0.25, seed=i) for i in range(20000)]\n"
        "for k in itertools.count():\n"
        "    write_scores(sys.argv[1], rows, step=1)\n"
        "    print(k, flush=True)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "0"  # one full write done; the next one is under way
        time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    scores = read_scores(path)
    assert len(scores.records) == 20000
    leftovers = [p.name for p in path.parent.iterdir() if p.name != path.name]
    assert all(name.endswith(".tmp") for name in leftovers)  # at most the interrupted temporary file
