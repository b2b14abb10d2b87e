"""CSV and TSV follow the one line rule of split_lines: records end at '\\n', a lone '\\r' stays in
its field; a file whose lines end in '\\r' alone is refused, saying so."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from clip_metric.cli import main
from clip_metric.prompts import load_prompt_library
from clip_metric.records import read_scores
from clip_metric.utilities.readers import read_table


def _write(path, text):
    path.write_bytes(text.encode("utf-8"))
    return path


@pytest.mark.parametrize("name, sep", [("library.tsv", "\t"), ("library.csv", ",")])
def test_a_lone_carriage_return_stays_inside_its_table_field(tmp_path, name, sep):
    path = _write(tmp_path / name, f"Prompt{sep}Category\r\na red\rsquare{sep}c\rd\r\nsecond{sep}x\n")
    assert [(p.text, p.category) for p in load_prompt_library(path)] == [("a red\rsquare", "c\rd"), ("second", "x")]


def test_table_rows_are_numbered_by_newlines_only(tmp_path):
    header, rows = read_table("a,b\n1\r2,3\n\n4,5\r\n", "t.csv", ",")
    assert header == ["a", "b"]
    assert rows == [(2, {"a": "1\r2", "b": "3"}), (4, {"a": "4", "b": "5"})]


def test_a_quoted_csv_field_keeps_its_lone_carriage_return(tmp_path):
    _, rows = read_table('a,b\n"x\ry",z\n', "t.csv", ",")
    assert rows == [(2, {"a": "x\ry", "b": "z"})]


def _images(tmp_path, count=3):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"img-{i}.png")
    return folder


def _score(tmp_path, folder, prompts, model):
    out = tmp_path / "scores.jsonl"
    rc = main(["score", str(folder), "--prompts", str(prompts), "--model", str(model), "--precision", "32",
               "--quiet", "--output", str(out)])
    return rc, out


def test_score_reads_a_caption_table_whose_captions_hold_a_carriage_return(tmp_path, tiny_clip_dir):
    folder = _images(tmp_path)
    captions = _write(tmp_path / "captions.tsv", "file_name\ttext\nimg-0.png\ta cat\nimg-1.png\ta red\rsquare\n"
                      "img-2.png\ta dog\n")
    rc, out = _score(tmp_path, folder, captions, tiny_clip_dir)
    assert rc == 0
    prompts = sorted((r.file.rsplit("/", 1)[-1], r.prompt) for r in read_scores(out).records)
    assert prompts == [("img-0.png", "a cat"), ("img-1.png", "a red\rsquare"), ("img-2.png", "a dog")]


@pytest.mark.parametrize("name", ["captions.txt", "captions.tsv", "captions.csv", "captions.jsonl"])
def test_score_refuses_a_prompts_file_whose_lines_end_in_carriage_returns_alone(tmp_path, tiny_clip_dir, capsys, name):
    folder = _images(tmp_path)
    body = {
        "captions.txt": "a cat\ra dog\ra bird\r",
        "captions.tsv": "file_name\ttext\rimg-0.png\ta\rimg-1.png\tb\rimg-2.png\tc\r",
        "captions.csv": "file_name,text\rimg-0.png,a\rimg-1.png,b\rimg-2.png,c\r",
        "captions.jsonl": '{"file_name": "img-0.png", "text": "a"}\r{"file_name": "img-1.png", "text": "b"}\r',
    }[name]
    rc, out = _score(tmp_path, folder, _write(tmp_path / name, body), tiny_clip_dir)
    assert rc != 0 and not out.exists()
    assert "lines end in '\\r' alone" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["library.txt", "library.tsv", "library.csv", "library.jsonl"])
def test_a_prompt_library_whose_lines_end_in_carriage_returns_alone_is_refused(tmp_path, name):
    body = {
        "library.txt": "a cat\ra dog\r",
        "library.tsv": "Prompt\ra cat\ra dog\r",
        "library.csv": "Prompt\ra cat\ra dog\r",
        "library.jsonl": '{"prompt": "a"}\r{"prompt": "b"}\r',
    }[name]
    with pytest.raises(ValueError, match=r"lines end in '\\r' alone"):
        load_prompt_library(_write(tmp_path / name, body))
