"""Two CPU processes over gloo give the single-process values, whatever the split."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from clip_metric import ClipScore

PROMPTS = [f"prompt number {i} with a {c} ball" for i, c in enumerate(["red", "blue", "green"] * 2)]
# Uneven shards, and a split where rank 1 sees nothing at all.
SPLITS = {"uneven": [[0, 1, 2, 3, 4], [5]], "rank_without_samples": [[0, 1, 2, 3, 4, 5], []]}


def _images() -> torch.Tensor:
    return torch.randint(0, 256, (6, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))


def _worker(rank: int, world_size: int, init_file: str, model_dir: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        images = _images()
        results = {}
        for name, split in SPLITS.items():
            metric = ClipScore(model_dir, precision="32", keep_scores=True)
            mine = split[rank]
            # One sample per update: batch boundaries differ from the single-process run too.
            for index in mine:
                metric.update(images[index : index + 1], [PROMPTS[index]], ids=[index])
            results[name] = ({k: float(v) for k, v in metric.compute().items()}, metric.per_sample())
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_gloo_matches_single_process(tiny_clip_dir, tmp_path):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tiny_clip_dir), str(tmp_path)), nprocs=2, join=True)

    single = ClipScore(tiny_clip_dir, precision="32", keep_scores=True)
    single.update(_images(), PROMPTS, ids=list(range(6)))
    expected = {k: float(v) for k, v in single.compute().items()}
    _, expected_scores = single.per_sample()

    for rank in range(2):
        results = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        for name in SPLITS:
            values, (ids, scores) = results[name]
            assert values.keys() == expected.keys()
            for key, value in expected.items():
                assert values[key] == pytest.approx(value, abs=1e-6), (name, rank, key)
            order = torch.argsort(ids)
            assert ids[order].tolist() == list(range(6))
            assert torch.allclose(scores[order], expected_scores, atol=1e-6)
