"""What ``clip-metric score`` says about its inputs and its result: names, counts, the interval."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from _helpers.data import captioned_folder, save_random_image
from clip_metric.cli import main

ROOT = Path(__file__).resolve().parents[2]


_image = save_random_image


@pytest.fixture()
def captioned(tmp_path):
    return captioned_folder(tmp_path)


def _score(sources, model, *extra):
    sources = [sources] if not isinstance(sources, list) else sources
    return main(["score", *map(str, sources), "--model", str(model), "--precision", "32", "--quiet", *extra])


def _run_python(code, cwd, timeout=120):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.environ.get("PYTHONPATH", ""), str(ROOT)])}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd)


def test_file_names_with_control_characters_are_printed_escaped(captioned, tiny_clip_dir, capsys):
    title, clear = "\x1b]0;owned\x07", "\x1b[2J"
    (captioned / f"bad{title}.png").write_bytes(b"not a png")  # unreadable, so named on stderr
    (captioned / f"bad{title}.txt").write_text("a caption")
    (captioned / f"no-caption{clear}.png").write_bytes(b"not a png either")  # named as without a caption
    assert _score(captioned, tiny_clip_dir) == 0
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err
    assert "bad\\x1b]0;owned\\x07.png" in err and "no-caption\\x1b[2J.png" in err


def test_an_error_naming_a_file_with_control_characters_is_escaped(tmp_path, tiny_clip_dir, capsys):
    odd = tmp_path / "x\x1b[2J.gif"
    odd.write_bytes(b"GIF89a")
    assert _score(odd, tiny_clip_dir) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "\x1b" not in err and "x\\x1b[2J.gif" in err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
@pytest.mark.slow  # a fresh interpreter loads torch and the model
def test_an_image_replaced_by_a_named_pipe_after_listing_is_skipped_and_named(captioned, tiny_clip_dir):
    # The fault: between listing and decoding, one image becomes a named pipe no one writes to.
    result = _run_python(f"""
        import os, sys
        from clip_metric.cli import captions, main

        listed = captions.find_images

        def list_then_swap(*args):
            images = listed(*args)
            os.unlink({str(captioned / "img1.png")!r})
            os.mkfifo({str(captioned / "img1.png")!r})
            return images

        captions.find_images = list_then_swap
        sys.exit(main(["score", {str(captioned)!r}, "--model", {str(tiny_clip_dir)!r}, "--precision", "32",
                       "--quiet", "--workers", "1"]))
    """, captioned.parent)
    assert result.returncode == 0, result.stderr
    assert "img1.png" in result.stderr and "not a regular file" in result.stderr
    assert "clip/count  2" in result.stdout


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity masks")
@pytest.mark.slow  # a fresh interpreter loads torch and the model
def test_default_workers_stay_within_the_usable_cpus_and_draw_no_dataloader_warning(captioned, tiny_clip_dir):
    result = _run_python(f"""
        import os, sys
        os.sched_setaffinity(0, {{min(os.sched_getaffinity(0))}})  # one usable CPU, however many the machine has
        from clip_metric.cli import main, score

        assert score.DEFAULT_WORKERS == 1, score.DEFAULT_WORKERS
        sys.exit(main(["score", {str(captioned)!r}, "--model", {str(tiny_clip_dir)!r}, "--precision", "32", "--quiet"]))
    """, captioned.parent)
    assert result.returncode == 0, result.stderr
    assert "worker" not in result.stderr.lower(), result.stderr
    assert "clip/count  3" in result.stdout


def test_workers_default_is_documented_in_help(capsys):
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    assert "usable CPUs" in " ".join(capsys.readouterr().out.split())


def _library_images(folder, stems):
    folder.mkdir()
    for seed, stem in enumerate(stems):
        _image(folder / f"{stem}.png", seed=seed)


def _signature(folder, model, capsys):
    assert _score(folder, model, "--prompts", "parti", "--json") == 0
    return json.loads(capsys.readouterr().out)


def test_signature_counts_prompts_once_and_states_mixed_images_per_prompt(tmp_path, tiny_clip_dir, capsys):
    _library_images(tmp_path / "mixed", ["parti-0001", "parti-0001-2", "parti-0002", "parti-0003"])
    report = _signature(tmp_path / "mixed", tiny_clip_dir, capsys)
    assert report["clip/count"] == 4
    assert ",n3," in report["signature"]["prompts"] and report["signature"]["images_per_prompt"] == "1-2"
    assert report["signature_string"].endswith("|images/prompt:1-2")


def test_signature_with_two_images_of_every_prompt_says_two(tmp_path, tiny_clip_dir, capsys):
    _library_images(tmp_path / "two", ["parti-0001", "parti-0001-2", "parti-0002", "parti-0002-2"])
    two = _signature(tmp_path / "two", tiny_clip_dir, capsys)
    _library_images(tmp_path / "one", ["parti-0001", "parti-0002"])
    one = _signature(tmp_path / "one", tiny_clip_dir, capsys)
    assert two["signature"]["images_per_prompt"] == 2 and one["signature"]["images_per_prompt"] == 1
    assert two["signature"]["prompts"] == one["signature"]["prompts"]  # the same two prompts
    from clip_metric.signature import ScoreSignature

    assert ScoreSignature.from_dict(two["signature"]).differences(ScoreSignature.from_dict(one["signature"])) == [
        "images_per_prompt: 2 vs 1"]


def test_score_prints_one_interval_the_t_interval_of_clip_mean_ci(captioned, tiny_clip_dir, capsys):
    assert _score(captioned, tiny_clip_dir) == 0
    out = capsys.readouterr().out
    assert "clip/mean_ci" in out and "CI" not in out and "interval" not in out
    assert _score(captioned, tiny_clip_dir, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    mean, half = report["clip/mean"], report["clip/mean_ci"]
    assert report["ci95"] == [mean - half, mean + half]


def test_csv_captions_without_a_file_name_column_blame_the_header(captioned, tiny_clip_dir, tmp_path, capsys):
    prompts = tmp_path / "captions.csv"
    prompts.write_text("image,text\nimg0.png,caption 0\n")
    assert _score(captioned, tiny_clip_dir, "--prompts", str(prompts)) == 2
    err = capsys.readouterr().err
    assert "header" in err and "'file_name'" in err and "['image', 'text']" in err and "line 2" not in err
    prompts.write_text("file_name\tcaptions\nimg0.png\tcaption 0\n")
    prompts = prompts.rename(tmp_path / "captions.tsv")
    assert _score(captioned, tiny_clip_dir, "--prompts", str(prompts)) == 2
    err = capsys.readouterr().err
    assert "header" in err and "'text' or 'prompt' or 'caption'" in err and "['file_name', 'captions']" in err


def test_a_folder_whose_images_sit_in_subfolders_says_they_are_not_searched(tmp_path, tiny_clip_dir, capsys):
    root = tmp_path / "renders"
    for sub in ("a", "b"):
        (root / sub).mkdir(parents=True)
        _image(root / sub / "x.png")
        (root / sub / "x.txt").write_text("a caption")
    assert _score(root, tiny_clip_dir) == 2
    err = capsys.readouterr().err
    assert "2 image(s) in subfolders" in err and "not searched" in err and "error: no images found" in err
    assert _score([root / "a", root / "b"], tiny_clip_dir) == 0  # the subfolders themselves are searched


def test_images_left_in_subfolders_beside_scored_ones_are_counted(captioned, tiny_clip_dir, capsys):
    (captioned / "more").mkdir()
    _image(captioned / "more" / "y.png")
    assert _score(captioned, tiny_clip_dir) == 0
    captured = capsys.readouterr()
    assert "1 image(s) in subfolders" in captured.err and "clip/count  3" in captured.out
