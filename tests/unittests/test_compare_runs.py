"""Which score files make a run, and in which order: ``clip_metric.compare.find_runs`` and friends."""

from __future__ import annotations

import os
import shutil
import warnings

import numpy as np
import pytest

from clip_metric.compare import best_evaluation, find_runs, load_run, mixed_signatures, plot_runs, read_scores_file
from clip_metric.records import ScoreRecord, write_scores
from clip_metric.signature import SEED_RULE, ScoreSignature

KEYS = [(f"id{i}", f"prompt {i}", i) for i in range(20)]
SIGNATURE = ScoreSignature("0.1.0", "m@main", "32,bicubic+aa,crop32", "32", "cosine", "p#00,n20,all", SEED_RULE, 1)


def _rows(mean: float, n: int = 20) -> list[ScoreRecord]:
    noise = np.random.default_rng(int(mean * 1000)).normal(0, 0.01, n)
    return [ScoreRecord(k[0], k[1], float(mean + e), seed=k[2]) for k, e in zip(KEYS[:n], noise)]


def _save(path, step, mean, n=20, **header):
    return write_scores(path, _rows(mean, n), step=step, header={"scale": "cosine", **header})


# --------------------------------------------------------------------------- any score file


def test_score_files_of_any_name_are_found_by_their_header(tmp_path):
    _save(tmp_path / "a" / "scores.jsonl", 0, 0.30)
    _save(tmp_path / "b" / "renders.csv", 0, 0.31)
    _save(tmp_path / "c" / "clip_scores" / "step-00000100.jsonl", 100, 0.32)
    (tmp_path / "c" / "notes.jsonl").write_text('{"format": "something else"}\n')
    (tmp_path / "c" / "table.csv").write_text("prompt,score\na cat,0.3\n")
    runs = find_runs(tmp_path)
    name = tmp_path.name
    assert {k: [e.step for e in v] for k, v in runs.items()} == {f"{name}/a": [0], f"{name}/b": [0], f"{name}/c": [100]}
    assert runs[f"{name}/b"][0].path.name == "renders.csv"


def test_a_score_file_given_as_such_is_a_run_of_one_evaluation(tmp_path):
    path = _save(tmp_path / "a" / "scores.jsonl", 0, 0.30)
    (run,) = find_runs(path).values()
    assert [e.path for e in run] == [path]
    other = tmp_path / "notes.jsonl"
    other.write_text('{"note": 1}\n')
    with pytest.raises(ValueError, match=rf"{other}, line 1: not a clip-metric score file"):
        find_runs(other)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_special_files_among_score_files_are_skipped_with_a_warning_naming_them(tmp_path, no_hang):
    folder = tmp_path / "run" / "clip_scores"
    _save(folder / "step-00000001.jsonl", 1, 0.30)
    os.mkfifo(folder / "step-00000002.jsonl")
    (folder / "step-00000003.jsonl").symlink_to("/dev/zero")
    (folder / "step-00000004.jsonl").symlink_to(tmp_path / "nothing-here")
    with pytest.warns(UserWarning) as caught:
        runs = find_runs(tmp_path / "run")
    messages = "\n".join(str(w.message) for w in caught)
    assert f"{folder / 'step-00000002.jsonl'} is a FIFO" in messages
    assert f"{folder / 'step-00000003.jsonl'} is a device" in messages
    assert f"{folder / 'step-00000004.jsonl'} is a dangling symbolic link" in messages
    assert [e.step for e in next(iter(runs.values()))] == [1]
    with pytest.raises(ValueError, match="is a FIFO, not a regular file"):
        find_runs(folder / "step-00000002.jsonl")


def test_a_link_loop_between_folders_is_walked_once(tmp_path):
    _save(tmp_path / "run" / "clip_scores" / "step-00000001.jsonl", 1, 0.3)
    (tmp_path / "run" / "clip_scores" / "again").symlink_to(tmp_path / "run")
    runs = find_runs(tmp_path / "run")
    assert sum(len(v) for v in runs.values()) == 1  # the folder the link leads back to is not walked again


# --------------------------------------------------------------------------- order of evaluations


def test_the_last_evaluation_at_one_step_is_the_newest_suffix(tmp_path):
    folder = tmp_path / "run" / "clip_scores"
    _save(folder / "step-00000100.jsonl", 100, 0.30)
    for k in range(1, 12):  # validate() again, a resume, eval re-runs: -1 ... -11
        _save(folder / f"step-00000100-{k}.jsonl", 100, 0.30 + k / 100)
    evaluations = load_run(tmp_path / "run")
    assert [e.path.name for e in evaluations][-3:] == ["step-00000100-9.jsonl", "step-00000100-10.jsonl",
                                                       "step-00000100-11.jsonl"]
    assert evaluations[0].path.name == "step-00000100.jsonl"
    assert evaluations[-1].mean == pytest.approx(0.41, abs=0.01)


def test_files_of_one_step_without_a_suffix_are_in_the_order_written(tmp_path):
    first = _save(tmp_path / "run" / "z-first.jsonl", 0, 0.30)
    second = _save(tmp_path / "run" / "a-second.jsonl", 0, 0.35)
    os.utime(first, ns=(1_000_000_000, 1_000_000_000))
    os.utime(second, ns=(2_000_000_000, 2_000_000_000))
    assert [e.path for e in load_run(tmp_path / "run")] == [first, second]


def test_an_evaluation_without_rows_is_never_the_best(tmp_path):
    folder = tmp_path / "run" / "clip_scores"
    write_scores(folder / "step-00000100.jsonl", [], step=100)
    _save(folder / "step-00000200.jsonl", 200, 0.30)
    evaluations = load_run(tmp_path / "run")
    assert best_evaluation(evaluations).step == 200
    assert best_evaluation(evaluations[:1]).step == 100  # all empty: the last, with its NaN mean


# --------------------------------------------------------------------------- resumed runs


def _resumed(root, *, stage="fit"):
    """version_0 evaluated at 100 and 200; version_1, resumed from a checkpoint, at 300 and 400."""
    v0 = root / "lightning_logs" / "version_0" / "clip_scores"
    v1 = root / "lightning_logs" / "version_1" / "clip_scores"
    _save(v0 / "step-00000100.jsonl", 100, 0.30, stage=stage)
    last = _save(v0 / "step-00000200.jsonl", 200, 0.31, stage=stage,
                 paired_with={"step": 100, "file": str((v0 / "step-00000100.jsonl").resolve())})
    first = _save(v1 / "step-00000300.jsonl", 300, 0.32, stage=stage,
                  paired_with={"step": 200, "file": str(last.resolve())})
    _save(v1 / "step-00000400.jsonl", 400, 0.33, stage=stage, paired_with={"step": 300, "file": str(first.resolve())})
    return root


def test_a_resumed_run_in_a_new_logger_version_is_one_run(tmp_path):
    runs = find_runs(_resumed(tmp_path / "exp"))
    assert {k: [e.step for e in v] for k, v in runs.items()} == {"exp": [100, 200, 300, 400]}


def test_a_resumed_run_is_one_run_after_the_tree_moved(tmp_path):
    _resumed(tmp_path / "exp")
    shutil.move(tmp_path / "exp", tmp_path / "moved")
    runs = find_runs(tmp_path / "moved")
    assert {k: [e.step for e in v] for k, v in runs.items()} == {"moved": [100, 200, 300, 400]}


def test_a_resume_rerunning_a_step_puts_the_resumed_evaluation_last(tmp_path):
    v0 = tmp_path / "exp" / "version_0" / "clip_scores"
    v1 = tmp_path / "exp" / "version_1" / "clip_scores"
    last = _save(v0 / "step-00000100.jsonl", 100, 0.30)
    _save(v0 / "step-00000200.jsonl", 200, 0.40)  # after the checkpoint the resume starts from
    _save(v1 / "step-00000200.jsonl", 200, 0.35, paired_with={"step": 100, "file": str(last)})
    (run,) = find_runs(tmp_path / "exp").values()
    assert [(e.step, e.path.parent.parent.name) for e in run] == [(100, "version_0"), (200, "version_0"),
                                                                  (200, "version_1")]


def test_folders_paired_with_nothing_found_stay_separate_runs(tmp_path):
    v0 = tmp_path / "exp" / "version_0" / "clip_scores"
    _save(v0 / "step-00000100.jsonl", 100, 0.30)
    _save(tmp_path / "exp" / "version_1" / "clip_scores" / "step-00000100.jsonl", 100, 0.30,
          paired_with={"step": 50, "file": "/elsewhere/step-00000050.jsonl"})
    _save(tmp_path / "exp" / "version_2" / "clip_scores" / "step-00000100.jsonl", 100, 0.30,
          paired_with={"step": 99, "file": str(v0 / "step-00000100.jsonl")})  # the step does not match
    assert sorted(find_runs(tmp_path / "exp")) == ["exp/version_0", "exp/version_1", "exp/version_2"]


def test_pipelines_of_one_eval_stay_separate_runs(tmp_path):
    # clip-metric eval pairs each pipeline with the one before: those are runs to compare.
    runs = find_runs(_resumed(tmp_path / "exp", stage="eval"))
    assert sorted(runs) == ["exp/lightning_logs/version_0", "exp/lightning_logs/version_1"]


# --------------------------------------------------------------------------- signatures


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"model": 5}, ["model=5 (int)"]),
        ({"images_per_prompt": "1"}, ["images_per_prompt='1' (str)"]),
        ({"model": 5, "images_per_prompt": "1"}, ["model=5 (int)", "images_per_prompt='1' (str)"]),
        ({"images_per_prompt": True}, ["images_per_prompt=True (bool)"]),
        ({"precision": None}, ["precision=None (NoneType)"]),
    ],
)
def test_a_malformed_signature_is_refused_naming_its_fields(tmp_path, changes, named):
    path = _save(tmp_path / "s.jsonl", 1, 0.3, signature={**SIGNATURE.as_dict(), **changes})
    with pytest.raises(ValueError, match="malformed score signature") as info:
        read_scores_file(path)
    assert str(path) in str(info.value)
    for text in named:
        assert text in str(info.value)


def test_a_run_scored_with_two_models_says_so(tmp_path):
    folder = tmp_path / "run" / "clip_scores"
    other = {**SIGNATURE.as_dict(), "model": "other@main"}
    _save(folder / "step-00000100.jsonl", 100, 0.40, signature=other)
    _save(folder / "step-00000200.jsonl", 200, 0.30, signature=SIGNATURE.as_dict())
    evaluations = load_run(tmp_path / "run")
    assert mixed_signatures(evaluations) == ["step 100 (step-00000100.jsonl): model: other@main vs m@main"]
    assert mixed_signatures(evaluations[1:]) == []


# --------------------------------------------------------------------------- plots


@pytest.fixture()
def ticks(monkeypatch):
    """The x ticks of every figure saved (read off matplotlib as it saves)."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    seen = []
    save = Figure.savefig

    def spy(self, *args, **kwargs):
        seen.append(list(self.axes[0].get_xticks()))
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    return seen


@pytest.mark.parametrize("steps", [(0, 1), (0,), (1, 2, 3), (100, 200)])
def test_plot_ticks_are_whole_steps(tmp_path, ticks, steps):
    runs = {}
    for name in ("a", "b"):
        for step in steps:
            _save(tmp_path / name / f"step-{step:08d}.jsonl", step, 0.3)
        runs[name] = load_run(tmp_path / name)
    plot_runs(runs, tmp_path / "plot.png")
    (drawn,) = ticks
    assert drawn and all(float(t).is_integer() for t in drawn), drawn


def test_a_plot_over_a_link_replaces_the_link_not_its_target(tmp_path):
    pytest.importorskip("matplotlib")
    _save(tmp_path / "a" / "step-00000001.jsonl", 1, 0.3)
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    link = tmp_path / "clip.png"
    link.symlink_to(target)
    plot_runs({"a": load_run(tmp_path / "a")}, link)
    assert target.read_text() == "keep me"
    assert not link.is_symlink() and link.read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "clip.png", "notes.txt"]  # no temporary left


def test_a_plot_onto_a_special_file_is_refused(tmp_path):
    pytest.importorskip("matplotlib")
    _save(tmp_path / "a" / "step-00000001.jsonl", 1, 0.3)
    os.mkfifo(tmp_path / "fifo.png")
    with pytest.raises(ValueError, match="is not a regular file"):
        plot_runs({"a": load_run(tmp_path / "a")}, tmp_path / "fifo.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"one of \[.*'png'"):
            plot_runs({"a": load_run(tmp_path / "a")}, tmp_path / "clip.unknown")
