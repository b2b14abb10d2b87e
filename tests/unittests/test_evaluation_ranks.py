"""``PromptEvaluator`` on two CPU processes (gloo) when ranks fail, arrive late or mix local and joint calls.

Every case ends in a barrier both ranks enter: a rank left inside a collective would hang
there, and the launch's hard timeout turns that into a failure.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from _helpers.checkpoints import PROMPTS, checkpoint
from _helpers.processes import spawn_two
from clip_metric.encoder import ClipEncoder
from clip_metric.evaluation import PromptEvaluator

LIBRARY = PROMPTS[:8]
JOIN = 2.0


def _outcome(fn) -> str:
    try:
        result = fn()
    except BaseException as err:  # noqa: BLE001  (KeyboardInterrupt is one of the cases)
        return f"{type(err).__name__}: {err}"
    return f"ok {float(result.values['clip/mean']):.9f}"


def _worker(rank: int, init_file: str, model_dir: str, out_dir: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        encoder = ClipEncoder.build(model_dir, precision="32", quiet=True)

        def evaluator(**kwargs) -> PromptEvaluator:  # built in the same order on both ranks
            return PromptEvaluator(encoder, prompts=LIBRARY, batch_size=4, join_timeout=JOIN, **kwargs)

        out: dict[str, str] = {}
        healthy = checkpoint(0)

        def failing(error: BaseException):
            def generate(prompts, seeds):
                if rank == 1:
                    raise error
                return healthy(prompts, seeds)
            return generate

        # An interrupt on rank 1 (the script catches it and saves before exiting).
        interrupted = evaluator()
        out["interrupt"] = _outcome(lambda: interrupted.evaluate(failing(KeyboardInterrupt())))
        dist.barrier()
        # A fault on rank 1: rank 0's error names it.
        faulty = evaluator()
        try:
            faulty.evaluate(failing(RuntimeError("INJECTED FAULT in generate " + "x" * 500)))
        except RuntimeError as err:
            out["fault"], out["fault_type"] = f"RuntimeError: {err}", type(err).__name__
            out["fault_causes"] = getattr(err, "causes", None)
        dist.barrier()
        # Rank 1 comes long after rank 0 gave up; then both enter a barrier.
        late = evaluator()
        if rank == 1:
            time.sleep(JOIN + 3)
        started = time.monotonic()
        out["late"] = _outcome(lambda: late.evaluate(healthy))
        out["late_seconds"] = f"{time.monotonic() - started:.1f}"
        dist.barrier()
        # Rank 0 alone times out (and catches it); then both evaluate together.
        alone = evaluator()
        if rank == 0:
            out["alone_first"] = _outcome(lambda: alone.evaluate(healthy))
        dist.barrier()
        alone.join_timeout = 120.0
        out["alone_then_both"] = _outcome(lambda: alone.evaluate(healthy))
        dist.barrier()
        # local=True on rank 0, then an evaluation both join: the ranks hold different previous scores.
        mixed = evaluator()
        if rank == 0:
            out["local"] = _outcome(lambda: mixed.evaluate(healthy, local=True))
        mixed.join_timeout = 120.0
        out["mixed"] = _outcome(lambda: mixed.evaluate(healthy))
        dist.barrier()
        torch.save(out, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _spawn(fn, args, timeout: float = 300.0) -> None:
    spawn_two(fn, args, timeout)


@pytest.mark.slow
def test_failures_late_ranks_and_mixed_local_calls_never_hang_and_every_rank_names_the_cause(tiny_clip_dir, tmp_path):
    _spawn(_worker, (str(tmp_path / "init"), str(tiny_clip_dir), str(tmp_path)))
    zero, one = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2))

    # An interrupt: rank 1 re-raises it once rank 0 knows; rank 0's error says what happened there.
    assert one["interrupt"] == "KeyboardInterrupt: "
    assert zero["interrupt"] == (
        "OtherRankError: PromptEvaluator: rendering and scoring failed on 1 other rank(s) "
        "(rank 1: KeyboardInterrupt); see their logs for the traceback"
    )
    # A fault: its type and (shortened) message reach rank 0.
    assert one["fault"].startswith("RuntimeError: INJECTED FAULT in generate xxx")
    assert "(rank 1: RuntimeError: INJECTED FAULT in generate xxx" in zero["fault"]
    assert "..." in zero["fault"] and len(zero["fault"]) < 500
    assert one["fault_type"] == "RuntimeError" and zero["fault_type"] == "OtherRankError"
    assert set(zero["fault_causes"]) == {1} and zero["fault_causes"][1].startswith("RuntimeError: INJECTED FAULT")

    # Late: rank 0 raises after its timeout; rank 1 raises too (it never runs alone into collectives).
    assert zero["late"].startswith("RuntimeError: PromptEvaluator.evaluate() was called on rank 0, but only 1 of 2")
    assert JOIN <= float(zero["late_seconds"]) < JOIN + 3
    assert one["late"].startswith("RuntimeError: PromptEvaluator.evaluate() was called on rank 1, but only 1 of 2")

    # Alone, then together: the joint evaluation works, with the same values on both ranks.
    assert zero["alone_first"].startswith("RuntimeError: PromptEvaluator.evaluate() was called on rank 0")
    assert zero["alone_then_both"].startswith("ok ") and zero["alone_then_both"] == one["alone_then_both"]

    # local=True mixed with a joint evaluation: a clear error on both ranks, never wrong pairs.
    assert zero["local"].startswith("ok ")
    for out in (zero, one):
        assert out["mixed"].startswith("RuntimeError: PromptEvaluator: the ranks hold different previous evaluations")
        assert "rank 0: a local=True evaluation of 8 prompts" in out["mixed"] and "rank 1: none" in out["mixed"]
        assert "forget_previous()" in out["mixed"]
