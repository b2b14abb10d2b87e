"""The offline demo (the README's main job), shortened: clip/mean rises as the model learns."""

from __future__ import annotations

import pytest

from clip_metric.cli import main
from clip_metric.demos.text_to_image import ShapesTextToImage, caption_vocabulary, demo_prompts


@pytest.mark.slow
def test_demo_clip_mean_rises(tmp_path, capsys):
    code = main(["demo", "--output-dir", str(tmp_path), "--epochs", "3", "--steps-per-epoch", "40",
                 "--prompts", "32", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "TensorBoard logs:" in out
    rows = [line.split() for line in out.splitlines() if line.strip() and line.split()[0].isdigit()]
    means = [float(r[1]) for r in rows]
    assert len(means) == 4  # a baseline before training, then one per epoch
    assert means[-1] > means[0] + 0.2, means
    assert list(tmp_path.rglob("events.out.tfevents.*"))
    assert len(list(tmp_path.rglob("clip_scores/step-*.jsonl"))) == 4


def test_demo_model_reads_word_order():
    module = ShapesTextToImage()
    a = module.tokenize(["a red circle on a blue background"])
    b = module.tokenize(["a blue circle on a red background"])
    assert not (a == b).all()
    assert "<unk>" == caption_vocabulary()[0]
    assert module.tokenize(["zebra"]).sum() == 0  # unknown words map to index 0
    assert demo_prompts(5) == demo_prompts(5) and len(set(demo_prompts(50))) > 10


def test_demo_rejects_bad_sizes(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--output-dir", str(tmp_path), "--epochs", "0"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "clip-metric demo" in err and "--epochs: expected a positive integer but got '0'" in err
