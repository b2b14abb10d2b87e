"""ClipScore and ClipScoreCallback under a SageAttention patch of torch's SDPA.

The stand-in ``sageattention`` (tests/_helpers/fake_packages) drops attention masks like the real
one, so CLIP's text tower (causal + padding masks) gives wrong embeddings under the patch unless
CLIP runs with exact attention.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F

from clip_metric import ClipEncoder, ClipScore, ClipScoreCallback
from clip_metric.attention import SageAttentionConflictError, original_sdpa
from _helpers.t2i import TinyTextToImage

FAKE_PACKAGES = Path(__file__).resolve().parents[2] / "_helpers" / "fake_packages"
# Prompts of different lengths, so padding masks matter.
PROMPTS = ["a cat", "a red circle on a blue background at the top left", "two dogs", "a very small green house"]


@pytest.fixture
def sage_patch(monkeypatch):
    monkeypatch.syspath_prepend(str(FAKE_PACKAGES))
    for name in [n for n in sys.modules if n.split(".")[0] in ("sageattention", "sage_trainer")]:
        monkeypatch.delitem(sys.modules, name)
    patches = importlib.import_module("sage_trainer.patches")
    monkeypatch.setattr(F, "scaled_dot_product_attention", patches.sdpa)
    yield patches
    monkeypatch.setattr(F, "scaled_dot_product_attention", original_sdpa())


@pytest.fixture
def images():
    return torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))


def _scores(model_dir, images, policy):
    encoder = ClipEncoder.from_pretrained(model_dir, precision="32", attention_policy=policy)
    return encoder.score(images, PROMPTS)


def test_restore_policy_gives_unpatched_scores(tiny_clip_dir, images, sage_patch):
    patched_ignored = _scores(tiny_clip_dir, images, "ignore")
    restored = _scores(tiny_clip_dir, images, "restore")
    assert sage_patch.calls  # the patched kernel really ran under "ignore"
    F.scaled_dot_product_attention = original_sdpa()
    clean = _scores(tiny_clip_dir, images, "restore")
    assert not torch.allclose(patched_ignored, clean, atol=1e-4)  # the patch does corrupt CLIP
    assert torch.equal(restored, clean)


def test_metric_restore_equals_clean_and_leaves_patch_in_place(tiny_clip_dir, images, sage_patch):
    metric = ClipScore(tiny_clip_dir, precision="32")
    metric.update(images, PROMPTS)
    under_patch = metric.compute()["clip/mean"]
    assert F.scaled_dot_product_attention is sage_patch.sdpa
    F.scaled_dot_product_attention = original_sdpa()
    clean = ClipScore(tiny_clip_dir, precision="32")
    clean.update(images, PROMPTS)
    assert float(under_patch) == float(clean.compute()["clip/mean"])


def test_metric_restore_equals_clean_under_a_re_registered_sdpa(tiny_clip_dir, images, sage_patch):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

    sage_patch.register_sage_sdpa()
    sage_patch.assign_sage_sdpa()
    metric = ClipScore(tiny_clip_dir, precision="32")
    metric.update(images, PROMPTS)
    under_patch = metric.compute()["clip/mean"]
    assert sage_patch.calls == []
    F.scaled_dot_product_attention = original_sdpa()
    AttentionInterface.register("sdpa", sdpa_attention_forward)
    del ALL_ATTENTION_FUNCTIONS["sdpa"]
    clean = ClipScore(tiny_clip_dir, precision="32", attention_policy="ignore")
    clean.update(images, PROMPTS)
    assert float(under_patch) == float(clean.compute()["clip/mean"])


def test_strict_policy_fails_naming_both_switches(tiny_clip_dir, sage_patch):
    with pytest.raises(SageAttentionConflictError, match="attention_policy='restore'") as info:
        ClipScore(tiny_clip_dir, attention_policy="strict")
    assert "sageattention" in str(info.value).lower()


def test_callback_strict_fails_at_setup_before_training(tmp_path, tiny_clip_dir, sage_patch):
    module = TinyTextToImage()
    callback = ClipScoreCallback(tiny_clip_dir, prompts=PROMPTS, attention_policy="strict", precision="32")
    trainer = pl.Trainer(default_root_dir=tmp_path, max_epochs=1, logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, callbacks=[callback])
    with pytest.raises(SageAttentionConflictError):
        trainer.fit(module)
    assert trainer.global_step == 0


def test_callback_default_scores_equal_unpatched(tmp_path, tiny_clip_dir, sage_patch):
    def validate():
        pl.seed_everything(0)
        callback = ClipScoreCallback(tiny_clip_dir, prompts=PROMPTS, precision="32")
        trainer = pl.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                             callbacks=[callback], limit_val_batches=1)
        return trainer.validate(TinyTextToImage())[0]["clip/mean"]

    patched = validate()
    F.scaled_dot_product_attention = original_sdpa()
    assert patched == validate()


def test_callback_reports_sage_config_of_module(tmp_path, tiny_clip_dir, caplog):
    import logging

    class SageModule(TinyTextToImage):
        def __init__(self):
            super().__init__()
            self.hparams["attention_mechanism"] = "sageattention"

    callback = ClipScoreCallback(tiny_clip_dir, prompts=PROMPTS, precision="32", attention_policy="strict")
    trainer = pl.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False, callbacks=[callback])
    with pytest.raises(SageAttentionConflictError, match="attention_mechanism"):
        trainer.validate(SageModule())
    callback = ClipScoreCallback(tiny_clip_dir, prompts=PROMPTS, precision="32")
    trainer = pl.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False, callbacks=[callback],
                         limit_val_batches=1)
    with caplog.at_level(logging.INFO, logger="clip_metric"):
        trainer.validate(SageModule())
    assert "attention_mechanism" in caplog.text
