"""The ``clip-metric score`` and ``compare`` commands on files the tests make."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from clip_metric import ClipEncoder
from clip_metric.cli import main
from clip_metric.records import ScoreRecord, read_scores, write_scores


@pytest.fixture()
def image_dir(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, ext in enumerate(["png", "jpg", "webp", "png", "png"]):
        Image.fromarray(rng.integers(0, 256, (40 + i, 48, 3), dtype=np.uint8)).save(folder / f"img{i}.{ext}")
    return folder


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_score_with_sidecar_and_metadata_captions(image_dir, tiny_clip_dir, tmp_path, capsys):
    (image_dir / "img0.txt").write_text("a red circle")
    (image_dir / "img1.txt").write_text("a photo of a dog")
    (image_dir / "metadata.jsonl").write_text(json.dumps({"file_name": "img2.webp", "text": "two cats"}) + "\n")
    (image_dir / "img3.png").write_bytes(b"not an image")
    (image_dir / "img3.txt").write_text("broken")
    out = tmp_path / "scores.csv"
    code = main(["score", str(image_dir), "--model", str(tiny_clip_dir), "--precision", "32", "--quiet",
                 "--output", str(out)])
    captured = capsys.readouterr()
    assert code == 0
    assert "skipped 1 image(s) without a caption" in captured.err and "img4.png" in captured.err
    assert "skipped unreadable image" in captured.err and "img3.png" in captured.err
    assert "clip/count  3" in captured.out and "clip/mean_ci" in captured.out

    rows = _read_csv(out)
    assert [r["prompt"] for r in rows] == ["a red circle", "a photo of a dog", "two cats"]
    encoder = ClipEncoder.from_pretrained(tiny_clip_dir, precision="32")
    images = [Image.open(image_dir / n) for n in ("img0.png", "img1.jpg", "img2.webp")]
    expected = encoder.score(images, [r["prompt"] for r in rows])
    assert np.allclose([float(r["score"]) for r in rows], expected.numpy(), atol=1e-5)
    mean_line = next(line for line in captured.out.splitlines() if line.startswith("clip/mean"))
    assert float(mean_line.split()[-1]) == pytest.approx(float(expected.mean()), abs=1e-4)


def test_score_with_prompts_file_and_jsonl_output(image_dir, tiny_clip_dir, tmp_path, capsys):
    prompts = tmp_path / "captions.json"
    prompts.write_text(json.dumps({f"img{i}.{e}": f"prompt {i}" for i, e in enumerate(["png", "jpg", "webp"])}
                                  | {"gone.png": "no such image"}))
    out = tmp_path / "scores.jsonl"
    code = main(["score", str(image_dir / "img0.png"), str(image_dir / "img1.jpg"), str(image_dir / "img2.webp"),
                 "--prompts", str(prompts), "--model", str(tiny_clip_dir), "--quiet", "--output", str(out)])
    captured = capsys.readouterr()
    assert code == 0
    assert "1 caption(s) name no given image: gone.png" in captured.err
    rows = read_scores(out).records
    assert len(rows) == 3 and all(math.isfinite(r.score) for r in rows)
    assert sorted(r.prompt for r in rows) == ["prompt 0", "prompt 1", "prompt 2"]
    assert all(r.file.endswith(("img0.png", "img1.jpg", "img2.webp")) for r in rows)


def test_score_txt_prompts_must_match_image_count(image_dir, tiny_clip_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("one\ntwo\n")
    assert main(["score", str(image_dir), "--prompts", str(prompts), "--model", str(tiny_clip_dir)]) == 2
    assert "2 prompts but 5 images" in capsys.readouterr().err


@pytest.mark.slow
def test_score_glob_and_two_devices_match(image_dir, tiny_clip_dir, tmp_path, capsys):
    for i in range(5):
        (image_dir / f"img{i}.txt").write_text(f"caption number {i}")
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    args = [str(image_dir / "*.png"), str(image_dir / "img1.jpg"), "--model", str(tiny_clip_dir), "--precision", "32",
            "--quiet", "--accelerator", "cpu"]
    assert main(["score", *args, "--output", str(one)]) == 0
    assert main(["score", *args, "--devices", "2", "--output", str(two)]) == 0
    a, b = _read_csv(one), _read_csv(two)
    assert len(a) == 4 and [r["file"] for r in a] == [r["file"] for r in b]
    assert np.allclose([float(r["score"]) for r in a], [float(r["score"]) for r in b], atol=1e-5)


def test_score_errors(tiny_clip_dir, tmp_path, capsys):
    assert main(["score", str(tmp_path / "missing*.png"), "--model", str(tiny_clip_dir)]) == 2
    assert "No images found" in capsys.readouterr().err
    (tmp_path / "a.png").write_bytes(b"")
    assert main(["score", str(tmp_path / "a.png"), "--model", str(tmp_path / "no-model")]) == 2
    assert "no image has a caption" in capsys.readouterr().err
    (tmp_path / "a.txt").write_text("a cat")
    assert main(["score", str(tmp_path / "a.png"), "--model", str(tmp_path / "no-model")]) == 2
    assert "Could not load the CLIP model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["score", str(tmp_path), "--batch-size", "0"])


def _write_run(run_dir, means_by_step, n=40, noise_seed=0, version="version_0"):
    base = np.random.default_rng(0).normal(0.3, 0.03, n)  # the same prompts are equally hard in every run
    rng = np.random.default_rng(noise_seed)
    folder = run_dir / version / "clip_scores"
    for step, offset in means_by_step.items():
        scores = base + offset + rng.normal(0, 0.01, n)
        rows = [ScoreRecord(f"p{i}", f"prompt {i}", float(s), seed=i) for i, s in enumerate(scores)]
        write_scores(folder / f"step-{step:08d}.jsonl", rows, step=step)


def test_compare_paired_difference_and_plot(tmp_path, capsys):
    _write_run(tmp_path / "base", {10: 0.0, 20: 0.01})
    _write_run(tmp_path / "better", {10: 0.0, 20: 0.03}, noise_seed=1)
    _write_run(tmp_path / "same", {10: 0.0, 20: 0.01}, noise_seed=2)
    plot = tmp_path / "plot.png"
    code = main(["compare", str(tmp_path / "base"), str(tmp_path / "better"), str(tmp_path / "same"),
                 "--plot", str(plot)])
    out = capsys.readouterr().out
    assert code == 0
    better_line = next(line for line in out.splitlines() if line.strip().startswith("better (step 20) - base (step 20)"))
    assert "base (step 20): +0.01" in better_line and better_line.endswith("significant")
    assert "over 40 shared prompts (means 0.3" in better_line and "not" not in better_line
    same_line = next(line for line in out.splitlines() if line.strip().startswith("same (step 20) - base"))
    assert "not significant" in same_line
    assert plot.stat().st_size > 1000


def test_compare_lists_each_version_folder_as_its_own_run(tmp_path, capsys):
    _write_run(tmp_path / "base", {10: 0.0})
    _write_run(tmp_path / "tuned", {10: 0.02}, noise_seed=1, version="version_0")
    _write_run(tmp_path / "tuned", {10: 0.04}, noise_seed=2, version="version_1")
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "tuned"), str(tmp_path / "base")]) == 0
    captured = capsys.readouterr()
    names = {line.split()[0] for line in captured.out.splitlines()[2:] if line and not line.startswith(" ")}
    assert {"base", "tuned/version_0", "tuned/version_1"} <= names
    assert "tuned/version_1 (step 10) - base (step 10): +0.04" in captured.out
    assert "given twice" in captured.err


def test_compare_refuses_an_interval_over_too_few_prompts(tmp_path, capsys):
    _write_run(tmp_path / "base", {10: 0.0}, n=3)
    _write_run(tmp_path / "other", {10: 0.1}, n=3, noise_seed=1)
    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "other")]) == 0
    out = capsys.readouterr().out
    assert "not comparable" in out and "share only 3" in out and "significant" not in out


def test_compare_errors(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "missing")]) == 2
    assert "Run directory not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(tmp_path / "empty")]) == 2
    assert "No per-prompt score files" in capsys.readouterr().err


def test_compare_falls_back_to_tensorboard_scalars(tmp_path, capsys):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "tb_only" / "version_0"))
    for step, mean in [(5, 0.21), (10, 0.27), (15, 0.25)]:
        for key, value in [("mean", mean), ("min", mean - 0.05), ("max", mean + 0.05), ("std", 0.02), ("count", 64)]:
            writer.add_scalar(f"clip/{key}", value, step)
    writer.close()
    _write_run(tmp_path / "scored", {10: 0.0})
    plot = tmp_path / "plot.png"
    assert main(["compare", str(tmp_path / "scored"), str(tmp_path / "tb_only"), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("tb_only")]
    assert rows[0][:3] == ["tb_only", "last", "15"] and float(rows[0][3]) == pytest.approx(0.25, abs=1e-4)
    assert rows[1][:3] == ["tb_only", "best", "10"]
    assert "no per-prompt scores: tb_only" in out
    assert plot.stat().st_size > 1000


def test_plot_is_drawn_with_one_evaluation_per_run_and_identical_runs(tmp_path, capsys):
    for name in ("a", "b"):
        _write_run(tmp_path / name, {10: 0.0})  # the same scores: one line on top of the other
    plot = tmp_path / "plot.png"
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--plot", str(plot)]) == 0
    assert plot.stat().st_size > 1000
