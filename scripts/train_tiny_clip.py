"""Train the tiny CLIP model embedded in ``clip_metric/assets/tiny-clip`` on procedural scenes.

The model is a ``transformers.CLIPModel`` with two 64-wide transformer layers per tower, trained
contrastively on (image, caption) pairs from :mod:`clip_metric.shapes` using the real CLIP BPE
tokenizer already stored in the output directory. Each batch holds random scenes together with a
copy of every scene that differs in exactly one attribute, so the model learns to tell apart
captions that differ in a single word. Scenes that occur more than once in a batch are treated as
matches (soft targets), not as negatives.

Training runs on a compact vocabulary made of the few dozen tokens that occur in the captions;
the saved model has the full 49,408-token embedding of the CLIP tokenizer, with zero rows for
tokens the model never saw (so the 6.8 MB file gzips to about 0.4 MB). The weights are stored in
float16 (the 49,408 x 64 token embedding dominates the size) while ``config.json`` declares
float32, so consumers get a float32 model by default. The whole run is seeded and deterministic
on a given machine and thread count; it takes one to a few minutes on two CPU cores.

Usage::

    python scripts/train_tiny_clip.py                      # writes clip_metric/assets/tiny-clip
    python scripts/train_tiny_clip.py --out /tmp/tiny-clip --steps 500
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

from clip_metric.demos import EMBEDDED_MODEL_DIR, shapes
from clip_metric.testing import OPENAI_CLIP_MEAN as CLIP_MEAN
from clip_metric.testing import OPENAI_CLIP_STD as CLIP_STD
from clip_metric.testing import CLIPArchitecture, image_processor

DEFAULT_OUT = EMBEDDED_MODEL_DIR
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json")
IMAGE_SIZE = 32
BOS, EOS = 49406, 49407
# Seed of the held-out evaluation drawings; the training stream uses --seed.
EVAL_SEED = 10_000


def build_config(patch_size: int, vocab_size: int = 49408, bos: int = BOS, eos: int = EOS) -> CLIPConfig:
    architecture = CLIPArchitecture("embedded", IMAGE_SIZE, patch_size, (64, 2, 4), (64, 2, 4), 64, mlp_ratio=4)
    return architecture.config(vocab_size=vocab_size, bos_token_id=bos, eos_token_id=eos, pad_token_id=eos)


def build_image_processor() -> CLIPImageProcessor:
    return image_processor(IMAGE_SIZE)


class CaptionTable:
    """Token ids of every (scene, template) caption, padded to a common length.

    ``input_ids`` holds the real CLIP token ids; ``compact_ids`` the same captions in a compact
    vocabulary made of the ``used`` tokens only (``compact_ids == searchsorted(used, input_ids)``).
    """

    def __init__(self, tokenizer: CLIPTokenizerFast) -> None:
        self.scenes = list(shapes.all_scenes())
        self.index = {scene: i for i, scene in enumerate(self.scenes)}
        texts = [shapes.caption(s, t) for s in self.scenes for t in range(shapes.NUM_TEMPLATES)]
        enc = tokenizer(texts, padding=True, return_tensors="pt")
        n, t = len(self.scenes), shapes.NUM_TEMPLATES
        self.input_ids = enc["input_ids"].view(n, t, -1)
        self.attention_mask = enc["attention_mask"].view(n, t, -1)
        self.used = torch.unique(torch.cat([self.input_ids.flatten(), torch.tensor([BOS, EOS])]))
        self.compact_ids = torch.searchsorted(self.used, self.input_ids)

    def compact_token(self, token: int) -> int:
        return int(torch.searchsorted(self.used, torch.tensor(token)))

    def lookup(
        self, ids: torch.Tensor, templates: torch.Tensor, compact: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        table = self.compact_ids if compact else self.input_ids
        return table[ids, templates], self.attention_mask[ids, templates]


def normalize_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, 32, 32) -> CLIP-normalised float, matching the saved image processor."""
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def make_batch(table: CaptionTable, batch_size: int, gen: torch.Generator):
    """Half random scenes, half one-attribute perturbations of them, with random templates."""
    half = batch_size // 2
    base = [shapes.random_scene(gen) for _ in range(half)]
    scenes = base + [shapes.perturb(s, gen) for s in base]
    ids = torch.tensor([table.index[s] for s in scenes])
    templates = torch.randint(shapes.NUM_TEMPLATES, (len(scenes),), generator=gen)
    input_ids, attention_mask = table.lookup(ids, templates, compact=True)
    pixels = normalize_pixels(shapes.draw_scenes(scenes, IMAGE_SIZE, generator=gen))
    return pixels, input_ids, attention_mask, ids


def clip_loss(outputs, ids: torch.Tensor) -> torch.Tensor:
    logits = outputs.logits_per_image  # (B, B), already scaled
    same = (ids[:, None] == ids[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)
    loss_i = torch.sum(-targets * F.log_softmax(logits, dim=1), dim=1).mean()
    loss_t = torch.sum(-targets * F.log_softmax(logits.t(), dim=1), dim=1).mean()
    return (loss_i + loss_t) / 2


def _embedding(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@torch.no_grad()
def evaluate(
    model: CLIPModel, table: CaptionTable, n_pairs: int = 400, seed: int = EVAL_SEED, compact: bool = False
) -> dict:
    """Held-out pair accuracy: matched caption vs a caption differing in one attribute."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    scenes = [shapes.random_scene(gen) for _ in range(n_pairs)]
    negatives = [shapes.perturb(s, gen) for s in scenes]
    pixels = normalize_pixels(shapes.draw_scenes(scenes, IMAGE_SIZE, generator=gen))
    image = F.normalize(_embedding(model.get_image_features(pixel_values=pixels)), dim=-1)
    result = {}
    for template in range(shapes.NUM_TEMPLATES):
        template_ids = torch.full((n_pairs,), template)
        texts = []
        for group in (scenes, negatives):
            ids, mask = table.lookup(torch.tensor([table.index[s] for s in group]), template_ids, compact)
            emb = _embedding(model.get_text_features(input_ids=ids, attention_mask=mask))
            texts.append(F.normalize(emb, dim=-1))
        pos = (image * texts[0]).sum(-1)
        neg = (image * texts[1]).sum(-1)
        result[f"template{template}"] = {
            "pair_accuracy": (pos > neg).float().mean().item(),
            "matched_cosine": pos.mean().item(),
            "mismatched_cosine": neg.mean().item(),
        }
        if template == 0:
            per_attr = {}
            for name in shapes.ATTRIBUTES:
                sel = torch.tensor([getattr(a, name) != getattr(b, name) for a, b in zip(scenes, negatives)])
                per_attr[name] = (pos[sel] > neg[sel]).float().mean().item()
            result["template0"]["per_attribute"] = per_attr
    model.train()
    return result


def expand_vocabulary(compact: CLIPModel, table: CaptionTable, patch_size: int) -> CLIPModel:
    """Full-vocabulary model with the compact model's weights; unseen tokens get zero rows."""
    model = CLIPModel(build_config(patch_size))
    state = compact.state_dict()
    key = "text_model.embeddings.token_embedding.weight"
    embedding = torch.zeros_like(model.state_dict()[key])
    embedding[table.used] = state[key]
    state[key] = embedding
    model.load_state_dict(state)
    return model.eval()


def save(model: CLIPModel, out: Path) -> None:
    model.half()
    model.save_pretrained(out, safe_serialization=True)
    # save_pretrained records the (half) parameter dtype; declare float32 so that consumers get a
    # float32 model by default (fp16 inference on CPU is slow or unsupported for some ops).
    model.config.dtype = "float32"
    model.config.save_pretrained(out)
    build_image_processor().save_pretrained(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    parser.add_argument(
        "--tokenizer", type=Path, default=DEFAULT_OUT, help="directory holding the CLIP tokenizer files"
    )
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps (0: at the end only)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    tokenizer = CLIPTokenizerFast.from_pretrained(args.tokenizer)
    table = CaptionTable(tokenizer)
    config = build_config(
        args.patch_size, len(table.used), table.compact_token(BOS), table.compact_token(EOS)
    )
    model = CLIPModel(config).train()
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"{n_params / 1e6:.3f}M trainable parameters ({len(table.used)} distinct tokens), "
        f"{len(table.scenes)} scenes, caption length {table.input_ids.shape[-1]}"
    )

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )

    def lr_factor(step: int) -> float:
        if step < args.warmup:
            return (step + 1) / args.warmup
        progress = (step - args.warmup) / max(1, args.steps - args.warmup)
        return 0.5 * (1.0 + torch.cos(torch.tensor(progress * torch.pi)).item())

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    gen = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    running = 0.0
    for step in range(args.steps):
        pixels, input_ids, attention_mask, ids = make_batch(table, args.batch_size, gen)
        outputs = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixels)
        loss = clip_loss(outputs, ids)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)  # at most 100, as in CLIP
        running += loss.item()
        if (step + 1) % args.log_every == 0:
            elapsed = time.perf_counter() - start
            print(
                f"step {step + 1}/{args.steps}  loss {running / args.log_every:.4f}  "
                f"scale {model.logit_scale.exp().item():.1f}  {elapsed:.0f}s",
                flush=True,
            )
            running = 0.0
        if args.eval_every and (step + 1) % args.eval_every == 0:
            t0 = evaluate(model, table, compact=True)["template0"]
            print(f"  eval: pair accuracy {t0['pair_accuracy']:.3f} {t0['per_attribute']}", flush=True)
    train_time = time.perf_counter() - start

    args.out.mkdir(parents=True, exist_ok=True)
    if args.out.resolve() != args.tokenizer.resolve():
        for name in TOKENIZER_FILES:
            shutil.copy2(args.tokenizer / name, args.out / name)
    save(expand_vocabulary(model, table, args.patch_size), args.out)

    # Evaluate the model exactly as stored (float16 weights loaded back as float32).
    stored = CLIPModel.from_pretrained(args.out, dtype=torch.float32)
    metrics = evaluate(stored, table)
    print(f"trained in {train_time:.0f}s; logit scale {stored.logit_scale.exp().item():.1f}")
    print(json.dumps(metrics, indent=2))
    size = sum(f.stat().st_size for f in args.out.iterdir() if f.name not in TOKENIZER_FILES)
    print(f"wrote {args.out} ({size / 1e6:.2f} MB besides the tokenizer files)")


if __name__ == "__main__":
    main()
