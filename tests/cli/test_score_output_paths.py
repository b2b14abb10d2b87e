"""``clip-metric score --output`` on paths that cannot hold a score file: refused before scoring, by cause."""

from __future__ import annotations

import os
import socket
import stat

import pytest

from _helpers.data import captioned_folder
from clip_metric.cli import main


@pytest.fixture()
def captioned(tmp_path):
    return captioned_folder(tmp_path, count=2)


def _score(folder, model, output):
    return main(["score", str(folder), "--model", str(model), "--precision", "32", "--quiet", "--output", str(output)])


def _make(kind, path):
    if kind == "file":
        path.write_text("x")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # a node under tmp_path, never a real one
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        return server


@pytest.mark.parametrize("kind", ["file", "fifo", "device", "socket"])
def test_an_output_below_a_path_that_is_not_a_directory_names_that_path(kind, tmp_path, captioned, tiny_clip_dir,
                                                                       capsys):
    blocking = tmp_path / "a.jsonl"
    try:
        handle = _make(kind, blocking)
    except (OSError, AttributeError) as err:
        pytest.skip(f"cannot make a {kind} here: {err}")
    mode = os.lstat(blocking).st_mode
    try:
        assert _score(captioned, tiny_clip_dir, blocking / "x.jsonl") == 2
    finally:
        if handle is not None:
            handle.close()
    err = capsys.readouterr().err
    assert f"{str(blocking)!r} above it is not a directory" in err, err
    assert "File exists" not in err
    assert os.lstat(blocking).st_mode == mode


def test_an_output_that_is_a_symbolic_link_loop_is_refused_and_the_link_kept(tmp_path, captioned, tiny_clip_dir,
                                                                             capsys):
    link = tmp_path / "l.jsonl"
    link.symlink_to("l.jsonl")
    assert _score(captioned, tiny_clip_dir, link) == 2
    err = capsys.readouterr().err
    assert "symbolic link" in err and "not a regular file" in err, err
    assert os.path.islink(link) and os.readlink(link) == "l.jsonl"
