#!/usr/bin/env python
"""Train a tiny text-to-image model with accelerate and track its CLIP score while it trains.

A self-contained training script in the style of diffusers' examples: an ``Accelerator``, a
model, an optimizer, a data loader and a loop; every ``--eval-every`` steps (and at the end)
every process renders its share of a prompt library with the model under training, the scores
are synced, and the main process prints ``clip/mean`` (and, from the second evaluation on, the
paired ``clip/delta``). The data are drawn scenes of coloured shapes and the CLIP model is the
one the package embeds, so it runs offline on a CPU in a minute.

It needs accelerate: ``pip install -e ".[accelerate]"`` (or ``pip install accelerate``).
One process, two processes (gloo on the CPU), or GPUs::

    python examples/accelerate_text_to_image.py
    accelerate launch --num_processes 2 --multi_gpu examples/accelerate_text_to_image.py --cpu
    accelerate launch --num_processes 8 --multi_gpu examples/accelerate_text_to_image.py

Every global batch is split across the processes (``split_batches``), so 1 and 2 processes
train the same model and print the same scores (to float32 rounding). ``--main-process-only`` evaluates under
``if accelerator.is_main_process:`` instead, on that process alone (``local=True``).
"""

from __future__ import annotations

import argparse
import json
import random

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from clip_metric.demos import shapes
from clip_metric.demos.tiny_clip import embedded_model_path
from clip_metric.evaluation import PromptEvaluator

IMAGE_SIZE = 32
VOCABULARY = sorted({word for scene in shapes.all_scenes() for t in range(shapes.NUM_TEMPLATES)
                     for word in shapes.caption(scene, t).replace(",", "").split()})


def tokenize(prompts: list[str]) -> torch.Tensor:
    """Word ids, padded with -1 (unknown words are dropped)."""
    index = {word: i for i, word in enumerate(VOCABULARY)}
    ids = [[index[w] for w in p.replace(",", "").lower().split() if w in index] for p in prompts]
    width = max(len(row) for row in ids)
    return torch.tensor([row + [-1] * (width - len(row)) for row in ids])


class TinyTextToImage(nn.Module):
    """Mean of word embeddings, then an MLP to a 32x32 RGB image in [0, 1], plus seeded noise."""

    def __init__(self, hidden: int = 256) -> None:
        super().__init__()
        self.embed = nn.Embedding(len(VOCABULARY), hidden)
        self.decoder = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 3 * IMAGE_SIZE**2))

    def forward(self, ids: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        mask = (ids >= 0).unsqueeze(-1).float()
        words = self.embed(ids.clamp(min=0)) * mask
        features = words.sum(1) / mask.sum(1).clamp(min=1)
        logits = self.decoder(features).view(-1, 3, IMAGE_SIZE, IMAGE_SIZE)
        return torch.sigmoid(logits + 0.1 * noise)

    @torch.no_grad()
    def generate(self, prompts: list[str], seeds: list[int]) -> torch.Tensor:
        """One image per prompt, its noise drawn from the prompt's seed (the same at every evaluation)."""
        device = next(self.parameters()).device
        noise = torch.stack([
            torch.randn(3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed)) for seed in seeds
        ])
        return self(tokenize(prompts).to(device), noise.to(device))


def scene_data(n: int, seed: int) -> TensorDataset:
    rng = random.Random(seed)
    scenes = [shapes.random_scene(rng) for _ in range(n)]
    captions = [shapes.caption(s, rng.randrange(shapes.NUM_TEMPLATES)) for s in scenes]
    images = shapes.draw_scenes(scenes, size=IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))
    return TensorDataset(tokenize(captions), images.float() / 255)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-train-steps", type=int, default=60)
    parser.add_argument("--train-batch-size", type=int, default=64, help="global batch, split across processes")
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--eval-every", type=int, default=20, help="evaluate every N optimizer steps")
    parser.add_argument("--num-prompts", type=int, default=128, help="validation prompts (drawn captions)")
    parser.add_argument("--target-ci", type=float, default=None, help="stop each evaluation at this interval")
    parser.add_argument("--output-dir", default=None, help="write score files here (clip-metric compare reads them)")
    parser.add_argument("--main-process-only", action="store_true", help="evaluate on the main process alone")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even where a GPU is present")
    parser.add_argument("--json", action="store_true", help="print each evaluation as a JSON line")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    args = parse_args(argv)
    accelerator = Accelerator(cpu=args.cpu, dataloader_config=DataLoaderConfiguration(split_batches=True))
    set_seed(args.seed)
    model = TinyTextToImage()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    train = scene_data(args.max_train_steps * args.train_batch_size, seed=args.seed)
    loader = DataLoader(train, batch_size=args.train_batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(args.seed))
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)

    # Built on every process, like the model: the library is split across them at each evaluation.
    rng = random.Random(1234)
    prompts = [shapes.caption(shapes.random_scene(rng), i % shapes.NUM_TEMPLATES) for i in range(args.num_prompts)]
    evaluator = PromptEvaluator(
        embedded_model_path(), prompts=prompts, batch_size=32, precision="32", target_ci=args.target_ci,
        scores_dir=args.output_dir,
    )
    history: list[dict[str, float]] = []

    def evaluate(step: int) -> None:
        generate = accelerator.unwrap_model(model).generate
        if args.main_process_only:
            # Only the main process evaluates: local=True renders the whole library here, with no
            # collective (without it, evaluate() would raise: the other processes never join).
            if accelerator.is_main_process:
                result = evaluator.evaluate(generate, step=step, device=accelerator.device, modules=[model], local=True)
                report(step, result.summary)
            accelerator.wait_for_everyone()
            return
        # Every process takes part: each renders its share, the scores are synced.
        result = evaluator.evaluate(generate, step=step, device=accelerator.device, modules=[model])
        report(step, result.summary)

    def report(step: int, summary: dict[str, float]) -> None:
        values = {f"clip/{k}": v for k, v in summary.items() if "/" not in k}
        accelerator.log(values, step=step)
        history.append({"step": step, **values})
        if args.json:
            accelerator.print(json.dumps({**history[-1], "processes": accelerator.num_processes}))
            return
        line = f"step {step}: clip/mean {values['clip/mean']:.4f} +/- {values['clip/mean_ci']:.4f}"
        if "clip/delta" in values:
            line += f", clip/delta {values['clip/delta']:+.4f} +/- {values['clip/delta_ci']:.4f}"
        accelerator.print(line + f" ({int(values['clip/count'])} prompts)")

    evaluate(0)  # before training: the baseline
    step = 0
    model.train()
    while step < args.max_train_steps:
        for ids, images in loader:
            # Noise-free targets: no process draws random numbers the others do not, so 1 and N
            # processes take the same steps.
            loss = nn.functional.mse_loss(model(ids, torch.zeros_like(images)), images)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            if step % args.eval_every == 0 or step == args.max_train_steps:
                evaluate(step)
            if step >= args.max_train_steps:
                break
    accelerator.end_training()
    return history


if __name__ == "__main__":
    main()
