"""A bundled library's name always means the bundled library, whatever the working directory holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from clip_metric.cli import main
from clip_metric.prompts import builtin_prompts, bundled_library_name, load_prompt_library
from clip_metric.records import read_scores


def test_a_bundled_name_is_the_library_even_beside_a_file_of_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("parti").write_text("a prompt of the local file\n")
    Path("default").mkdir()
    assert [p.id for p in load_prompt_library("parti")] == [p.id for p in builtin_prompts("parti")]
    assert len(load_prompt_library("default")) == len(builtin_prompts())
    assert bundled_library_name("./parti") is None and bundled_library_name(Path("parti")) is None


def test_score_with_a_bundled_library_in_a_folder_of_its_name(tmp_path, monkeypatch, tiny_clip_dir):
    monkeypatch.chdir(tmp_path)
    folder = Path("parti")
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("parti-0001", "parti-0002"):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    assert main(["score", "parti", "--prompts", "parti", "--model", str(tiny_clip_dir), "--precision", "32",
                 "--quiet", "--output", "scores.jsonl"]) == 0
    texts = {p.id: p.text for p in builtin_prompts("parti")}
    rows = sorted((r.file.rsplit("/", 1)[-1], r.prompt) for r in read_scores(tmp_path / "scores.jsonl").records)
    assert rows == [("parti-0001.png", texts["parti-0001"]), ("parti-0002.png", texts["parti-0002"])]
