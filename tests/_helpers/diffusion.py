"""A tiny, randomly initialised diffusers text-to-image pipeline, built from configs.

A ``StableDiffusionPipeline`` of a two-block UNet, a two-block VAE, a two-layer CLIP text encoder
and the real CLIP tokenizer the package ships. Nothing is downloaded. Images are 32x32.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from _helpers.models import TINY_TEXT_CONFIG, TOKENIZER_DIR

SIZE = 32


def build_tiny_pipeline(seed: int = 0):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=SIZE // 2,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=2,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=SIZE,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(**TINY_TEXT_CONFIG))
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipeline = StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=CLIPTokenizer.from_pretrained(TOKENIZER_DIR),
        unet=unet.eval(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return pipeline


class TinyDiffusionModule(pl.LightningModule):
    """Holds a pipeline whose networks are registered submodules, so Lightning moves and
    switches them with the module; the pipeline itself is a plain attribute (not an nn.Module)."""

    def __init__(self, pipeline):
        super().__init__()
        self.unet = pipeline.unet
        self.vae = pipeline.vae
        self.text_encoder = pipeline.text_encoder
        self.pipeline = pipeline

    def build_pipeline(self):
        return self.pipeline

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", sum(p.float().mean() for p in self.unet.parameters()) * 0.0)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(2, 1)), batch_size=2)


def mixed_precision_pipeline(dtype: torch.dtype, seed: int = 0):
    """The tiny pipeline as diffusers' ``train_text_to_image.py --mixed_precision`` assembles it."""
    return as_mixed_precision(build_tiny_pipeline(seed), dtype)


def as_mixed_precision(pipeline, dtype: torch.dtype):
    """``pipeline`` as a mixed-precision fine-tune holds it: the vae and text encoder cast to
    ``dtype``; the unet keeps fp32 weights and runs the way ``accelerator.prepare`` wraps it (its
    forward under ``torch.autocast(dtype)``, outputs converted back to fp32)."""
    from accelerate.utils import convert_outputs_to_fp32

    pipeline.vae.to(dtype)
    pipeline.text_encoder.to(dtype)
    forward = pipeline.unet.forward

    def autocast_forward(*args, **kwargs):
        with torch.autocast(pipeline.unet.device.type, dtype=dtype):
            return forward(*args, **kwargs)

    pipeline.unet.forward = convert_outputs_to_fp32(autocast_forward)
    return pipeline
