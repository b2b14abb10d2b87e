"""Score files on awkward ground: special files, text UTF-8 cannot hold, file systems without hard links."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clip_metric.records import ScoreRecord, is_score_file, read_scores, write_scores

ROOT = Path(__import__("clip_metric").__file__).parent.parent
RECORDS = [ScoreRecord(f"p{i}", f"prompt {i}", 0.3 + i / 100, seed=i) for i in range(3)]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_neither_opened_nor_taken_for_a_score_file(tmp_path, no_hang):
    fifo = tmp_path / "step-00000002.jsonl"
    os.mkfifo(fifo)
    assert is_score_file(fifo) is False
    with pytest.raises(ValueError, match=rf"{fifo} is a FIFO, not a regular file"):
        read_scores(fifo)


def test_a_link_to_a_device_is_refused_naming_it_in_bounded_memory(tmp_path):
    link = tmp_path / "step-00000002.jsonl"
    link.symlink_to("/dev/zero")
    # In a child with 1 GiB of address space: reading /dev/zero to a line break never ends.
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from clip_metric.records import is_score_file, read_scores\n"
        "print(is_score_file(sys.argv[1]))\n"
        "try:\n"
        "    read_scores(sys.argv[1])\n"
        "except ValueError as err:\n"
        "    print(err)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", code, str(link)], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == ["False", f"score file {link} is a device, not a regular file"]


def test_csv_score_files_are_recognised_by_their_column_row(tmp_path):
    path = write_scores(tmp_path / "scores.csv", RECORDS)
    assert is_score_file(path)
    other = tmp_path / "table.csv"
    other.write_text("prompt_id,score\np,0.3\n")
    assert not is_score_file(other)


@pytest.mark.parametrize("field", ["prompt", "prompt_id", "file", "tag"])
def test_a_lone_surrogate_is_refused_naming_the_prompt_and_nothing_is_left(tmp_path, field):
    fields = {"prompt_id": "bad-one", "prompt": "a cat", "score": 0.3, "seed": 1}
    if field == "tag":
        fields["tags"] = {"category": "cats\ud800"}
    else:
        fields[field] = fields[field] + "\ud800" if field != "file" else "images/\udcff.png"
    record = ScoreRecord(**fields)
    folder = tmp_path / "new" / "clip_scores"
    with pytest.raises(ValueError, match="prompt 'bad-one") as info:
        write_scores(folder / "step-00000001.jsonl", [*RECORDS, record], step=1)
    assert not isinstance(info.value, UnicodeError)
    assert "lone surrogate" in str(info.value)
    assert not (tmp_path / "new").exists()  # not even the folder


def test_a_lone_surrogate_in_the_header_is_refused_and_nothing_is_left(tmp_path):
    with pytest.raises(ValueError, match="lone surrogate"):
        write_scores(tmp_path / "s.jsonl", RECORDS, header={"pipeline": "runs/\udcff"})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("code", [errno.EPERM, errno.ENOTSUP])
def test_an_exclusive_write_works_where_hard_links_do_not(tmp_path, monkeypatch, code):
    def no_links(source, destination, *args, **kwargs):
        raise OSError(code, os.strerror(code), str(source))

    monkeypatch.setattr(os, "link", no_links)  # a FAT or SMB mount
    path = write_scores(tmp_path / "step-00000001.jsonl", RECORDS, step=1, exclusive=True)
    assert read_scores(path).records == tuple(RECORDS)
    with pytest.raises(FileExistsError):
        write_scores(path, RECORDS[:1], step=1, exclusive=True)
    assert len(read_scores(path).records) == 3  # the first file kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000001.jsonl"]  # no temporary left


def test_an_exclusive_write_without_hard_links_refuses_a_planted_link(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "link", lambda *a, **k: (_ for _ in ()).throw(PermissionError(errno.EPERM, "no")))
    target = tmp_path / "precious.txt"
    target.write_text("keep")
    (tmp_path / "step-00000001.jsonl").symlink_to(target)
    with pytest.raises(FileExistsError):
        write_scores(tmp_path / "step-00000001.jsonl", RECORDS, step=1, exclusive=True)
    assert target.read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt", "step-00000001.jsonl"]


def test_reading_is_bounded(tmp_path, monkeypatch):
    import clip_metric.records as records

    path = write_scores(tmp_path / "s.jsonl", RECORDS, step=1)
    monkeypatch.setattr(records, "MAX_FILE_BYTES", 100)
    with pytest.raises(ValueError, match=r"larger than 100 bytes"):
        read_scores(path)

