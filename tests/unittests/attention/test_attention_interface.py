"""transformers' ``"sdpa"`` attention function re-registered, and the per-model route around it.

A trainer can switch SageAttention on without touching torch: ``AttentionInterface.register("sdpa",
fn)`` or ``ALL_ATTENTION_FUNCTIONS["sdpa"] = fn`` replaces what every model with
``attn_implementation="sdpa"`` calls. These tests check that it is found, refused under
``"strict"``, undone by :func:`restored_attention`, and that CLIP never sees it: a model on
``"sdpa"`` is switched to the package's own function (route ``"model"``), any other model runs
with the originals swapped back (route ``"process"``); scores equal an unpatched run bit for bit.
"""

from __future__ import annotations

import copy
import pickle
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AttentionInterface,
    CLIPConfig,
    CLIPModel,
    CLIPTokenizerFast,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
)
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from clip_metric import ClipEncoder
from clip_metric.attention import (
    EXACT_ATTENTION,
    SageAttentionConflictError,
    check_attention,
    exact_sdpa_attention,
    find_sage_attention,
    original_sdpa,
    restored_attention,
    use_exact_attention,
)
from _helpers.models import TOKENIZER_DIR

SOURCE = "transformers.attention_functions"
# Prompts of different lengths, so padding masks matter.
PROMPTS = ["a cat", "a red circle on a blue background at the top left", "two dogs", "a very small green house"]
TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)


def _registry() -> tuple[object, object]:
    return AttentionInterface._global_mapping["sdpa"], ALL_ATTENTION_FUNCTIONS["sdpa"]


def _implementations(model) -> set[str]:
    configs = [getattr(module, "config", None) for module in model.modules()]
    return {config._attn_implementation for config in configs if hasattr(config, "_attn_implementation")}


def _clip_model(attn_implementation=None) -> CLIPModel:
    config = CLIPConfig(text_config=TOWER, vision_config=dict(TOWER, image_size=32, patch_size=8), projection_dim=16)
    torch.manual_seed(0)
    return CLIPModel._from_config(config, attn_implementation=attn_implementation).eval()


def _siglip_model() -> SiglipModel:
    config = SiglipConfig(
        text_config=dict(TOWER, vocab_size=49408, max_position_embeddings=64),
        vision_config=dict(TOWER, image_size=32, patch_size=8),
    )
    torch.manual_seed(0)
    return SiglipModel(config).eval()


# ------------------------------------------------------------------------------------------
# Detection


def test_clean_registry_has_no_findings():
    assert find_sage_attention() == []
    ALL_ATTENTION_FUNCTIONS["sdpa"] = sdpa_attention_forward  # transformers' own, assigned
    AttentionInterface.register("my_attention", lambda *args, **kwargs: None)  # another name
    assert find_sage_attention() == []


def test_registered_sdpa_is_a_finding(trainer):
    trainer.register_sage_sdpa()
    (finding,) = find_sage_attention()
    assert finding.source == SOURCE
    assert finding.detail == (
        'AttentionInterface "sdpa" is replaced by sageattention.core.sageattn wrapper `sage_attention_forward` '
        "(module sage_trainer.patches)"
    )


def test_assigned_sdpa_is_a_finding(trainer):
    trainer.assign_sage_sdpa()
    (finding,) = find_sage_attention()
    assert finding.source == SOURCE
    assert finding.detail.startswith('ALL_ATTENTION_FUNCTIONS["sdpa"] is replaced by sageattention.core.sageattn')


def test_other_sdpa_replacements_are_unknown(monkeypatch):
    def timed_sdpa(*args, **kwargs):
        return sdpa_attention_forward(*args, **kwargs)

    AttentionInterface.register("sdpa", timed_sdpa)
    (finding,) = find_sage_attention()
    assert "unknown replacement `test_other_sdpa_replacements_are_unknown.<locals>.timed_sdpa`" in finding.detail
    monkeypatch.delitem(AttentionInterface._global_mapping, "sdpa")
    (finding,) = find_sage_attention()
    assert finding.source == SOURCE and "missing" in finding.detail


def test_registry_is_only_read_once_transformers_is_imported(trainer, monkeypatch):
    trainer.register_sage_sdpa()
    monkeypatch.delitem(sys.modules, "transformers.modeling_utils")
    assert find_sage_attention() == []
    assert "transformers.modeling_utils" not in sys.modules


def test_every_place_is_reported(trainer, monkeypatch):
    monkeypatch.setattr(F, "scaled_dot_product_attention", trainer.sdpa)
    trainer.register_sage_sdpa()
    trainer.assign_sage_sdpa()
    sources = [finding.source for finding in find_sage_attention(config={"attention_mechanism": "sageattention"})]
    assert sources == ["torch.nn.functional", SOURCE, SOURCE, "config"]


# ------------------------------------------------------------------------------------------
# Undo: restored_attention


def test_restored_attention_puts_transformers_sdpa_back(trainer):
    trainer.register_sage_sdpa()
    trainer.assign_sage_sdpa()
    with restored_attention():
        assert _registry() == (sdpa_attention_forward, sdpa_attention_forward)
        assert "sdpa" not in ALL_ATTENTION_FUNCTIONS._local_mapping
        assert find_sage_attention() == []
    assert _registry() == (trainer.sage_attention_forward, trainer.sage_attention_forward)


def test_restored_attention_puts_the_registry_back_on_exception_and_undoes_changes_inside(trainer):
    trainer.register_sage_sdpa()
    with pytest.raises(KeyError, match="inside"), restored_attention():
        ALL_ATTENTION_FUNCTIONS["sdpa"] = trainer.logging_sdpa
        raise KeyError("inside")
    assert _registry() == (trainer.sage_attention_forward, trainer.sage_attention_forward)
    assert "sdpa" not in ALL_ATTENTION_FUNCTIONS._local_mapping


def test_restored_attention_leaves_a_clean_registry_alone():
    registered, assigned = dict(AttentionInterface._global_mapping), dict(ALL_ATTENTION_FUNCTIONS._local_mapping)
    with restored_attention():
        assert dict(AttentionInterface._global_mapping) == registered
    assert dict(ALL_ATTENTION_FUNCTIONS._local_mapping) == assigned


# ------------------------------------------------------------------------------------------
# Strict refuses it


def test_strict_refuses_registered_sdpa(trainer, tiny_clip_dir):
    trainer.register_sage_sdpa()
    with pytest.raises(SageAttentionConflictError, match='re-registered transformers "sdpa"') as info:
        check_attention("strict")
    assert [finding.source for finding in info.value.findings] == [SOURCE]
    with pytest.raises(SageAttentionConflictError, match="sage_attention_forward"):
        ClipEncoder.from_pretrained(tiny_clip_dir, attention_policy="strict")


def test_strict_refuses_a_registration_made_after_the_encoder(trainer, tiny_clip_dir):
    encoder = ClipEncoder.from_pretrained(tiny_clip_dir, precision="32", attention_policy="strict")
    assert encoder.attention_route is None and _implementations(encoder.model) == {"sdpa"}
    trainer.assign_sage_sdpa()
    with pytest.raises(SageAttentionConflictError, match="ALL_ATTENTION_FUNCTIONS"):
        encoder.encode_texts(PROMPTS)
    assert trainer.calls == []


# ------------------------------------------------------------------------------------------
# The per-model route


@pytest.mark.parametrize("build", [_clip_model, _siglip_model], ids=["clip", "siglip"])
def test_use_exact_attention_switches_every_attention_layer(build):
    model = build()
    assert _implementations(model) == {"sdpa"}
    assert use_exact_attention(model)
    assert _implementations(model) == {EXACT_ATTENTION}
    assert ALL_ATTENTION_FUNCTIONS[EXACT_ATTENTION] is exact_sdpa_attention
    assert use_exact_attention(model)  # already switched


class Wrapped(nn.Module):
    """A CLIP-family model of its own, which transformers' attention interface cannot switch."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    @property
    def config(self):
        return self.inner.config

    def get_image_features(self, **inputs):
        return self.inner.get_image_features(**inputs)

    def get_text_features(self, **inputs):
        return self.inner.get_text_features(**inputs)


def test_use_exact_attention_leaves_other_models_as_they_are(monkeypatch):
    eager = _clip_model(attn_implementation="eager")
    assert not use_exact_attention(eager) and _implementations(eager) == {"eager"}
    mixed = _clip_model(attn_implementation={"text_config": "eager", "vision_config": "sdpa"})
    before = _implementations(mixed)
    assert not use_exact_attention(mixed) and _implementations(mixed) == before
    wrapped = Wrapped(_clip_model())
    assert not use_exact_attention(wrapped) and _implementations(wrapped) == {"sdpa"}
    refusing = _clip_model()
    monkeypatch.setattr(type(refusing), "set_attn_implementation", lambda self, name: None)
    assert not use_exact_attention(refusing)
    for other in (nn.Linear(2, 2), object(), None):
        assert not use_exact_attention(other)


# transformers never asks for both a mask and causal attention.
@pytest.mark.parametrize(
    ("mask", "is_causal"),
    [("none", None), ("none", False), ("none", True), ("bool", None), ("bool", False), ("float", None),
     ("float", False)],
)
def test_exact_attention_equals_transformers_sdpa(mask, is_causal):
    torch.manual_seed(0)
    query, key, value = (torch.randn(2, 4, 6, 8) for _ in range(3))
    masks = {
        "none": None,
        "bool": torch.ones(2, 1, 6, 6, dtype=torch.bool).tril(),
        "float": torch.zeros(2, 1, 6, 6).masked_fill(torch.ones(6, 6, dtype=torch.bool).triu(1), float("-inf")),
    }
    module = nn.Module()
    module.is_causal = True
    args = (module, query, key, value, masks[mask])
    kwargs = dict(dropout=0.0, scaling=0.3, is_causal=is_causal)
    expected, _ = sdpa_attention_forward(*args, **kwargs)
    output, weights = exact_sdpa_attention(*args, **kwargs)
    assert weights is None
    assert torch.equal(output, expected)


def test_exact_attention_falls_back_where_it_does_not_mirror_transformers(trainer, monkeypatch):
    torch.manual_seed(0)
    query = torch.randn(1, 4, 5, 8)
    key, value = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    module = nn.Module()
    module.num_key_value_groups = 2
    module.is_causal = True
    expected, _ = sdpa_attention_forward(module, query, key, value, None, scaling=0.3)
    monkeypatch.setattr(F, "scaled_dot_product_attention", trainer.sdpa)
    output, _ = exact_sdpa_attention(module, query, key, value, None, scaling=0.3)
    assert torch.equal(output, expected)
    assert trainer.calls == [] and F.scaled_dot_product_attention is trainer.sdpa


def _patch_everything(trainer, monkeypatch) -> None:
    monkeypatch.setattr(F, "scaled_dot_product_attention", trainer.sdpa)
    trainer.register_sage_sdpa()
    trainer.assign_sage_sdpa()


def _watch_attention(model) -> list[tuple[object, object]]:
    """(torch's function, transformers' "sdpa") as every attention layer sees them when it runs."""
    seen: list[tuple[object, object]] = []
    for module in model.modules():
        if type(module).__name__.endswith("Attention"):
            module.register_forward_pre_hook(lambda *_: seen.append((F.scaled_dot_product_attention, _registry()[1])))
    return seen


def test_encoder_uses_the_per_model_route(tiny_clip_dir, trainer, monkeypatch):
    encoder = ClipEncoder.from_pretrained(tiny_clip_dir, precision="32")
    assert encoder.attention_route == "model"
    assert _implementations(encoder.model) == {EXACT_ATTENTION}
    _patch_everything(trainer, monkeypatch)
    seen = _watch_attention(encoder.model)
    encoder.encode_texts(PROMPTS)
    # Nothing process-wide was swapped: the attention layers ran with the patches in place.
    assert seen and set(seen) == {(trainer.sdpa, trainer.sage_attention_forward)}
    assert trainer.calls == []


def test_encoder_falls_back_to_the_process_wide_swap(tiny_clip_dir, trainer, monkeypatch):
    reference = ClipEncoder.from_pretrained(tiny_clip_dir, precision="32", attention_policy="ignore")
    encoder = ClipEncoder.build(Wrapped(copy.deepcopy(reference.model)), (reference.tokenizer, None), precision="32")
    assert encoder.attention_route == "process"
    assert _implementations(encoder.model) == {"sdpa"}
    _patch_everything(trainer, monkeypatch)
    seen = _watch_attention(encoder.model)
    encoder.encode_texts(PROMPTS)
    assert seen and set(seen) == {(original_sdpa(), sdpa_attention_forward)}
    assert trainer.calls == []
    assert F.scaled_dot_product_attention is trainer.sdpa
    assert _registry() == (trainer.sage_attention_forward, trainer.sage_attention_forward)


def test_an_unpickled_encoder_registers_its_attention_again(tiny_clip_dir, monkeypatch):
    from transformers import AttentionMaskInterface

    encoder = ClipEncoder.from_pretrained(tiny_clip_dir, precision="32")
    expected = encoder.encode_texts(PROMPTS)
    state = pickle.dumps(encoder)
    # As in a new process (ddp_spawn), where nothing has registered the name yet.
    monkeypatch.delitem(AttentionInterface._global_mapping, EXACT_ATTENTION)
    monkeypatch.delitem(AttentionMaskInterface._global_mapping, EXACT_ATTENTION)
    copy_ = pickle.loads(state)
    assert copy_.attention_route == "model"
    assert ALL_ATTENTION_FUNCTIONS[EXACT_ATTENTION] is exact_sdpa_attention
    copy_.clear_text_cache()
    assert torch.equal(copy_.encode_texts(PROMPTS), expected)


@pytest.mark.parametrize("policy", ["strict", "ignore"])
def test_other_policies_leave_the_model_alone(tiny_clip_dir, policy):
    encoder = ClipEncoder.from_pretrained(tiny_clip_dir, precision="32", attention_policy=policy)
    assert encoder.attention_route is None
    assert _implementations(encoder.model) == {"sdpa"}


# ------------------------------------------------------------------------------------------
# Scores with the patches on equal scores without, bit for bit


@pytest.fixture(scope="module")
def models(tiny_clip_dir):
    from transformers import AutoImageProcessor, AutoModel

    tokenizer = CLIPTokenizerFast.from_pretrained(TOKENIZER_DIR)
    clip = AutoModel.from_pretrained(tiny_clip_dir, dtype=torch.float32)
    return {
        "clip": (clip, tokenizer, AutoImageProcessor.from_pretrained(tiny_clip_dir)),
        "siglip": (_siglip_model(), tokenizer, SiglipImageProcessor(size={"height": 32, "width": 32})),
    }


def _scores(models, kind, precision, policy="restore", wrapped=False):
    model, tokenizer, processor = models[kind]
    model = copy.deepcopy(model)
    encoder = ClipEncoder(Wrapped(model) if wrapped else model, tokenizer, processor, precision=precision,
                          attention_policy=policy)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    return encoder, encoder.score(images, PROMPTS)


@pytest.mark.parametrize("patches", ["torch", "registered", "assigned", "all"])
@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_scores_under_the_patches_equal_unpatched_scores(models, trainer, monkeypatch, kind, precision, patches):
    _, clean = _scores(models, kind, precision, "ignore")
    if patches in ("torch", "all"):
        monkeypatch.setattr(F, "scaled_dot_product_attention", trainer.sdpa)
    if patches in ("registered", "all"):
        trainer.register_sage_sdpa()
    if patches in ("assigned", "all"):
        trainer.assign_sage_sdpa()

    _, ignored = _scores(models, kind, precision, "ignore")
    assert trainer.calls, "the patch never ran"
    assert not torch.allclose(ignored, clean, atol=1e-3)  # the patch really corrupts the scores
    trainer.calls.clear()
    for wrapped, route in ((False, "model"), (True, "process")):
        encoder, restored = _scores(models, kind, precision, wrapped=wrapped)
        assert encoder.attention_route == route
        assert torch.equal(restored, clean), route
    assert trainer.calls == []
