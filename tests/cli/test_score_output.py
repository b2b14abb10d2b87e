"""Where ``clip-metric score --output`` may write: checked before scoring, inputs and special files kept."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat

import numpy as np
import pytest
from PIL import Image

from clip_metric.cli import main
from clip_metric.records import read_scores


@pytest.fixture()
def captioned(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"scene-{i}.png")
        (folder / f"scene-{i}.txt").write_text(f"caption {i}")
    return folder


def _score(sources, model, *extra):
    sources = [sources] if not isinstance(sources, list) else sources
    return main(["score", *map(str, sources), "--model", str(model), "--precision", "32", "--quiet", *extra])


def _refused_before_scoring(capsys, *words):
    captured = capsys.readouterr()
    assert "clip/mean" not in captured.out, captured.out
    assert "error: --output" in captured.err
    for word in words:
        assert word in captured.err, captured.err
    return captured.err


def _device_node(path, minor: int):
    """A character device node like /dev/null (minor 3) or /dev/full (minor 7), under the test's folder.

    The real nodes are never the target: a regression would replace them for the whole machine.
    """
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, minor))
    except (PermissionError, AttributeError, OSError) as err:
        pytest.skip(f"cannot create a device node here ({err})")
    return path


@pytest.mark.parametrize("minor", [3, 7], ids=["null", "full"])
def test_output_to_a_device_is_refused_before_scoring_and_the_device_kept(minor, captioned, tiny_clip_dir, tmp_path,
                                                                          capsys):
    device = _device_node(tmp_path / "device", minor)
    assert _score(captioned, tiny_clip_dir, "--output", str(device)) == 2
    _refused_before_scoring(capsys, "character device", "not a regular file")
    assert stat.S_ISCHR(os.stat(device).st_mode)


def test_output_through_a_link_to_a_device_is_refused(captioned, tiny_clip_dir, tmp_path, capsys):
    device = _device_node(tmp_path / "null", 3)
    link = tmp_path / "scores.jsonl"
    link.symlink_to(device)
    assert _score(captioned, tiny_clip_dir, "--output", str(link)) == 2
    _refused_before_scoring(capsys, "character device")
    assert link.is_symlink() and stat.S_ISCHR(os.stat(device).st_mode)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_output_to_a_named_pipe_is_refused_and_the_pipe_kept(captioned, tiny_clip_dir, tmp_path, capsys):
    pipe = tmp_path / "stream.csv"
    os.mkfifo(pipe)
    assert _score(captioned, tiny_clip_dir, "--output", str(pipe)) == 2
    _refused_before_scoring(capsys, "named pipe", "not a regular file")
    assert stat.S_ISFIFO(os.lstat(pipe).st_mode)


def test_output_to_a_dangling_link_is_refused(captioned, tiny_clip_dir, tmp_path, capsys):
    link = tmp_path / "scores.jsonl"
    link.symlink_to(tmp_path / "nowhere" / "scores.jsonl")
    assert _score(captioned, tiny_clip_dir, "--output", str(link)) == 2
    _refused_before_scoring(capsys, "dangling symbolic link")


def test_output_naming_a_caption_file_beside_an_image_is_refused(captioned, tiny_clip_dir, capsys):
    caption = captioned / "scene-0.txt"
    assert _score(captioned, tiny_clip_dir, "--output", str(caption)) == 2
    _refused_before_scoring(capsys, "a captions file read", "scene-0.txt")
    assert caption.read_text() == "caption 0"


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_output_naming_the_prompts_file_is_refused(suffix, captioned, tiny_clip_dir, tmp_path, capsys):
    prompts = tmp_path / f"captions{suffix}"
    if suffix == ".csv":
        prompts.write_text("file_name,text\n" + "".join(f"scene-{i}.png,caption {i}\n" for i in range(3)))
    else:
        prompts.write_text("".join(json.dumps({"file_name": f"scene-{i}.png", "text": f"c {i}"}) + "\n" for i in range(3)))
    before = prompts.read_bytes()
    assert _score(captioned, tiny_clip_dir, "--prompts", str(prompts), "--output", str(prompts)) == 2
    _refused_before_scoring(capsys, "a captions file read")
    assert prompts.read_bytes() == before


def test_output_naming_the_folders_metadata_is_refused_also_through_another_name(captioned, tiny_clip_dir, tmp_path,
                                                                                 capsys):
    for i in range(3):
        (captioned / f"scene-{i}.txt").unlink()
    metadata = captioned / "metadata.jsonl"
    metadata.write_text("".join(json.dumps({"file_name": f"scene-{i}.png", "text": f"c {i}"}) + "\n" for i in range(3)))
    before = metadata.read_bytes()
    assert _score(captioned, tiny_clip_dir, "--output", str(metadata)) == 2
    _refused_before_scoring(capsys, "a captions file read", "metadata.jsonl")
    hard_link = tmp_path / "scores.jsonl"
    os.link(metadata, hard_link)  # the same file under another name
    assert _score(captioned, tiny_clip_dir, "--output", str(hard_link)) == 2
    _refused_before_scoring(capsys, "a captions file read")
    assert metadata.read_bytes() == before


@pytest.mark.parametrize("name", ["scores.parquet", "scores.json", "scores"])
def test_output_with_an_unknown_extension_is_refused_with_the_accepted_ones(name, captioned, tiny_clip_dir, tmp_path,
                                                                            capsys):
    assert _score(captioned, tiny_clip_dir, "--output", str(tmp_path / name)) == 2
    _refused_before_scoring(capsys, ".jsonl", ".csv")
    assert not (tmp_path / name).exists()


def test_output_on_a_full_file_system_is_refused_before_scoring(captioned, tiny_clip_dir, tmp_path, monkeypatch, capsys):
    full = shutil.disk_usage(tmp_path)._replace(free=0)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: full)  # the fault: no space left
    assert _score(captioned, tiny_clip_dir, "--output", str(tmp_path / "scores.jsonl")) == 2
    _refused_before_scoring(capsys, "cannot be written", "0 bytes free")


def test_summary_is_printed_when_the_output_cannot_be_written_after_scoring(captioned, tiny_clip_dir, tmp_path,
                                                                           monkeypatch, capsys):
    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)  # the fault: the disk fills while scoring runs
    out = tmp_path / "scores.jsonl"
    assert _score(captioned, tiny_clip_dir, "--output", str(out)) == 2
    captured = capsys.readouterr()
    assert "clip/mean" in captured.out and "clip/count  3" in captured.out and "per-image scores" not in captured.out
    assert "error: --output" in captured.err and os.strerror(errno.ENOSPC) in captured.err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_summary_json_names_no_output_when_it_cannot_be_written(captioned, tiny_clip_dir, tmp_path, monkeypatch, capsys):
    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    assert _score(captioned, tiny_clip_dir, "--json", "--output", str(tmp_path / "scores.jsonl")) == 2
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["clip/count"] == 3 and report["output"] is None and "error: --output" in captured.err


def test_output_onto_an_existing_score_file_and_through_a_link_to_one(captioned, tiny_clip_dir, tmp_path):
    out = tmp_path / "scores.jsonl"
    assert _score(captioned, tiny_clip_dir, "--output", str(out)) == 0
    assert _score(captioned, tiny_clip_dir, "--output", str(out)) == 0  # a regular file is replaced
    link = tmp_path / "link.jsonl"
    link.symlink_to(out)
    assert _score(captioned, tiny_clip_dir, "--output", str(link)) == 0
    assert len(read_scores(link).records) == 3
