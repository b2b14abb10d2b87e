"""``clip-metric compare`` given a file that is not a score file: named as such, not parsed as one."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clip_metric.cli import main
from clip_metric.records import ScoreRecord, write_scores


@pytest.mark.parametrize(("name", "text"), [
    ("summary.json", json.dumps({"clip/mean": 0.3, "steps": 2}) + "\n"),
    ("captions.tsv", "file_name\ttext\nimg-0.png\ta red square\n"),
    ("notes.txt", "a run\n"),
])
def test_a_file_of_another_kind_is_refused_as_not_a_score_file(tmp_path, capsys, name, text):
    rows = [ScoreRecord(f"p{i}", f"prompt {i}", 0.3 + 0.001 * i, seed=i) for i in range(40)]
    score_file = write_scores(tmp_path / "a" / "step-00000001.jsonl", rows, step=1, header={"scale": "cosine"})
    other = tmp_path / "b" / name
    other.parent.mkdir()
    other.write_text(text)
    assert main(["compare", str(score_file), str(other)]) != 0
    err = capsys.readouterr().err
    assert "not a score file" in err and "score files are .jsonl or .csv" in err and "give its folder" in err
    assert "invalid JSON" not in err
