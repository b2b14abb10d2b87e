"""``clip-metric score`` prints and writes the score signature; ``compare`` checks it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from clip_metric.cli import main
from clip_metric.records import ScoreRecord, read_scores, write_scores


@pytest.fixture()
def captioned(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(f"caption {i}")
    return folder


def _json_score(folder, model, *extra):
    return main(["score", str(folder), "--model", str(model), "--quiet", "--json", *extra])


def test_score_prints_the_signature_and_writes_it_into_the_file(captioned, tiny_clip_dir, tmp_path, capsys):
    out = tmp_path / "scores.jsonl"
    assert main(["score", str(captioned), "--model", str(tiny_clip_dir), "--precision", "32", "--quiet",
                 "--output", str(out)]) == 0
    printed = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("signature: "))
    assert "|precision:32|scale:cosine|prompts:captions#" in printed and ",n4,all|" in printed
    assert read_scores(out).header["signature"]["precision"] == "32"


def test_score_json_is_one_object_with_statistics_and_signature(captioned, tiny_clip_dir, capsys):
    assert _json_score(captioned, tiny_clip_dir, "--precision", "32") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["clip/count"] == 4 and len(report["ci95"]) == 2
    assert report["signature"]["scale"] == "cosine" and report["signature_string"].startswith("clip-metric ")


@pytest.mark.slow
def test_signature_does_not_depend_on_batch_size_or_world_size(captioned, tiny_clip_dir, capsys):
    signatures, means = [], []
    for extra in (["--batch-size", "1"], ["--batch-size", "3", "--devices", "2", "--accelerator", "cpu"]):
        assert _json_score(captioned, tiny_clip_dir, "--precision", "32", *extra) == 0
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        signatures.append(report["signature_string"])
        means.append(report["clip/mean"])
    assert signatures[0] == signatures[1]
    assert means[0] == pytest.approx(means[1], abs=1e-6)


def _run(folder, precision, gain=0.0):
    signature = {"version": "0.1.0", "model": "local:abc", "image": "short32,bicubic+aa,crop32x32",
                 "precision": precision, "scale": "cosine", "prompts": "parti#00,n20,all", "seed": "sha256(text)",
                 "images_per_prompt": 1}
    rows = [ScoreRecord(f"p{i}", f"prompt {i}", 0.3 + gain + 0.001 * i, seed=i) for i in range(20)]
    write_scores(folder / "clip_scores" / "step-00000010.jsonl", rows, step=10,
                 header={"scale": "cosine", "signature": signature})


def test_compare_refuses_runs_scored_differently_naming_the_fields(tmp_path, capsys):
    _run(tmp_path / "a", "32")
    _run(tmp_path / "b", "bf16-mixed", gain=0.01)
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "error: b and a were scored differently: precision: bf16-mixed vs 32" in err
    assert "--allow-different-signatures" in err


def test_compare_can_be_told_to_go_ahead_and_warns(tmp_path, capsys):
    _run(tmp_path / "a", "32")
    _run(tmp_path / "b", "bf16-mixed", gain=0.01)
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--allow-different-signatures", "--json"]) == 0
    captured = capsys.readouterr()
    assert "warning: b vs a signature differs: precision: bf16-mixed vs 32" in captured.err
    report = json.loads(captured.out)
    (pair,) = report["pairs"]
    assert pair["run"] == "b" and pair["shared"] == 20 and pair["difference"] == pytest.approx(0.01)
    assert report["runs"]["a"]["last"]["step"] == 10


def test_score_against_a_bundled_library_by_prompt_id(tmp_path, tiny_clip_dir, capsys):
    from clip_metric.prompts import builtin_prompts

    folder = tmp_path / "parti"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("parti-0001", "parti-0001-2", "parti-0002", "unrelated"):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    out = tmp_path / "scores.jsonl"
    assert main(["score", str(folder), "--prompts", "parti", "--model", str(tiny_clip_dir), "--quiet",
                 "--output", str(out)]) == 0
    captured = capsys.readouterr()
    texts = {p.id: p.text for p in builtin_prompts("parti")}
    rows = read_scores(out).records
    assert sorted((r.file.rsplit("/", 1)[-1], r.prompt) for r in rows) == [
        ("parti-0001-2.png", texts["parti-0001"]), ("parti-0001.png", texts["parti-0001"]),
        ("parti-0002.png", texts["parti-0002"]),
    ]
    assert "unrelated.png" in captured.err and "|prompts:parti#" in captured.out


def test_score_files_of_two_render_folders_pair_in_compare(tmp_path, tiny_clip_dir, capsys):
    rng = np.random.default_rng(0)
    for run in ("before", "after"):
        folder = tmp_path / run / "images"
        folder.mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
            (folder / f"{i:02d}.txt").write_text(f"caption {i}")
        assert main(["score", str(folder), "--model", str(tiny_clip_dir), "--precision", "32", "--quiet",
                     "--output", str(tmp_path / run / "scores" / "step-00000000.jsonl")]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "before"), str(tmp_path / "after")]) == 0
    assert "over 10 shared prompts" in capsys.readouterr().out
