#!/usr/bin/env python
"""Fine-tune a Stable Diffusion unet the way diffusers' ``train_text_to_image.py`` does, with CLIP scores.

The structure of diffusers' ``examples/text_to_image/train_text_to_image.py``, cut to its bones:
an ``Accelerator(mixed_precision=...)``, the vae and text encoder frozen and cast to the weight
dtype (bf16 or fp16), the unet trained in fp32 under accelerate's autocast, ``save_state`` into
``checkpoint-N`` every ``--checkpointing_steps`` and then, at the same step, validation every
``--validation_steps``, and ``--resume_from_checkpoint latest``. Validation is where the lines of
``docs/accelerate.md`` go: a ``PromptEvaluator`` built on every process, registered for
checkpointing, evaluated on every process with a ``DiffusersGenerator`` bound to the pipeline
``log_validation`` builds, under ``log_validation``'s ``torch.autocast``.

It needs accelerate and diffusers: ``pip install -e ".[accelerate,diffusers]"``.
Without ``--pretrained_model_name_or_path`` a tiny random pipeline is built from configs (32x32
images) and the CLIP model is the one the package embeds, so it runs offline on a CPU::

    python examples/diffusers_train_text_to_image.py --cpu --mixed_precision bf16 --output_dir out
    accelerate launch --num_processes 2 --multi_gpu examples/diffusers_train_text_to_image.py \\
        --cpu --mixed_precision bf16 --output_dir out
    python examples/diffusers_train_text_to_image.py --cpu --mixed_precision bf16 --output_dir out \\
        --max_train_steps 12 --resume_from_checkpoint latest

The training noise of each step is drawn from a generator seeded with the step, so a resumed run
takes the same steps as a run that never stopped.

On the CPU use ``--mixed_precision bf16`` (or ``no``): ``fp16`` there is refused at the start, since
accelerate opens no fp16 autocast on the CPU (see :func:`refuse_fp16_on_the_cpu`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from torch.utils.data import DataLoader, TensorDataset
from transformers import CLIPTextModel, CLIPTokenizer

from clip_metric.demos import TOKENIZER_DIR, shapes
from clip_metric.demos.tiny_clip import embedded_model_path
from clip_metric.evaluation import PromptEvaluator
from clip_metric.lightning import DiffusersGenerator

IMAGE_SIZE = 32


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrained_model_name_or_path", default=None,
                        help="a diffusers pipeline (default: a tiny random one, built from configs)")
    parser.add_argument("--clip_model", default=None, help="CLIP model (default: the package's embedded one)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default="no")
    parser.add_argument("--max_train_steps", type=int, default=12)
    parser.add_argument("--train_batch_size", type=int, default=4, help="global batch, split across processes")
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--checkpointing_steps", type=int, default=4)
    parser.add_argument("--validation_steps", type=int, default=4)
    parser.add_argument("--resume_from_checkpoint", default=None, help='a checkpoint-N folder name, or "latest"')
    parser.add_argument("--num_validation_prompts", type=int, default=8)
    parser.add_argument("--num_inference_steps", type=int, default=2)
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even where a GPU is present")
    parser.add_argument("--json", action="store_true", help="print each evaluation as a JSON line")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def build_tiny_pipeline(path: str) -> str:
    """Save a tiny random Stable Diffusion pipeline (two-block unet and vae, two-layer text encoder) to ``path``."""
    from diffusers import DDIMScheduler
    from transformers import CLIPTextConfig

    from clip_metric.testing import TINY

    text = TINY.config().text_config.to_dict()
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "max_position_embeddings", "bos_token_id", "eos_token_id", "pad_token_id")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=IMAGE_SIZE // 2, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=text["hidden_size"], attention_head_dim=2, norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4, norm_num_groups=8,
        sample_size=IMAGE_SIZE,
    )
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    StableDiffusionPipeline(
        vae=vae, text_encoder=CLIPTextModel(CLIPTextConfig(**{k: text[k] for k in keys})),
        tokenizer=CLIPTokenizer.from_pretrained(TOKENIZER_DIR), unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    ).save_pretrained(path)
    return path


def refuse_fp16_on_the_cpu(accelerator: Accelerator) -> None:
    """Stop before any model is loaded when fp16 mixed precision is asked for on the CPU.

    accelerate keeps ``mixed_precision == "fp16"`` on the CPU but opens no autocast there (and no
    grad scaler), so the vae and text encoder cast to fp16 as diffusers' script casts them feed
    fp16 hidden states to the fp32 unet, which fails in its first linear layer ("mat1 and mat2
    must have the same dtype, but got Half and Float"). bf16 is autocast on the CPU.
    """
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise SystemExit(
            "error: --mixed_precision fp16 is not supported on the CPU: accelerate opens no fp16 autocast there, "
            "so the fp16 vae and text encoder would feed the fp32 unet; use --mixed_precision bf16 (or no) on the "
            "CPU, fp16 on a GPU"
        )


def scene_data(n: int, tokenizer: CLIPTokenizer, seed: int) -> tuple[TensorDataset, list[str]]:
    """Drawn scenes of coloured shapes with their captions: pixel values in [-1, 1] and token ids."""
    rng = random.Random(seed)
    scenes = [shapes.random_scene(rng) for _ in range(n)]
    captions = [shapes.caption(s, rng.randrange(shapes.NUM_TEMPLATES)) for s in scenes]
    images = shapes.draw_scenes(scenes, size=IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))
    ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    return TensorDataset(images.float() / 127.5 - 1, ids), captions


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision, cpu=args.cpu,
        project_config=ProjectConfiguration(project_dir=args.output_dir),
        dataloader_config=DataLoaderConfiguration(split_batches=True),
    )
    refuse_fp16_on_the_cpu(accelerator)
    set_seed(args.seed)
    model_path = args.pretrained_model_name_or_path
    if model_path is None:
        model_path = os.path.join(args.output_dir, "tiny-pipeline")
        if accelerator.is_main_process and not os.path.isdir(model_path):
            build_tiny_pipeline(model_path)
        accelerator.wait_for_everyone()

    noise_scheduler = DDPMScheduler.from_pretrained(model_path, subfolder="scheduler")
    tokenizer = CLIPTokenizer.from_pretrained(model_path, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(model_path, subfolder="text_encoder")
    vae = AutoencoderKL.from_pretrained(model_path, subfolder="vae")
    unet = UNet2DConditionModel.from_pretrained(model_path, subfolder="unet")
    vae.requires_grad_(False)
    text_encoder.requires_grad_(False)
    unet.train()

    # As diffusers does: the frozen models in the weight dtype, the trained unet in fp32.
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    vae.to(accelerator.device, dtype=weight_dtype)
    text_encoder.to(accelerator.device, dtype=weight_dtype)

    train_dataset, captions = scene_data(args.train_batch_size * 8, tokenizer, args.seed)
    train_dataloader = DataLoader(train_dataset, batch_size=args.train_batch_size, shuffle=False)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.learning_rate)
    unet, optimizer, train_dataloader = accelerator.prepare(unet, optimizer, train_dataloader)

    # The lines of docs/accelerate.md: one evaluator on every process, registered for checkpointing.
    clip_evaluator = PromptEvaluator(
        args.clip_model or embedded_model_path(), prompts=captions[: args.num_validation_prompts], batch_size=4,
        precision="32", scores_dir=os.path.join(args.output_dir, "clip_scores"),
    )
    accelerator.register_for_checkpointing(clip_evaluator)
    history: list[dict] = []

    def log_validation(global_step: int) -> None:
        pipeline = StableDiffusionPipeline.from_pretrained(
            model_path, vae=accelerator.unwrap_model(vae), text_encoder=accelerator.unwrap_model(text_encoder),
            tokenizer=tokenizer, unet=accelerator.unwrap_model(unet), safety_checker=None, dtype=weight_dtype,
        ).to(accelerator.device)
        generate = DiffusersGenerator(num_inference_steps=args.num_inference_steps).bind(pipeline)
        # diffusers' log_validation renders under this autocast; CLIP keeps its own precision under it.
        autocast_ctx = nullcontext() if torch.backends.mps.is_available() else torch.autocast(accelerator.device.type)
        with autocast_ctx:
            result = clip_evaluator.evaluate(generate, step=global_step, device=accelerator.device, modules=[unet])
        values = {f"clip/{k}": v for k, v in result.summary.items() if "/" not in k}
        accelerator.log(values, step=global_step)
        history.append({"step": global_step, **values})
        if args.json:
            accelerator.print(json.dumps({**history[-1], "processes": accelerator.num_processes}))
        else:
            delta = f", clip/delta {values['clip/delta']:+.4f}" if "clip/delta" in values else ""
            accelerator.print(f"step {global_step}: clip/mean {values['clip/mean']:.4f}{delta}")
        del pipeline

    num_update_steps_per_epoch = len(train_dataloader)
    num_train_epochs = math.ceil(args.max_train_steps / num_update_steps_per_epoch)
    global_step, first_epoch, resume_step = 0, 0, 0
    if args.resume_from_checkpoint:
        if args.resume_from_checkpoint != "latest":
            path = os.path.basename(args.resume_from_checkpoint)
        else:
            dirs = [d for d in os.listdir(args.output_dir) if d.startswith("checkpoint")]
            dirs = sorted(dirs, key=lambda x: int(x.split("-")[1]))
            path = dirs[-1] if dirs else None
        if path is None:
            accelerator.print(f"Checkpoint '{args.resume_from_checkpoint}' does not exist. Starting a new run.")
        else:
            accelerator.print(f"Resuming from checkpoint {path}")
            accelerator.load_state(os.path.join(args.output_dir, path))
            global_step = int(path.split("-")[1])
            first_epoch, resume_step = divmod(global_step, num_update_steps_per_epoch)

    for epoch in range(first_epoch, num_train_epochs):
        unet.train()
        batches = train_dataloader
        if epoch == first_epoch and resume_step:
            batches = accelerator.skip_first_batches(train_dataloader, resume_step)
        for pixel_values, input_ids in batches:
            with accelerator.accumulate(unet):
                # Noise from the step's own generator: a resumed run draws what the straight run drew.
                seed = args.seed * 100_003 + global_step * 7919 + accelerator.process_index
                generator = torch.Generator().manual_seed(seed)
                latents = vae.encode(pixel_values.to(weight_dtype)).latent_dist.sample(generator)
                latents = latents * vae.config.scaling_factor
                noise = torch.randn(latents.shape, generator=generator).to(latents)
                timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                                          generator=generator).to(latents.device)
                noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
                encoder_hidden_states = text_encoder(input_ids, return_dict=False)[0]
                model_pred = unet(noisy_latents, timesteps, encoder_hidden_states, return_dict=False)[0]
                loss = F.mse_loss(model_pred.float(), noise.float(), reduction="mean")
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()

            if accelerator.sync_gradients:
                global_step += 1
                # diffusers' order: save the checkpoint, then validate at the same step.
                if global_step % args.checkpointing_steps == 0 and accelerator.is_main_process:
                    accelerator.save_state(os.path.join(args.output_dir, f"checkpoint-{global_step}"))
                if global_step % args.validation_steps == 0:
                    log_validation(global_step)  # on every process: each renders its share
            if global_step >= args.max_train_steps:
                break

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        pipeline = StableDiffusionPipeline.from_pretrained(
            model_path, text_encoder=accelerator.unwrap_model(text_encoder), vae=accelerator.unwrap_model(vae),
            unet=accelerator.unwrap_model(unet), safety_checker=None,
        )
        pipeline.save_pretrained(args.output_dir)
    accelerator.end_training()
    return history


if __name__ == "__main__":
    main()
