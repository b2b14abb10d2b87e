"""The offline demo (the README's main job), shortened: clip/mean rises as the model learns."""

from __future__ import annotations

import warnings

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


def test_a_short_demo_epoch_draws_no_logging_interval_warning(tmp_path, capsys):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["demo", "--output-dir", str(tmp_path), "--epochs", "1", "--steps-per-epoch", "3",
                     "--prompts", "4", "--quiet"])
    assert code == 0
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "log_every_n_steps" in m], messages
    # One step number per evaluation, the trainer's: the baseline before training, then the epoch's end.
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.split()[:1] and line.split()[0].isdigit()]
    assert [int(r[0]) for r in rows] == [0, 3]
