"""CUDA-only checks: device placement, precision defaults and offloading (skipped without a GPU)."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from clip_metric import ClipEncoder, ClipScore, ClipScoreCallback
from _helpers.data import PROMPTS
from _helpers.reference import drawn_scenes
from _helpers.t2i import TinyTextToImage

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_auto_precision_on_cuda_is_half_and_close_to_fp32():
    from clip_metric.demos.tiny_clip import embedded_model_path

    images, captions = drawn_scenes(96, seed=7)
    images = images.cuda()
    fast = ClipEncoder.from_pretrained(embedded_model_path(), device="cuda")
    exact = ClipEncoder.from_pretrained(embedded_model_path(), device="cuda", precision="32")
    assert fast.active_precision in ("bf16-mixed", "16-mixed")
    diff = (fast.score(images, captions) - exact.score(images, captions)).abs().max()
    assert diff <= 2e-3


def test_preprocessing_runs_on_the_gpu(tiny_clip_dir, uint8_images):
    encoder = ClipEncoder.from_pretrained(tiny_clip_dir, device="cuda", precision="32")
    assert encoder.preprocess(uint8_images).device.type == "cuda"  # CPU input is moved first, as uint8
    cpu = ClipEncoder.from_pretrained(tiny_clip_dir, precision="32")
    # uint8 is resized in uint8 on the CPU and in float on the GPU: they differ by that rounding.
    assert torch.allclose(encoder.score(uint8_images, PROMPTS).cpu(), cpu.score(uint8_images, PROMPTS), atol=1e-3)
    exact_size = uint8_images[..., :32, :32]  # no resize: the same arithmetic on both devices
    assert torch.allclose(encoder.score(exact_size, PROMPTS).cpu(), cpu.score(exact_size, PROMPTS), atol=1e-4)


def test_lightning_module_moves_metric_and_encoder(tiny_clip_dir):
    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.clip = ClipScore(tiny_clip_dir)

    module = Module().to("cuda")
    assert module.clip.encoder.device.type == "cuda"
    module.to("cpu")
    assert module.clip.encoder.device.type == "cpu"


def test_offload_returns_gpu_memory_between_evaluations(tmp_path, tiny_clip_dir):
    callback = ClipScoreCallback(tiny_clip_dir, prompts=PROMPTS, offload=True, precision="32")
    trainer = pl.Trainer(default_root_dir=tmp_path, accelerator="cuda", devices=1, logger=False,
                         enable_progress_bar=False, limit_val_batches=1, max_epochs=1, limit_train_batches=2,
                         enable_checkpointing=False, callbacks=[callback])
    trainer.fit(TinyTextToImage())
    assert callback.encoder.device.type == "cpu"
    assert len(callback.history) == 1
