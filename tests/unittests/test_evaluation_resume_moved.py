"""``PromptEvaluator`` resumed in a copy of a run's folder pairs with the copy's score files."""

from __future__ import annotations

import json
import shutil

import pytest

from clip_metric.evaluation import PromptEvaluator
from _helpers.checkpoints import PROMPTS, checkpoint

LIBRARY = PROMPTS[:24]


def _evaluator(model_dir, scores_dir):
    return PromptEvaluator(model_dir, prompts=LIBRARY, precision="32", batch_size=24, scores_dir=scores_dir)


def _run_then_copy(model_dir, tmp_path):
    """A run that evaluates at steps 2 and 4, its state saved after step 2; the folder copied to out2."""
    evaluator = _evaluator(model_dir, tmp_path / "out" / "clip_scores")
    evaluator.evaluate(checkpoint(0), step=2)
    state = json.loads(json.dumps(evaluator.state_dict()))  # as a checkpoint keeps it
    straight = evaluator.evaluate(checkpoint(1), step=4)
    shutil.copytree(tmp_path / "out", tmp_path / "out2")
    return state, straight


def _resume_in_the_copy(model_dir, tmp_path, state):
    resumed = _evaluator(model_dir, tmp_path / "out2" / "clip_scores")
    resumed.load_state_dict(state)
    return resumed.evaluate(checkpoint(1), step=4)


def test_a_resume_in_a_copied_folder_pairs_with_the_copy_when_the_original_is_gone(tiny_clip_dir, tmp_path):
    state, straight = _run_then_copy(tiny_clip_dir, tmp_path)
    shutil.rmtree(tmp_path / "out" / "clip_scores")
    result = _resume_in_the_copy(tiny_clip_dir, tmp_path, state)
    assert result.paired_with_step == 2
    assert result.paired_with_file == str((tmp_path / "out2" / "clip_scores" / "step-00000002.jsonl").resolve())
    assert float(result.values["clip/delta"]) == pytest.approx(float(straight.values["clip/delta"]), abs=1e-12)


def test_a_resume_in_a_copied_folder_pairs_with_the_copy_not_the_original(tiny_clip_dir, tmp_path):
    state, _ = _run_then_copy(tiny_clip_dir, tmp_path)
    assert state["previous_scores_file"].startswith(str((tmp_path / "out").resolve()))
    result = _resume_in_the_copy(tiny_clip_dir, tmp_path, state)
    assert result.paired_with_file == str((tmp_path / "out2" / "clip_scores" / "step-00000002.jsonl").resolve())


def test_a_resume_whose_own_folder_lacks_the_runs_files_falls_back_to_the_stored_path(tiny_clip_dir, tmp_path):
    state, _ = _run_then_copy(tiny_clip_dir, tmp_path)
    shutil.rmtree(tmp_path / "out2" / "clip_scores")
    result = _resume_in_the_copy(tiny_clip_dir, tmp_path, state)
    assert result.paired_with_file == str((tmp_path / "out" / "clip_scores" / "step-00000002.jsonl").resolve())
