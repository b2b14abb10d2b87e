"""``PromptEvaluator``: intervals, paired deltas and adaptive stopping against a reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from clip_metric.adaptive import prompts_to_keep
from clip_metric.evaluation import PromptEvaluator
from clip_metric.prompts import proportional_order, load_prompt_library
from clip_metric.records import read_scores
from _helpers.checkpoints import PROMPTS, checkpoint


def _evaluator(model_dir, **kwargs):
    return PromptEvaluator(model_dir, prompts=PROMPTS, precision="32", batch_size=16, **kwargs)


# Scores of one image differ by ~1e-8 between batches of other images (float32 kernels), and
# the adaptive order batches prompts differently from the reference's library order.
BATCHING = 1e-7


BOUNDS = [*range(64, 200, 32), 200]  # prompts scored after each round: 64, then 32 more at a time


def _t_half(values):
    values = np.asarray(values, dtype=np.float64)
    return stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size)


def _skew_half(values):
    # The t half-width widened by the skewness correction of the studentized mean (clip_metric.adaptive).
    values = np.asarray(values, dtype=np.float64)
    n, s = values.size, values.std(ddof=1)
    t = stats.t.ppf(0.975, n - 1)
    skew = np.mean((values - values.mean()) ** 3) / s**3 if s > 0 else 0.0
    return t * s / math.sqrt(n) + abs(skew) * s * (2 * t * t + 1) / (6 * n)


def _pair_moments(values):
    values = np.asarray(values, dtype=np.float64)
    return float(values.sum()), float((values**2).sum()), float((values**3).sum()), values.size


@pytest.fixture(scope="module")
def full_scores(tiny_clip_dir):
    """Every prompt's score at checkpoints 0, 1 and 2 (and of unrelated images), from full evaluations, by prompt id."""
    evaluator = _evaluator(tiny_clip_dir)
    generators = {0: checkpoint(0), 1: checkpoint(1), 2: checkpoint(2), "unrelated": checkpoint(1, seed_offset=1)}
    return {k: {r.prompt_id: r.score for r in evaluator.evaluate(g).records} for k, g in generators.items()}


def _order_ids():
    return [p.id for p in proportional_order(load_prompt_library(PROMPTS))]


def test_mean_ci_is_the_t_interval_of_the_scores(tiny_clip_dir, full_scores):
    result = _evaluator(tiny_clip_dir).evaluate(checkpoint(0))
    scores = list(full_scores[0].values())
    assert float(result.values["clip/mean"]) == pytest.approx(np.mean(scores), abs=1e-12)
    assert float(result.values["clip/mean_ci"]) == pytest.approx(_t_half(scores), rel=1e-9)
    assert result.rounds == 1 and not result.stopped_early and len(result.records) == len(PROMPTS)
    assert "clip/delta" not in result.values


def test_the_second_evaluation_is_paired_with_the_first(tiny_clip_dir, full_scores):
    evaluator = _evaluator(tiny_clip_dir)
    evaluator.evaluate(checkpoint(0), step=1)
    second = evaluator.evaluate(checkpoint(1), step=2)
    diffs = [full_scores[1][i] - full_scores[0][i] for i in full_scores[0]]
    assert float(second.values["clip/delta"]) == pytest.approx(np.mean(diffs), abs=1e-12)
    assert float(second.values["clip/delta_ci"]) == pytest.approx(_skew_half(diffs), rel=1e-9)
    assert int(second.values["clip/delta_count"]) == len(PROMPTS)
    # Pairing removes the spread between prompts: narrower than comparing the two means.
    unpaired = math.hypot(float(second.values["clip/mean_ci"]), _t_half(list(full_scores[0].values())))
    assert float(second.values["clip/delta_ci"]) < unpaired / 2


def test_an_adaptive_evaluation_stops_where_the_reference_interval_first_reaches_the_target(tiny_clip_dir, full_scores):
    order = _order_ids()
    halves = {n: _t_half([full_scores[0][i] for i in order[:n]]) for n in BOUNDS}
    target = min(halves[n] for n in BOUNDS[1:])  # reached in a later round, not in the first
    assert target < halves[64]
    expected = next(n for n in BOUNDS if halves[n] <= target)
    result = _evaluator(tiny_clip_dir, target_ci=target, target="mean").evaluate(checkpoint(0))
    assert 64 < expected
    assert int(result.values["clip/count"]) == expected and result.stopped_early == (expected < 200)
    assert result.rounds == BOUNDS.index(expected) + 1
    assert sorted(r.prompt_id for r in result.records) == sorted(order[:expected])  # a prefix of the order
    assert float(result.values["clip/mean_ci"]) <= target + BATCHING


def test_a_delta_target_stops_on_the_paired_interval(tiny_clip_dir, full_scores):
    order = _order_ids()
    evaluator = _evaluator(tiny_clip_dir, target_ci=1e-9)  # the first evaluation uses the whole library
    first = evaluator.evaluate(checkpoint(1))
    assert int(first.values["clip/count"]) == 200 and not first.stopped_early
    diffs = [full_scores[2][i] - full_scores[1][i] for i in order]
    halves = {n: _skew_half(diffs[:n]) for n in BOUNDS}
    target = min(halves[n] for n in BOUNDS[1:])
    assert target < halves[64]
    expected = next(n for n in BOUNDS if halves[n] <= target)
    evaluator.target_ci = target
    second = evaluator.evaluate(checkpoint(2))
    assert 64 < expected
    # Past the stop, on to the pairs the next evaluation is predicted to need.
    rendered = min(200, max(expected, prompts_to_keep(*_pair_moments(diffs[:expected]), target)))
    assert int(second.values["clip/count"]) == rendered == int(second.values["clip/delta_count"])
    assert float(second.values["clip/delta"]) == pytest.approx(np.mean(diffs[:rendered]), abs=BATCHING)
    assert float(second.values["clip/delta_ci"]) <= target + BATCHING and second.target_reached


def test_a_delta_target_whose_pairs_run_out_renders_what_the_next_evaluation_needs(tiny_clip_dir, full_scores):
    order = _order_ids()
    evaluator = _evaluator(tiny_clip_dir, target_ci=10.0)  # the first stops after one round: 64 prompts
    assert int(evaluator.evaluate(checkpoint(1)).values["clip/count"]) == 64
    # Unrelated images, and a target the 64 pairs miss: the evaluation renders on to the count
    # the next one is predicted to need, not to the (far larger) count of the mean's target.
    scores = full_scores["unrelated"]
    diffs = [scores[i] - full_scores[1][i] for i in order[:64]]
    target = 0.9 * _skew_half(diffs)
    evaluator.target_ci = target
    second = evaluator.evaluate(checkpoint(1, seed_offset=1))
    assert int(second.values["clip/delta_count"]) == 64 and second.target_reached is False
    expected = min(200, prompts_to_keep(*_pair_moments(diffs), target))
    assert int(second.values["clip/count"]) == expected > 64
    # The same images again: the paired interval is 0 after the first round, which stops there.
    third = evaluator.evaluate(checkpoint(1, seed_offset=1))
    assert int(third.values["clip/count"]) == 64 == int(third.values["clip/delta_count"]) and third.stopped_early
    assert float(third.values["clip/delta"]) == 0.0 == float(third.values["clip/delta_ci"])


def test_without_target_ci_the_library_order_and_one_round_are_kept(tiny_clip_dir):
    seen = []

    def generate(prompts, seeds):
        seen.extend(prompts)
        return checkpoint(0)(prompts, seeds)

    result = _evaluator(tiny_clip_dir).evaluate(generate)
    assert seen == PROMPTS and result.rounds == 1 and _evaluator(tiny_clip_dir).rounds() == [200]


def test_rounds_are_fixed_prompt_counts(tiny_clip_dir):
    evaluator = _evaluator(tiny_clip_dir, target_ci=0.01, min_prompts=50, round_size=40)
    assert evaluator.rounds() == [50, 90, 130, 170, 200]
    assert _evaluator(tiny_clip_dir, target_ci=0.01, min_prompts=500).rounds() == [200]


def test_a_resumed_evaluator_pairs_with_the_score_file(tiny_clip_dir, full_scores, tmp_path):
    evaluator = _evaluator(tiny_clip_dir, scores_dir=tmp_path)
    evaluator.evaluate(checkpoint(0), step=10)
    state = evaluator.state_dict()
    assert read_scores(state["previous_scores_file"]).step == 10

    resumed = _evaluator(tiny_clip_dir, scores_dir=tmp_path)
    resumed.load_state_dict(state)
    assert resumed.has_previous
    result = resumed.evaluate(checkpoint(1), step=20)
    diffs = [full_scores[1][i] - full_scores[0][i] for i in full_scores[0]]
    assert float(result.values["clip/delta"]) == pytest.approx(np.mean(diffs), abs=1e-12)
    assert result.path.name == "step-00000020.jsonl"


def test_a_missing_score_file_makes_the_next_evaluation_unpaired_with_a_warning(tiny_clip_dir, tmp_path, caplog):
    evaluator = _evaluator(tiny_clip_dir)
    evaluator.load_state_dict({"previous_scores_file": str(tmp_path / "gone.jsonl")})
    with caplog.at_level("WARNING", logger="clip_metric"):
        result = evaluator.evaluate(checkpoint(0))
    assert "clip/delta" not in result.values
    assert "cannot pair with the evaluation before the resume" in caplog.text and "gone.jsonl" in caplog.text


def test_scores_on_another_scale_are_not_paired(tiny_clip_dir, tmp_path, caplog):
    first = _evaluator(tiny_clip_dir, scale="torchmetrics", scores_dir=tmp_path)
    first.evaluate(checkpoint(0))
    second = _evaluator(tiny_clip_dir)
    second.load_state_dict(first.state_dict())
    with caplog.at_level("WARNING", logger="clip_metric"):
        assert "clip/delta" not in second.evaluate(checkpoint(0)).values
    assert "scale: torchmetrics vs cosine" in caplog.text


def test_the_adaptive_rule_is_in_the_signature_and_the_header(tiny_clip_dir, tmp_path):
    evaluator = _evaluator(tiny_clip_dir, target_ci=10.0, scores_dir=tmp_path)
    result = evaluator.evaluate(checkpoint(0), step=1)
    assert "proportional-prefix:delta-ci<=10(min64,round32,keep+2se,skew)" in result.signature.prompts
    assert ",n200," in result.signature.prompts  # the library the prefix is taken from
    header = read_scores(result.path).header
    assert header["adaptive"] == {"target": "delta", "target_ci": 10.0, "min_prompts": 64, "round_size": 32,
                                  "interval": "t+skewness", "keep_pairs": "need*(1+2*sqrt(3/need))",
                                  "rounds": 1, "stopped_early": True, "target_reached": True}


def test_rng_and_module_modes_are_restored(tiny_clip_dir):
    module = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Linear(2, 2)).train()
    module[1].eval()
    modes = []

    def generate(prompts, seeds):
        modes.append((module.training, module[0].training, torch.is_grad_enabled()))
        torch.rand(10)
        return checkpoint(0)(prompts, seeds)

    torch.manual_seed(3)
    expected = torch.rand(1)
    torch.manual_seed(3)
    _evaluator(tiny_clip_dir).evaluate(generate, modules=[module])
    assert torch.equal(torch.rand(1), expected)
    assert set(modes) == {(False, False, False)}
    assert module.training and module[0].training and not module[1].training


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"target_ci": 0}, r"Expected `target_ci` to be a positive number or None but got 0"),
        ({"target_ci": -0.1}, "target_ci"),
        ({"target_ci": math.inf}, "target_ci"),
        ({"target_ci": True}, "target_ci"),
        ({"target_ci": "0.01"}, "target_ci"),
        ({"target": "median"}, "target"),
        ({"min_prompts": 1}, "at least 2"),
        ({"min_prompts": 0}, "min_prompts"),
        ({"round_size": 0}, "round_size"),
        ({"round_size": 2.5}, "round_size"),
        ({"prefix": " "}, "prefix"),
        ({"scores_dir": ""}, "scores_dir"),
    ],
)
def test_bad_arguments_are_refused(tiny_clip_dir, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _evaluator(tiny_clip_dir, **kwargs)


def test_a_failing_generator_raises_and_changes_nothing(tiny_clip_dir):
    evaluator = _evaluator(tiny_clip_dir)
    evaluator.evaluate(checkpoint(0))

    def broken(prompts, seeds):
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        evaluator.evaluate(broken)
    again = evaluator.evaluate(checkpoint(0))  # still paired with the first evaluation
    assert float(again.values["clip/delta"]) == 0.0


def test_accelerate_checkpoints_carry_the_pairing(tiny_clip_dir, full_scores, tmp_path):
    accelerate = pytest.importorskip("accelerate")
    accelerator = accelerate.Accelerator(cpu=True)
    evaluator = _evaluator(tiny_clip_dir, scores_dir=tmp_path / "scores")
    accelerator.register_for_checkpointing(evaluator)
    evaluator.evaluate(checkpoint(0), step=1)
    accelerator.save_state(tmp_path / "state")

    resumed = _evaluator(tiny_clip_dir, scores_dir=tmp_path / "scores")
    accelerator._custom_objects.clear()
    accelerator.register_for_checkpointing(resumed)
    accelerator.load_state(tmp_path / "state")
    result = resumed.evaluate(checkpoint(1), step=2)
    diffs = [full_scores[1][i] - full_scores[0][i] for i in full_scores[0]]
    assert float(result.values["clip/delta"]) == pytest.approx(np.mean(diffs), abs=1e-12)


def test_target_ci_on_a_small_library_warns_and_keeps_the_plain_signature(tiny_clip_dir):
    with pytest.warns(UserWarning, match="changes nothing: the library has 200 prompts, no more than min_prompts=200"):
        evaluator = _evaluator(tiny_clip_dir, target_ci=0.01, min_prompts=200)
    assert evaluator.signature() == _evaluator(tiny_clip_dir).signature()


def test_the_state_names_the_score_file_absolutely_and_loading_a_state_replaces_the_previous(
    tiny_clip_dir, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    evaluator = _evaluator(tiny_clip_dir, scores_dir="relative/scores")
    evaluator.evaluate(checkpoint(0), step=3)
    path = evaluator.state_dict()["previous_scores_file"]
    assert path == str(tmp_path / "relative" / "scores" / "step-00000003.jsonl")
    evaluator.load_state_dict({"previous_scores_file": 5})  # another version's state: nothing to pair with
    assert not evaluator.has_previous
    assert "clip/delta" not in evaluator.evaluate(checkpoint(0)).values
    assert _evaluator(tiny_clip_dir).state_dict()["previous_scores_file"] is None  # no scores_dir, no file


def test_join_timeout_must_be_positive_seconds(tiny_clip_dir):
    for value in (None, 0, -1, "5"):
        with pytest.raises(ValueError, match="join_timeout"):
            _evaluator(tiny_clip_dir, join_timeout=value)
