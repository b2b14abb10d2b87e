"""``PromptEvaluator``: what a resumed run pairs with, the pair minimum, and checks before rendering."""

from __future__ import annotations

import json
import math
import os
import warnings

import numpy as np
import pytest
import torch

from clip_metric.evaluation import PromptEvaluator
from clip_metric.intervals import MIN_PAIRS
from clip_metric.records import read_scores
from _helpers.checkpoints import PROMPTS, checkpoint
from _helpers.models import build_tiny_clip

LIBRARY = PROMPTS[:24]


def _evaluator(model_dir, **kwargs):
    return PromptEvaluator(model_dir, prompts=kwargs.pop("prompts", LIBRARY), precision="32", batch_size=24, **kwargs)


class _Counting:
    """A generator that counts the prompts it renders."""

    def __init__(self, k: float = 0) -> None:
        self.rendered = 0
        self._generate = checkpoint(k)

    def __call__(self, prompts, seeds):
        self.rendered += len(prompts)
        return self._generate(prompts, seeds)


def _deltas_of_a_straight_run(model_dir, scores_dir):
    evaluator = _evaluator(model_dir, scores_dir=scores_dir)
    return {step: evaluator.evaluate(checkpoint(step / 4), step=step) for step in (4, 8, 12)}


def test_a_run_resumed_from_a_state_saved_before_that_steps_evaluation_pairs_with_that_evaluation(
    tiny_clip_dir, tmp_path
):
    accelerate = pytest.importorskip("accelerate")
    straight = _deltas_of_a_straight_run(tiny_clip_dir, tmp_path / "straight")
    # diffusers' order: save_state at the checkpointing step, then validation at that step.
    accelerator = accelerate.Accelerator(cpu=True)
    evaluator = _evaluator(tiny_clip_dir, scores_dir=tmp_path / "scores")
    accelerator.register_for_checkpointing(evaluator)
    for step in (4, 8, 12):
        if step == 8:
            accelerator.save_state(tmp_path / "checkpoint-8")
        evaluator.evaluate(checkpoint(step / 4), step=step)  # the run then dies after step 12's evaluation

    resumed = _evaluator(tiny_clip_dir, scores_dir=tmp_path / "scores")
    accelerator._custom_objects.clear()
    accelerator.register_for_checkpointing(resumed)
    accelerator.load_state(tmp_path / "checkpoint-8")
    result = resumed.evaluate(checkpoint(3), step=12)
    # Step 8's evaluation, not step 4's (named in the state) nor the dead run's step 12.
    assert result.paired_with_step == 8 == straight[12].paired_with_step
    assert float(result.values["clip/delta"]) == pytest.approx(float(straight[12].values["clip/delta"]), abs=1e-12)
    assert result.paired_with_file == str((tmp_path / "scores" / "step-00000008.jsonl").resolve())
    header = read_scores(result.path).header
    assert header["paired_with"] == {"step": 8, "file": result.paired_with_file}
    assert header["run_id"] == read_scores(tmp_path / "scores" / "step-00000008.jsonl").header["run_id"]


def test_every_result_and_header_names_the_step_it_was_paired_with(tiny_clip_dir, tmp_path):
    straight = _deltas_of_a_straight_run(tiny_clip_dir, tmp_path)
    assert [straight[s].paired_with_step for s in (4, 8, 12)] == [None, 4, 8]
    assert read_scores(straight[4].path).header["paired_with"] is None
    assert read_scores(straight[12].path).header["paired_with"] == {
        "step": 8, "file": str(straight[8].path.resolve())
    }


def test_a_state_round_trip_before_the_first_evaluation_finds_the_evaluation_that_followed(tiny_clip_dir, tmp_path):
    evaluator = _evaluator(tiny_clip_dir, scores_dir=tmp_path / "run")
    state = json.loads(json.dumps(evaluator.state_dict()))  # saved before any evaluation: names no file
    assert state["previous_scores_file"] is None
    first = evaluator.evaluate(checkpoint(0), step=5)
    # Another run's file in the same folder, at an earlier step, is not this run's.
    other = _evaluator(tiny_clip_dir, scores_dir=tmp_path / "run")
    other.evaluate(checkpoint(2), step=3)

    resumed = _evaluator(tiny_clip_dir, scores_dir=tmp_path / "run")
    resumed.load_state_dict(state)
    assert resumed.has_previous
    result = resumed.evaluate(checkpoint(1), step=10)
    assert result.paired_with_step == 5 and result.paired_with_file == str(first.path.resolve())
    second = evaluator.evaluate(checkpoint(1), step=10)  # the straight run
    assert float(result.values["clip/delta"]) == pytest.approx(float(second.values["clip/delta"]), abs=1e-12)


def test_a_state_without_a_run_pairs_with_the_file_it_names(tiny_clip_dir, tmp_path):
    evaluator = _evaluator(tiny_clip_dir, scores_dir=tmp_path)
    first = evaluator.evaluate(checkpoint(0), step=1)
    evaluator.evaluate(checkpoint(1), step=2)
    resumed = _evaluator(tiny_clip_dir)
    resumed.load_state_dict({"previous_scores_file": str(first.path)})  # an older version's state
    assert resumed.evaluate(checkpoint(1), step=3).paired_with_step == 1


def test_a_score_file_of_another_clip_model_is_not_paired_with_a_warning(tiny_clip_dir, tmp_path, caplog):
    first = _evaluator(tiny_clip_dir, scores_dir=tmp_path / "scores")
    first.evaluate(checkpoint(0), step=1)
    other_model = build_tiny_clip(tmp_path / "other-clip", seed=1)
    resumed = _evaluator(other_model)
    resumed.load_state_dict(first.state_dict())
    with caplog.at_level("WARNING", logger="clip_metric"):
        result = resumed.evaluate(checkpoint(0), step=2)
    assert "clip/delta" not in result.values and result.paired_with_step is None
    assert "cannot pair" in caplog.text and "scored differently (model: local:" in caplog.text


def test_delta_ci_needs_the_minimum_pair_count_compare_needs(tiny_clip_dir):
    evaluator = _evaluator(tiny_clip_dir, prompts=PROMPTS[: MIN_PAIRS - 1])
    evaluator.evaluate(checkpoint(0))
    few = evaluator.evaluate(checkpoint(1))
    assert int(few.values["clip/delta_count"]) == MIN_PAIRS - 1
    assert math.isfinite(float(few.values["clip/delta"])) and math.isnan(float(few.values["clip/delta_ci"]))
    enough = _evaluator(tiny_clip_dir, prompts=PROMPTS[:MIN_PAIRS])
    enough.evaluate(checkpoint(0))
    assert math.isfinite(float(enough.evaluate(checkpoint(1)).values["clip/delta_ci"]))


def test_adaptive_rounds_never_stop_on_the_delta_below_the_minimum_pair_count(tiny_clip_dir):
    # The first evaluation stops after 2 prompts (a huge target): the next has at most 2 pairs,
    # whose interval of identical images is 0, but 2 pairs are too few to stop on.
    evaluator = _evaluator(tiny_clip_dir, target_ci=10.0, min_prompts=2, round_size=4)
    assert int(evaluator.evaluate(checkpoint(0)).values["clip/count"]) == 2
    evaluator.target_ci = 1e-12  # only a zero-width interval reaches it: the delta of identical images
    second = evaluator.evaluate(checkpoint(0))
    assert int(second.values["clip/delta_count"]) == 2
    assert int(second.values["clip/count"]) == len(LIBRARY) and not second.stopped_early


def test_max_prompts_beyond_the_library_warns_that_it_is_smaller(tiny_clip_dir):
    with pytest.warns(UserWarning, match=r"max_prompts=100000 is more than the library holds: it has 24 prompts"):
        evaluator = _evaluator(tiny_clip_dir, max_prompts=100_000)
    assert len(evaluator.library) == 24
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _evaluator(tiny_clip_dir, max_prompts=24)


def test_a_numpy_integer_step_is_an_integer_step(tiny_clip_dir, tmp_path):
    result = _evaluator(tiny_clip_dir, scores_dir=tmp_path).evaluate(checkpoint(0), step=np.int64(5))
    assert result.step == 5 and type(result.step) is int and result.path.name == "step-00000005.jsonl"


@pytest.mark.parametrize("step", [2.0, True, -1, "3", None])
def test_a_step_that_is_not_a_non_negative_integer_is_refused_before_rendering(tiny_clip_dir, tmp_path, step):
    generate = _Counting()
    with pytest.raises(ValueError, match=r"Expected `step` to be a non-negative int but got"):
        _evaluator(tiny_clip_dir, scores_dir=tmp_path).evaluate(generate, step=step)
    assert generate.rendered == 0


def test_a_scores_dir_that_is_a_file_is_refused_at_construction(tiny_clip_dir, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ValueError, match=r"Expected `scores_dir` to be a directory .* exists and is not a directory"):
        _evaluator(tiny_clip_dir, scores_dir=tmp_path / "file")
    with pytest.raises(ValueError, match=r"above it exists and is not a directory"):
        _evaluator(tiny_clip_dir, scores_dir=tmp_path / "file" / "scores")
    evaluator = _evaluator(tiny_clip_dir)
    with pytest.raises(ValueError, match="scores_dir"):  # set later, as the callback does
        evaluator.scores_dir = tmp_path / "file"


def test_a_scores_dir_on_a_read_only_filesystem_is_refused_at_construction(tiny_clip_dir, tmp_path, monkeypatch):
    real = os.statvfs

    def read_only(path):  # the filesystem holding tmp_path, mounted read-only (a fault injected)
        fields = list(real(path))
        fields[8] |= os.ST_RDONLY
        return os.statvfs_result(fields)

    monkeypatch.setattr(os, "statvfs", read_only)
    with pytest.raises(PermissionError, match=r"Expected a writable `scores_dir` .* \(a read-only filesystem\)"):
        _evaluator(tiny_clip_dir, scores_dir=tmp_path / "records" / "scores")


def test_a_scores_dir_that_fails_only_at_write_time_still_returns_the_values_with_a_warning(tiny_clip_dir, tmp_path):
    evaluator = _evaluator(tiny_clip_dir, scores_dir=tmp_path / "scores")
    (tmp_path / "scores").write_text("replaced by a file after construction")
    with pytest.warns(UserWarning, match=r"the scores of step 7 were not written to .*the values are returned"):
        result = evaluator.evaluate(checkpoint(0), step=7)
    assert result.path is None and int(result.values["clip/count"]) == len(LIBRARY)


def test_the_generators_rendering_settings_are_in_the_score_header(tiny_clip_dir, tmp_path):
    generate = _Counting()
    generate.rendering = {"num_inference_steps": 20, "guidance_scale": 7.5, "size": (512, 512),
                          "dtype": torch.bfloat16, "eta": math.nan}
    result = _evaluator(tiny_clip_dir, scores_dir=tmp_path).evaluate(generate, step=1)
    assert read_scores(result.path).header["rendering"] == {
        "num_inference_steps": 20, "guidance_scale": 7.5, "size": [512, 512], "dtype": "torch.bfloat16", "eta": "nan"
    }
