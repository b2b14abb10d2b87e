"""``clip-metric eval`` prints user paths escaped: a name's control characters never reach the terminal."""

from __future__ import annotations

import pytest

from clip_metric.cli import main
from clip_metric.cli._names import shown
from _helpers.diffusion import build_tiny_pipeline

pytest.importorskip("diffusers")


def test_pipeline_and_output_paths_with_control_characters_are_printed_escaped(tmp_path, capsys):
    pipeline = tmp_path / "pi\x1b]0;T\x07pe"
    build_tiny_pipeline(seed=0).save_pretrained(pipeline)
    out = tmp_path / "out\x1b[2J\u202e"
    capsys.readouterr()
    code = main(["eval", str(pipeline), "--output-dir", str(out), "--max-prompts", "2", "--num-inference-steps", "1",
                 "--accelerator", "cpu", "--precision", "32", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    for raw in ("\x1b", "\x07", "\u202e"):
        assert raw not in captured.out, captured.out
    assert f"{shown(pipeline)} (step 0):" in captured.out
    assert f"compare them: clip-metric compare {shown(out)}" in captured.out
