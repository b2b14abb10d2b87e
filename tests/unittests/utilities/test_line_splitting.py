"""Line-based text (prompt libraries, caption files, JSON Lines) ends lines at '\\n' alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from clip_metric.cli import main
from clip_metric.prompts import load_prompt_library
from clip_metric.records import read_scores
from clip_metric.utilities.readers import iter_jsonl, split_lines


def _library(tmp_path, text, name="library.txt"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return [(p.id, p.text) for p in load_prompt_library(path)]


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x0c", "\x0b", "\x1c", "\x1d", "\x1e", "\x85"])
def test_a_txt_library_splits_prompts_at_newlines_only(tmp_path, separator):
    prompts = _library(tmp_path, f"a red fox{separator}in the snow\nsecond prompt\nthird prompt\n")
    assert [pid for pid, _ in prompts] == ["line-1", "line-2", "line-3"]
    assert prompts[0][1] == f"a red fox{separator}in the snow"
    assert prompts[2] == ("line-3", "third prompt")


def test_a_txt_library_keeps_windows_line_ends_and_numbers_lines_as_editors_do(tmp_path):
    assert _library(tmp_path, "first\r\n\r\n# note\r\nsecond\r\n") == [("line-1", "first"), ("line-4", "second")]


def test_a_byte_order_mark_starting_a_later_line_is_not_part_of_the_prompt(tmp_path):
    # Two UTF-8 files, each written with a byte-order mark, joined with cat.
    text = "\ufefffirst prompt\n\ufeffsecond prompt\n"
    assert _library(tmp_path, text) == [("line-1", "first prompt"), ("line-2", "second prompt")]
    jsonl = '\ufeff{"prompt": "a"}\n\ufeff{"prompt": "b"}\n'
    assert [p.text for p in load_prompt_library(_write(tmp_path / "l.jsonl", jsonl))] == ["a", "b"]


def _write(path, text):
    path.write_bytes(text.encode("utf-8"))
    return path


def test_json_lines_and_text_lines_are_split_alike():
    text = 'x\u2028y\r\n\ufeffz\x0cw\n'
    assert split_lines(text) == ["x\u2028y", "z\x0cw", ""]
    rows = [json.dumps({"prompt": line}, ensure_ascii=False) for line in ("a\u2028b", "c\x85d")]
    assert [value["prompt"] for _, value in iter_jsonl("\n".join(rows), "f.jsonl")] == ["a\u2028b", "c\x85d"]


def test_score_pairs_one_caption_a_line_when_captions_hold_line_separators(tmp_path, tiny_clip_dir):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    captions = _write(tmp_path / "caps.txt", "caption one\ncaption\u2028two\x0cpart\n\ufeffcaption three\n")
    out = tmp_path / "scores.jsonl"
    assert main(["score", str(folder), "--prompts", str(captions), "--model", str(tiny_clip_dir), "--precision", "32",
                 "--quiet", "--output", str(out)]) == 0
    prompts = sorted((r.file.rsplit("/", 1)[-1], r.prompt) for r in read_scores(out).records)
    assert prompts == [("img0.png", "caption one"), ("img1.png", "caption\u2028two\x0cpart"),
                       ("img2.png", "caption three")]


def test_a_byte_order_mark_starting_a_table_row_is_not_part_of_its_first_cell(tmp_path):
    path = _write(tmp_path / "library.tsv", "Prompt\tCategory\n\ufeffa red fox\tanimals\n\ufeffa blue car\tvehicles\n")
    assert [(p.text, p.category) for p in load_prompt_library(path)] == [("a red fox", "animals"), ("a blue car", "vehicles")]
