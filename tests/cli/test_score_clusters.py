"""``clip-metric score`` with several images per prompt: one prompt, one sample of the mean."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from clip_metric.cli import main
from clip_metric.records import read_scores

PROMPTS = 12


def _image(path, seed):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)


def _score(folder, capsys, *extra):
    # The embedded demo CLIP (no --model): its loading message goes to stderr.
    assert main(["score", str(folder), "--precision", "32", "--quiet", "--workers", "0", *extra]) == 0
    return capsys.readouterr().out


@pytest.fixture()
def library_folders(tmp_path):
    """``one/``: one image per Parti prompt; ``four/``: each of them copied under ``-2``, ``-3``, ``-4``."""
    one, four = tmp_path / "one", tmp_path / "four"
    one.mkdir()
    four.mkdir()
    for k in range(1, PROMPTS + 1):
        _image(one / f"parti-{k:04d}.png", seed=k)
        for name in (f"parti-{k:04d}", f"parti-{k:04d}-2", f"parti-{k:04d}-3", f"parti-{k:04d}-4"):
            shutil.copy(one / f"parti-{k:04d}.png", four / f"{name}.png")
    return one, four


def test_four_identical_images_per_prompt_give_the_interval_of_one_and_the_signature_says_four(library_folders, capsys):
    one, four = (json.loads(_score(folder, capsys, "--prompts", "parti", "--json")) for folder in library_folders)
    assert four["clip/mean_ci"] == pytest.approx(one["clip/mean_ci"], rel=0.10)
    assert four["clip/mean"] == pytest.approx(one["clip/mean"], abs=1e-6)
    assert four["ci95"] == pytest.approx(one["ci95"], abs=1e-6)
    assert four["signature"]["images_per_prompt"] == 4 and four["signature_string"].endswith("|images/prompt:4")
    assert (four["clip/count"], four["clip/prompts"]) == (4 * PROMPTS, PROMPTS)
    assert (one["clip/count"], one["clip/prompts"]) == (PROMPTS, PROMPTS)


def test_images_with_the_same_caption_text_are_one_prompt(tmp_path, capsys):
    one, four = tmp_path / "one", tmp_path / "four"
    one.mkdir()
    four.mkdir()
    for k in range(PROMPTS):
        caption = f"a red circle number {k}"
        _image(one / f"img{k}.png", seed=k)
        (one / f"img{k}.txt").write_text(caption)
        for copy in range(4):
            shutil.copy(one / f"img{k}.png", four / f"img{k}-copy{copy}.png")
            (four / f"img{k}-copy{copy}.txt").write_text(caption)
    single, several = (json.loads(_score(folder, capsys, "--json")) for folder in (one, four))
    assert several["clip/mean_ci"] == pytest.approx(single["clip/mean_ci"], rel=0.10)
    assert several["signature"]["images_per_prompt"] == 4 and several["clip/prompts"] == PROMPTS


def test_text_summary_and_score_file_header_give_the_prompt_level_interval(library_folders, tmp_path, capsys):
    one, four = library_folders
    reference = json.loads(_score(one, capsys, "--prompts", "parti", "--json"))
    out = _score(four, capsys, "--prompts", "parti", "--output", str(tmp_path / "scores.jsonl"))
    assert f"clip/mean_ci {reference['clip/mean_ci']:.4f}" in out
    assert f"clip/count  {4 * PROMPTS}" in out and f"clip/prompts {PROMPTS}" in out
    written = read_scores(tmp_path / "scores.jsonl")
    assert len(written.records) == 4 * PROMPTS  # one row per image
    summary = written.header["summary"]
    assert summary["clip/mean_ci"] == pytest.approx(reference["clip/mean_ci"], rel=1e-9)
    assert (summary["clip/count"], summary["clip/prompts"]) == (4 * PROMPTS, PROMPTS)


def test_interval_of_images_of_one_prompt_is_not_available(tmp_path, capsys):
    for name in ("parti-0001", "parti-0001-2", "parti-0001-3"):
        _image(tmp_path / f"{name}.png", seed=len(name))
    out = _score(tmp_path, capsys, "--prompts", "parti")
    assert "clip/mean_ci n/a (fewer than 2 prompts)" in out and "clip/prompts 1" in out
