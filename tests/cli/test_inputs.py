"""What ``clip-metric`` does with awkward inputs: links, special files, bad outputs, bad options."""

from __future__ import annotations

import json
import os

import pytest

from clip_metric import __version__
from _helpers.data import captioned_folder, save_random_image
from clip_metric.cli import main
from clip_metric.records import read_scores


_image = save_random_image


@pytest.fixture()
def captioned(tmp_path):
    return captioned_folder(tmp_path)


def _score(folder, model, *extra):
    return main(["score", str(folder), "--model", str(model), "--precision", "32", "--quiet", *extra])


def test_version_and_defaults_in_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and __version__ in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    help_text = capsys.readouterr().out
    assert "--batch-size" in help_text and "(default: 32)" in help_text


@pytest.mark.parametrize("option", ["--devices", "--batch-size"])
def test_non_positive_counts_show_the_sub_command_usage(option, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["score", str(tmp_path), option, "0"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "clip-metric score" in err and f"{option}: expected a positive integer but got '0'" in err


def test_the_removed_bootstrap_option_is_refused_by_name(tmp_path, capsys):
    # Intervals are t intervals, computed: the option is refused with why, not as an unknown word.
    for extra in (["--bootstrap", "1000"], ["--bootstrap"], ["--bootstrap=0"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["compare", str(tmp_path), *extra])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2
        assert "clip-metric compare" in err and "--bootstrap was removed: compare reports the t interval" in err


def test_output_naming_an_input_image_is_refused_before_scoring(captioned, tiny_clip_dir, capsys):
    target = captioned / "img1.png"
    before = target.read_bytes()
    assert _score(captioned, tiny_clip_dir, "--output", str(target)) == 2
    assert "is one of the input images" in capsys.readouterr().err
    assert target.read_bytes() == before


def test_output_that_is_a_directory_is_refused_before_scoring(captioned, tiny_clip_dir, tmp_path, capsys):
    assert _score(captioned, tiny_clip_dir, "--output", str(tmp_path)) == 2
    captured = capsys.readouterr()
    assert "is a directory" in captured.err and "clip/mean" not in captured.out


def test_output_that_cannot_be_written_is_refused_before_scoring(captioned, tiny_clip_dir, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where the output's folder would have to be
    assert _score(captioned, tiny_clip_dir, "--output", str(blocker / "scores.csv")) == 2
    captured = capsys.readouterr()
    assert "cannot be written" in captured.err and "clip/mean" not in captured.out


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_named_pipe_with_an_image_name_is_skipped_not_opened(captioned, tiny_clip_dir, capsys):
    os.mkfifo(captioned / "pipe.png")
    (captioned / "pipe.txt").write_text("a pipe")
    assert _score(captioned, tiny_clip_dir) == 0  # would block forever if the pipe were opened
    captured = capsys.readouterr()
    assert "pipe.png: not a regular file" in captured.err and "clip/count  3" in captured.out


def test_symbolic_links_are_images_of_their_own_with_the_caption_beside_them(captioned, tiny_clip_dir, tmp_path):
    links = tmp_path / "links"
    links.mkdir()
    for name in ("a", "b"):
        (links / f"{name}.png").symlink_to(captioned / "img0.png")
        (links / f"{name}.txt").write_text(f"link {name}")
    (links / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    (links / "loop.png").symlink_to(links / "loop.png")
    out = tmp_path / "scores.jsonl"
    assert _score(links, tiny_clip_dir, "--output", str(out)) == 0
    rows = read_scores(out).records
    assert [(os.path.basename(r.file), r.prompt) for r in rows] == [("a.png", "link a"), ("b.png", "link b")]


def test_dangling_and_looping_links_are_named(captioned, tiny_clip_dir, tmp_path, capsys):
    (captioned / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    (captioned / "loop.png").symlink_to(captioned / "loop.png")
    assert _score(captioned, tiny_clip_dir) == 0
    err = capsys.readouterr().err
    assert "dangling.png: dangling symbolic link" in err and "loop.png: cannot be read" in err


def test_caption_file_with_a_byte_order_mark(captioned, tiny_clip_dir, tmp_path):
    (captioned / "img0.txt").write_bytes("\ufeffcaption 0".encode("utf-8"))
    out = tmp_path / "scores.jsonl"
    assert _score(captioned, tiny_clip_dir, "--output", str(out)) == 0
    assert read_scores(out).records[0].prompt == "caption 0"


def test_unreadable_caption_skips_its_image_only(captioned, tiny_clip_dir, capsys):
    (captioned / "img1.txt").write_bytes(b"caf\xe9")
    assert _score(captioned, tiny_clip_dir) == 0
    captured = capsys.readouterr()
    assert "img1.png: its caption cannot be read" in captured.err and "clip/count  2" in captured.out


def test_a_file_captioned_twice_is_an_error(captioned, tiny_clip_dir, tmp_path, capsys):
    prompts = tmp_path / "captions.jsonl"
    prompts.write_text("".join(json.dumps({"file_name": "img0.png", "text": t}) + "\n" for t in ("first", "second")))
    assert _score(captioned, tiny_clip_dir, "--prompts", str(prompts)) == 2
    assert "line 2: 'img0.png' is captioned twice" in capsys.readouterr().err


def test_empty_folder_says_no_images(tmp_path, tiny_clip_dir, capsys):
    (tmp_path / "empty").mkdir()
    assert _score(tmp_path / "empty", tiny_clip_dir) == 2
    assert "error: no images found" in capsys.readouterr().err


def test_one_image_has_no_interval(captioned, tiny_clip_dir, capsys):
    assert _score(captioned / "img0.png", tiny_clip_dir) == 0
    assert "clip/mean_ci n/a (fewer than 2 images)" in capsys.readouterr().out


def test_cuda_without_a_gpu_is_a_usage_error(captioned, tiny_clip_dir, capsys):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert _score(captioned, tiny_clip_dir, "--accelerator", "cuda") == 2
    assert "error: --accelerator cuda: no CUDA device" in capsys.readouterr().err


def test_missing_model_directory_is_named_as_missing(captioned, tmp_path, capsys):
    assert _score(captioned, tmp_path / "no-model") == 2
    assert "no-model': no such directory" in capsys.readouterr().err


@pytest.mark.parametrize("workers", ["0", "2"])
def test_decoding_workers_give_the_same_scores_and_report_bad_files(captioned, tiny_clip_dir, tmp_path, capsys, workers):
    (captioned / "img1.png").write_bytes(b"not a png")
    out = tmp_path / f"scores-{workers}.jsonl"
    assert _score(captioned, tiny_clip_dir, "--workers", workers, "--batch-size", "1", "--output", str(out)) == 0
    err = capsys.readouterr().err
    assert "skipped unreadable image" in err and "img1.png" in err
    rows = read_scores(out).records
    assert [r.prompt for r in rows] == ["caption 0", "caption 2"]
    other = tmp_path / "scores-other.jsonl"
    assert _score(captioned, tiny_clip_dir, "--workers", "1" if workers == "0" else "0", "--batch-size", "1",
                  "--output", str(other)) == 0
    # Decoding workers leave the scoring fewer threads: float32 sums in another order.
    assert [r.score for r in read_scores(other).records] == pytest.approx([r.score for r in rows], abs=1e-6)


def test_workers_must_be_a_non_negative_int(captioned, tiny_clip_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _score(captioned, tiny_clip_dir, "--workers", "-1")
    assert exit_info.value.code == 2 and "--workers" in capsys.readouterr().err


def test_a_folder_of_unreadable_images_is_one_clear_error(tmp_path, tiny_clip_dir, capsys):
    import warnings

    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "corrupt.png").write_bytes(b"not a png")
    (folder / "corrupt.txt").write_text("a caption")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _score(folder, tiny_clip_dir) == 2
    assert not [w for w in caught if "update" in str(w.message) or "no samples" in str(w.message)]
    err = capsys.readouterr().err
    assert "skipped unreadable image" in err and "corrupt.png" in err and "error: no image could be scored" in err
