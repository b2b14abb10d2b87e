"""The score signature: what it pins down, and that nothing else moves it."""

from __future__ import annotations

import pytest
import torch

from clip_metric import ClipEncoder
from clip_metric.prompts import load_prompt_library
from clip_metric.signature import SEED_RULE, ScoreSignature, library_hash, signature_of

TEXTS = ["a red circle", "two green squares"]


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir):
    return ClipEncoder.from_pretrained(tiny_clip_dir, precision="32")


def test_fields_and_string(encoder):
    signature = signature_of(encoder, scale="cosine", library="default", texts=TEXTS)
    assert signature.model.startswith("local:") and signature.precision == "32" and signature.seed == SEED_RULE
    assert signature.image == "short32,bicubic+aa,crop32x32"
    assert signature.prompts == f"default#{library_hash(TEXTS)},n2,all"
    text = str(signature)
    assert text.startswith("clip-metric ") and "|precision:32|" in text and text.endswith("|images/prompt:1")
    assert ScoreSignature.from_dict(signature.as_dict()) == signature


def test_same_settings_same_signature_whatever_the_batch_and_cache(tiny_clip_dir, encoder):
    first = signature_of(encoder, scale="cosine", library="default", texts=TEXTS)
    encoder.score(torch.zeros(3, 3, 32, 32, dtype=torch.uint8), ["a", "b", "c"])  # use it; fill the cache
    again = ClipEncoder.from_pretrained(tiny_clip_dir, precision="32")
    assert signature_of(again, scale="cosine", library="default", texts=TEXTS) == first


def test_every_number_changing_setting_changes_the_signature(tmp_path, tiny_clip_dir, encoder):
    from _helpers.models import build_tiny_clip

    base = signature_of(encoder, scale="cosine", library="default", texts=TEXTS)
    other_weights = ClipEncoder.from_pretrained(build_tiny_clip(tmp_path / "other", seed=1), precision="32")
    changed = {
        "model": signature_of(other_weights, scale="cosine", library="default", texts=TEXTS),
        "precision": signature_of(
            ClipEncoder.from_pretrained(tiny_clip_dir, precision="bf16-mixed"), scale="cosine", library="default",
            texts=TEXTS,
        ),
        "scale": signature_of(encoder, scale="clipscore", library="default", texts=TEXTS),
        "prompts": signature_of(encoder, scale="cosine", library="default", texts=TEXTS[::-1]),
        "images_per_prompt": signature_of(encoder, scale="cosine", library="default", texts=TEXTS, images_per_prompt=4),
    }
    for field, signature in changed.items():
        differences = base.differences(signature)
        assert [d.split(":")[0] for d in differences] == [field], differences
    assert base.differences(changed["precision"]) == ["precision: 32 vs bf16-mixed"]


def test_hub_ids_carry_their_revision(encoder, monkeypatch):
    clone = ClipEncoder.__new__(ClipEncoder)
    clone.__dict__.update({k: v for k, v in encoder.__dict__.items() if k != "_fingerprint"})
    clone._source = ("openai/clip-vit-base-patch32", {"revision": "abc123"})
    assert signature_of(clone, scale="cosine", library="x", texts=TEXTS).model == "openai/clip-vit-base-patch32@abc123"


def test_library_subset_and_parti():
    parti = load_prompt_library("parti")
    assert library_hash([p.text for p in parti]) == library_hash([p.text for p in load_prompt_library("parti")])
    assert library_hash([p.text for p in load_prompt_library("parti", 64)]) != library_hash([p.text for p in parti])


def test_from_dict_names_missing_fields():
    with pytest.raises(ValueError, match="without \\['precision'"):
        ScoreSignature.from_dict({"version": "1", "model": "m", "image": "i"})
