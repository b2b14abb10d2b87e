"""``PromptEvaluator`` on two CPU processes (gloo): the same stopping point, deltas and files as one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from _helpers.checkpoints import PROMPTS, checkpoint
from _helpers.processes import spawn_two
from clip_metric.evaluation import PromptEvaluator

# 197 prompts: the last round holds 5, an odd count, so one rank renders fewer than the other.
LIBRARY = PROMPTS[:197]


def _evaluator(model_dir: str, scores_dir: str | None = None, **kwargs) -> PromptEvaluator:
    return PromptEvaluator(model_dir, prompts=LIBRARY, precision="32", batch_size=8, scores_dir=scores_dir, **kwargs)


def _run(model_dir: str, scores_dir: str | None, state: dict | None = None) -> list[dict]:
    """Three evaluations with adaptive stopping; a resumed run first reads ``state``."""
    evaluator = _evaluator(model_dir, scores_dir, target_ci=0.02)
    if state is not None:
        evaluator.load_state_dict(state)
    out = []
    for k in (0, 1, 2) if state is None else (1,):
        result = evaluator.evaluate(checkpoint(k), step=k)
        out.append({"values": {k: float(v) for k, v in result.values.items()}, "rounds": result.rounds,
                    "ids": [r.prompt_id for r in result.records], "state": evaluator.state_dict()})
    return out


def _init(rank: int, init_file: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)


def _worker(rank: int, init_file: str, model_dir: str, out_dir: str, state: dict) -> None:
    """Three adaptive evaluations from scratch, then one resumed from ``state`` (written by one process)."""
    _init(rank, init_file)
    try:
        scores_dir = str(Path(out_dir) / "scores")
        results = {"fresh": _run(model_dir, scores_dir), "resumed": _run(model_dir, scores_dir, state)}
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _failing_and_main_only_worker(rank: int, init_file: str, model_dir: str, out_dir: str) -> None:
    """A generator failing on rank 1; then an evaluation under ``if rank == 0``, without and with ``local``."""
    _init(rank, init_file)
    try:
        evaluator = _evaluator(model_dir, target_ci=0.02)
        healthy = checkpoint(0)

        def generate(prompts, seeds):
            if rank == 1 and "green" in prompts[0]:
                raise RuntimeError("rank 1 ran out of memory")
            return healthy(prompts, seeds)

        try:
            evaluator.evaluate(generate)
        except RuntimeError as err:
            Path(out_dir, f"rank{rank}.txt").write_text(str(err))
        if rank == 0:
            main_only = _evaluator(model_dir, join_timeout=3.0)
            try:
                main_only.evaluate(checkpoint(0))
            except RuntimeError as err:
                Path(out_dir, "error.txt").write_text(str(err))
            result = main_only.evaluate(checkpoint(0), local=True)
            torch.save({k: float(v) for k, v in result.values.items()}, Path(out_dir, "local.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _spawn(fn, args, timeout: float = 240.0) -> None:
    spawn_two(fn, args, timeout)


@pytest.mark.slow
def test_two_processes_stop_where_one_does_and_pair_with_a_one_process_evaluation(tiny_clip_dir, tmp_path):
    single = _run(str(tiny_clip_dir), str(tmp_path / "single"))
    # Evaluated on one process; resumed on two from the score file named in the state.
    first = _evaluator(str(tiny_clip_dir), str(tmp_path / "before"), target_ci=0.02)
    first.evaluate(checkpoint(0), step=0)
    state = first.state_dict()
    expected = first.evaluate(checkpoint(1), step=1)  # the one-process answer to the next evaluation
    _spawn(_worker, (str(tmp_path / "init"), str(tiny_clip_dir), str(tmp_path), state))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    # Several rounds, and stops before the library is used up: the rule is exercised.
    assert any(e["rounds"] > 1 for e in single) and any(e["values"]["clip/count"] < len(LIBRARY) for e in single)
    assert "clip/delta" in single[1]["values"] and "clip/delta" in single[2]["values"]
    for results in ranks:
        for one, two in zip(single, results["fresh"], strict=True):
            assert two["rounds"] == one["rounds"] and two["ids"] == one["ids"]
            assert two["values"].keys() == one["values"].keys()
            for key, value in one["values"].items():
                assert two["values"][key] == pytest.approx(value, abs=1e-6, nan_ok=True), key  # other batches
        (resumed,) = results["resumed"]
        for key in ("clip/delta", "clip/delta_ci", "clip/delta_count", "clip/count", "clip/mean"):
            assert resumed["values"][key] == pytest.approx(float(expected.values[key]), abs=1e-6), key


@pytest.mark.slow
def test_a_failure_on_one_rank_raises_on_both_and_main_process_only_never_hangs(tiny_clip_dir, tmp_path):
    _spawn(_failing_and_main_only_worker, (str(tmp_path / "init"), str(tiny_clip_dir), str(tmp_path)))
    assert Path(tmp_path, "rank1.txt").read_text() == "rank 1 ran out of memory"
    assert Path(tmp_path, "rank0.txt").read_text() == (
        "PromptEvaluator: rendering and scoring failed on 1 other rank(s) "
        "(rank 1: RuntimeError: rank 1 ran out of memory); see their logs for the traceback"
    )
    error = Path(tmp_path, "error.txt").read_text()
    assert "evaluate() was called on rank 0, but only 1 of 2 ranks called it within 3 s" in error
    assert "local=True" in error and "is_main_process" in error
    local = torch.load(tmp_path / "local.pt", weights_only=False)
    expected = _evaluator(str(tiny_clip_dir)).evaluate(checkpoint(0)).values
    assert local["clip/count"] == len(LIBRARY)
    for key, value in expected.items():
        assert local[key] == pytest.approx(float(value), abs=1e-6, nan_ok=True), key
