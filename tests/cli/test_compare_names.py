"""``clip-metric compare`` prints run names and paths the user chose: never their control characters."""

from __future__ import annotations

import numpy as np
import pytest

from clip_metric.cli import main
from clip_metric.records import ScoreRecord, write_scores

HOSTILE = ["r\x1b]0;T\x07", "b\u202eAB\r", "c\x1b[2J"]


def _save(path, mean):
    rng = np.random.default_rng(0)
    rows = [ScoreRecord(f"p{i}", f"prompt {i}", float(mean + rng.normal(0, 0.01)), seed=i) for i in range(40)]
    write_scores(path, rows, step=1, header={"scale": "cosine"})


def test_run_names_and_the_plot_path_are_escaped_on_stdout(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    runs = []
    for k, name in enumerate(HOSTILE[:2]):
        _save(tmp_path / name / "step-00000001.jsonl", 0.3 + 0.01 * k)
        runs.append(str(tmp_path / name))
    plot = tmp_path / f"p{HOSTILE[2]}.png"
    assert main(["compare", *runs, "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "paired difference" in out and "plot: " in out
    for character in ("\x1b", "\x07", "\r", "\u202e"):
        assert character not in out
    assert "\\x1b]0;T\\x07" in out and "\\u202e" in out and "\\x1b[2J" in out
