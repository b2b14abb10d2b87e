"""SageAttention detection, the restore/strict/ignore policies, and exact CLIP under the patch.

A stand-in ``sageattention`` package (``tests/_helpers/fake_packages/sageattention``) behaves like
the real one where it matters here: ``sageattn`` has no attention-mask argument, so a mask handed
to the usual global ``scaled_dot_product_attention`` patch is silently dropped. It runs torch's
own kernel on CPU in fp32, so differences come from the dropped mask alone.
"""

from __future__ import annotations

import enum
import functools
import sys
import types
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clip_metric.attention import (
    ATTENTION_POLICIES,
    AttentionFinding,
    SageAttentionConflictError,
    check_attention,
    find_sage_attention,
    original_sdpa,
    restored_attention,
    sdpa_is_patched,
)


# ------------------------------------------------------------------------------------------
# The stand-in really drops masks


def test_stand_in_kernel_ignores_the_mask(sage):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 5, 8) for _ in range(3))
    mask = torch.ones(5, 5, dtype=torch.bool).tril()
    masked = original_sdpa()(q, k, v, attn_mask=mask)
    unmasked = original_sdpa()(q, k, v)
    assert torch.equal(sage.sageattn(q, k, v, attn_mask=mask), unmasked)
    assert not torch.allclose(masked, unmasked)
    assert sage.sageattn.__module__ == "sageattention.core"


# ------------------------------------------------------------------------------------------
# Clean process


def test_clean_process_has_no_findings():
    assert F.scaled_dot_product_attention is torch._C._nn.scaled_dot_product_attention
    assert original_sdpa() is torch._C._nn.scaled_dot_product_attention
    assert not sdpa_is_patched()
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    assert find_sage_attention() == []
    assert find_sage_attention(model, {"attention_mechanism": "diffusers"}) == []
    assert check_attention("strict", model, {"attention_mechanism": "diffusers"}) == []


def test_importing_sageattention_alone_is_not_a_finding(sage, trainer):
    assert find_sage_attention() == []


# ------------------------------------------------------------------------------------------
# (a) the global SDPA replacement


def test_detects_kernel_installed_directly(sage, monkeypatch):
    monkeypatch.setattr(F, "scaled_dot_product_attention", sage.sageattn)
    assert sdpa_is_patched()
    (finding,) = find_sage_attention()
    assert finding.source == "torch.nn.functional"
    assert "sageattention.core.sageattn" in finding.detail
    assert "unknown" not in finding.detail


@pytest.mark.parametrize(
    ("attribute", "wrapper_name"),
    [
        ("sdpa", "sdpa"),
        ("sdpa_module_attribute", "sdpa_module_attribute"),
        ("sdpa_wraps_torch", "sdpa_wraps_torch"),
        ("sdpa_local_import", "sdpa_local_import"),
    ],
)
def test_detects_wrappers_in_a_trainer_module(trainer, monkeypatch, attribute, wrapper_name):
    monkeypatch.setattr(F, "scaled_dot_product_attention", getattr(trainer, attribute))
    (finding,) = find_sage_attention()
    assert finding.source == "torch.nn.functional"
    assert "sageattention" in finding.detail
    assert f"`{wrapper_name}`" in finding.detail
    assert "(module sage_trainer.patches)" in finding.detail
    assert "unknown" not in finding.detail


def test_detects_wrapper_made_with_functools_wraps(sage, monkeypatch):
    @functools.wraps(sage.sageattn)
    def wrapper(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
        return sage.sageattn(q, k, v, is_causal=is_causal, sm_scale=scale)

    monkeypatch.setattr(F, "scaled_dot_product_attention", wrapper)
    (finding,) = find_sage_attention()
    assert "sageattention.core.sageattn" in finding.detail


def test_detects_through_a_wrapped_chain_only(sage, monkeypatch):
    """Nothing but ``__wrapped__`` (two levels deep) leads to the kernel."""

    def outer(*args, **kwargs):
        raise NotImplementedError

    def middle(*args, **kwargs):
        raise NotImplementedError

    middle.__wrapped__ = sage.sageattn
    outer.__wrapped__ = middle
    monkeypatch.setattr(F, "scaled_dot_product_attention", outer)
    (finding,) = find_sage_attention()
    assert "sageattention.core.sageattn" in finding.detail
    assert "`" in finding.detail and "outer" in finding.detail


def test_detects_functools_partial(sage, monkeypatch):
    monkeypatch.setattr(F, "scaled_dot_product_attention", functools.partial(sage.sageattn, tensor_layout="HND"))
    (finding,) = find_sage_attention()
    assert "sageattention.core.sageattn" in finding.detail


def test_detects_closure(sage, monkeypatch):
    kernel = sage.sageattn

    def closure_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
        return kernel(q, k, v, is_causal=is_causal, sm_scale=scale)

    monkeypatch.setattr(F, "scaled_dot_product_attention", closure_sdpa)
    (finding,) = find_sage_attention()
    assert "sageattention.core.sageattn" in finding.detail
    assert "closure_sdpa" in finding.detail


def test_detects_closure_built_by_a_factory(trainer, sage, monkeypatch):
    monkeypatch.setattr(F, "scaled_dot_product_attention", trainer.make_closure_sdpa(sage.sageattn))
    (finding,) = find_sage_attention()
    assert "sageattention.core.sageattn" in finding.detail
    assert "(module sage_trainer.patches)" in finding.detail


def test_detects_callable_object_and_bound_method(trainer, sage, monkeypatch):
    caller = trainer.KernelCaller(sage.sageattn)
    for replacement in (caller, caller.__call__):
        monkeypatch.setattr(F, "scaled_dot_product_attention", replacement)
        (finding,) = find_sage_attention()
        assert "sageattention.core.sageattn" in finding.detail


def test_reports_non_sage_replacement_as_unknown(trainer, monkeypatch):
    monkeypatch.setattr(F, "scaled_dot_product_attention", trainer.logging_sdpa)
    (finding,) = find_sage_attention()
    assert finding.source == "torch.nn.functional"
    assert "unknown replacement" in finding.detail
    assert "`logging_sdpa` (module sage_trainer.patches)" in finding.detail
    assert "not recognised as SageAttention" in finding.detail


class _Hostile:
    """Raises from every attribute lookup it can."""

    def __getattribute__(self, name):
        if name == "__class__":
            return _Hostile
        raise RuntimeError(f"no {name}")

    def __call__(self, *args, **kwargs):
        raise NotImplementedError


def _self_referencing():
    loop: list = []
    loop.append(loop)

    def replacement(*args, **kwargs):
        return loop

    return replacement


@pytest.mark.parametrize(
    "replacement",
    [
        mock.MagicMock(),
        mock.Mock(spec=[]),
        _Hostile(),
        len,
        functools.partial(torch._C._nn.scaled_dot_product_attention),
        _self_referencing(),
        42,
    ],
    ids=["magicmock", "bare-mock", "hostile", "builtin", "partial-of-torch", "cycle", "not-callable"],
)
def test_odd_replacements_never_raise(monkeypatch, replacement):
    monkeypatch.setattr(F, "scaled_dot_product_attention", replacement)
    findings = find_sage_attention()
    assert len(findings) == 1
    assert "unknown replacement" in findings[0].detail


def test_missing_function_is_reported(monkeypatch):
    monkeypatch.delattr(F, "scaled_dot_product_attention")
    (finding,) = find_sage_attention()
    assert finding.source == "torch.nn.functional"
    assert "missing" in finding.detail


# ------------------------------------------------------------------------------------------
# (b) diffusers-like models, duck-typed


class AttentionBackendName(str, enum.Enum):
    """Mirrors the enum diffusers stores on processors."""

    NATIVE = "native"
    FLASH = "flash"
    SAGE = "sage"
    SAGE_HUB = "sage_hub"
    SAGE_VARLEN = "sage_varlen"
    SAGE_FP8_CUDA = "_sage_qk_int8_pv_fp8_cuda"
    SAGE_FP16_CUDA = "_sage_qk_int8_pv_fp16_cuda"
    SAGE_FP16_TRITON = "_sage_qk_int8_pv_fp16_triton"


class AttnProcessor2_0:
    _attention_backend = None


class MessagePassingProcessor:
    """A name that contains "sage" inside a word; must not count."""


class Attention(nn.Module):
    def __init__(self, processor) -> None:
        super().__init__()
        self.to_q = nn.Linear(4, 4)
        self.processor = processor


class TinyTransformer(nn.Module):
    """Stores processors like diffusers does and has ``set_attention_backend``/``attn_processors``."""

    def __init__(self, processor_cls=AttnProcessor2_0, layers: int = 3) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Attention(processor_cls()) for _ in range(layers))

    def set_attention_backend(self, backend: str) -> None:
        for module in self.modules():
            if isinstance(module, Attention):
                module.processor._attention_backend = AttentionBackendName(backend)

    @property
    def attn_processors(self) -> dict:
        return {f"{name}.processor": m.processor for name, m in self.named_modules() if isinstance(m, Attention)}


@pytest.mark.parametrize(
    "backend",
    ["sage", "sage_hub", "sage_varlen", "_sage_qk_int8_pv_fp8_cuda", "_sage_qk_int8_pv_fp16_cuda",
     "_sage_qk_int8_pv_fp16_triton"],
)
def test_detects_sage_attention_backend(backend):
    model = TinyTransformer()
    model.set_attention_backend(backend)
    (finding,) = find_sage_attention(model)
    assert finding.source == "module"
    assert repr(backend) in finding.detail
    assert "`blocks.0` and 2 more" in finding.detail


@pytest.mark.parametrize("backend", [None, "native", "flash"])
def test_non_sage_backends_are_not_findings(backend):
    model = TinyTransformer()
    if backend is not None:
        model.set_attention_backend(backend)
    assert find_sage_attention(model) == []


def test_detects_backend_attribute_on_a_block():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[1]._attention_backend = "SAGE"
    (finding,) = find_sage_attention(model)
    assert finding.source == "module"
    assert "`1`" in finding.detail and "'SAGE'" in finding.detail


def test_detects_sage_processors(trainer):
    model = TinyTransformer(trainer.SageAttnProcessor, layers=2)
    (finding,) = find_sage_attention(model)
    assert finding.source == "module"
    assert "SageAttnProcessor" in finding.detail

    model = TinyTransformer(trainer.FastProcessor, layers=1)
    (finding,) = find_sage_attention(model)
    assert "FastProcessor calls sageattention" in finding.detail


def test_processor_names_are_matched_as_words():
    assert find_sage_attention(TinyTransformer(MessagePassingProcessor)) == []


def test_detects_processors_only_listed_in_attn_processors():
    class Holder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self._processors = {"x.processor": type("SageAttnProcessor", (), {})()}

        @property
        def attn_processors(self):
            return self._processors

    (finding,) = find_sage_attention(Holder())
    assert "`x.processor`" in finding.detail


def test_odd_modules_never_raise():
    class Broken(nn.Module):
        @property
        def processor(self):
            raise RuntimeError("boom")

        @property
        def attn_processors(self):
            raise RuntimeError("boom")

    class NotAModule:
        def named_modules(self):
            raise RuntimeError("boom")

    assert find_sage_attention(nn.Sequential(Broken())) == []
    assert find_sage_attention(NotAModule()) == []
    assert find_sage_attention(object()) == []


def test_detects_active_diffusers_backend(monkeypatch):
    registry = type("_AttentionBackendRegistry", (), {"_active_backend": AttentionBackendName.NATIVE})
    dispatch = types.ModuleType("diffusers.models.attention_dispatch")
    dispatch._AttentionBackendRegistry = registry
    monkeypatch.setitem(sys.modules, "diffusers.models.attention_dispatch", dispatch)
    assert find_sage_attention() == []

    monkeypatch.setattr(registry, "_active_backend", AttentionBackendName.SAGE)
    (finding,) = find_sage_attention()
    assert finding.source == "diffusers.attention_dispatch"
    assert "'sage'" in finding.detail


# ------------------------------------------------------------------------------------------
# (c) trainer configuration


@pytest.mark.parametrize("value", ["sageattention", "SageAttention", "sageattention_int8_fp16_cuda"])
def test_detects_config_key(value):
    (finding,) = find_sage_attention(config={"attention_mechanism": value})
    assert finding == AttentionFinding("config", f"attention_mechanism={value!r} selects SageAttention")


@pytest.mark.parametrize("config", [{}, {"attention_mechanism": None}, {"attention_mechanism": "diffusers"},
                                    {"attention_mechanism": 3}, {"attention_mechanism": "xformers"}])
def test_other_config_values_are_not_findings(config):
    assert find_sage_attention(config=config) == []


def test_config_object_with_attribute():
    config = types.SimpleNamespace(attention_mechanism="sageattention")
    assert [f.source for f in find_sage_attention(config=config)] == ["config"]


def test_all_sources_together(trainer, monkeypatch):
    monkeypatch.setattr(F, "scaled_dot_product_attention", trainer.sdpa)
    model = TinyTransformer()
    model.set_attention_backend("sage")
    findings = find_sage_attention(model, {"attention_mechanism": "sageattention"})
    assert [f.source for f in findings] == ["torch.nn.functional", "module", "config"]


# ------------------------------------------------------------------------------------------
# restored_attention


def test_restored_attention_restores_and_puts_back(trainer, monkeypatch):
    monkeypatch.setattr(F, "scaled_dot_product_attention", trainer.sdpa)
    with restored_attention():
        assert F.scaled_dot_product_attention is original_sdpa()
        assert not sdpa_is_patched()
    assert F.scaled_dot_product_attention is trainer.sdpa


def test_restored_attention_is_a_no_op_when_unpatched():
    before = F.scaled_dot_product_attention
    with restored_attention():
        assert F.scaled_dot_product_attention is before
    assert F.scaled_dot_product_attention is before


def test_restored_attention_puts_back_on_exception(trainer, monkeypatch):
    monkeypatch.setattr(F, "scaled_dot_product_attention", trainer.sdpa)
    with pytest.raises(KeyError, match="inside"), restored_attention():
        assert F.scaled_dot_product_attention is original_sdpa()
        raise KeyError("inside")
    assert F.scaled_dot_product_attention is trainer.sdpa


def test_restored_attention_nests(trainer, monkeypatch):
    monkeypatch.setattr(F, "scaled_dot_product_attention", trainer.sdpa)
    with restored_attention():
        with restored_attention():
            assert F.scaled_dot_product_attention is original_sdpa()
        assert F.scaled_dot_product_attention is original_sdpa()
    assert F.scaled_dot_product_attention is trainer.sdpa


def test_restored_attention_undoes_a_patch_made_inside(trainer, monkeypatch):
    monkeypatch.setattr(F, "scaled_dot_product_attention", trainer.sdpa)
    with restored_attention():
        F.scaled_dot_product_attention = trainer.logging_sdpa
    assert F.scaled_dot_product_attention is trainer.sdpa


def test_restored_attention_as_decorator(trainer, monkeypatch):
    monkeypatch.setattr(F, "scaled_dot_product_attention", trainer.sdpa)

    @restored_attention()
    def inside():
        return F.scaled_dot_product_attention

    assert inside() is original_sdpa()
    assert F.scaled_dot_product_attention is trainer.sdpa


def test_restored_attention_with_missing_function(monkeypatch):
    monkeypatch.delattr(F, "scaled_dot_product_attention")
    with restored_attention():
        assert F.scaled_dot_product_attention is original_sdpa()
    assert not hasattr(F, "scaled_dot_product_attention")


# ------------------------------------------------------------------------------------------
# Policies


def test_policy_names():
    assert ATTENTION_POLICIES == ("restore", "strict", "ignore")


def test_strict_policy_raises_naming_both_switches(trainer, monkeypatch):
    monkeypatch.setattr(F, "scaled_dot_product_attention", trainer.sdpa)
    with pytest.raises(SageAttentionConflictError) as info:
        check_attention("strict", config={"attention_mechanism": "sageattention"})
    error = info.value
    assert isinstance(error, RuntimeError)
    assert [f.source for f in error.findings] == ["torch.nn.functional", "config"]
    message = str(error)
    for finding in error.findings:
        assert finding.detail in message
    # the SageAttention switch ...
    assert "attention_mechanism" in message and "set_attention_backend" in message
    # ... and the CLIP-scoring switch
    assert "attention_policy='restore'" in message and "ClipScoreCallback" in message
    assert "evaluation_type='none'" in message


def test_strict_policy_raises_for_a_model_backend():
    model = TinyTransformer()
    model.set_attention_backend("sage")
    with pytest.raises(SageAttentionConflictError, match="attention_policy='restore'"):
        check_attention("strict", module=model)


def test_restore_policy_returns_findings(trainer, monkeypatch):
    monkeypatch.setattr(F, "scaled_dot_product_attention", trainer.sdpa)
    findings = check_attention("restore")
    assert findings == find_sage_attention()
    assert len(findings) == 1


def test_ignore_policy_does_not_look(trainer, monkeypatch):
    monkeypatch.setattr(F, "scaled_dot_product_attention", trainer.sdpa)
    assert check_attention("ignore", config={"attention_mechanism": "sageattention"}) == []


@pytest.mark.parametrize("policy", ["Restore", "off", "", None, 1])
def test_invalid_policy(policy):
    with pytest.raises(ValueError, match="attention_policy") as info:
        check_attention(policy)
    assert repr(policy) in str(info.value)


# ------------------------------------------------------------------------------------------
# The behaviour that matters: CLIP text embeddings under the patch


@pytest.fixture(scope="module")
def clip_text_model():
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=1000,
        hidden_size=32,
        intermediate_size=64,
        projection_dim=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=998,
        eos_token_id=999,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    model = CLIPTextModelWithProjection._from_config(config, attn_implementation="sdpa").eval()
    assert model.config._attn_implementation == "sdpa"
    return model


def _text_embeds(model) -> torch.Tensor:
    input_ids = torch.tensor([[998, 5, 17, 42, 7, 999], [998, 23, 999, 0, 0, 0]])
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=attention_mask).text_embeds


def test_clip_text_embeddings_are_exact_inside_restored_attention(clip_text_model, trainer, monkeypatch):
    reference = _text_embeds(clip_text_model)
    assert trainer.calls == []

    monkeypatch.setattr(F, "scaled_dot_product_attention", trainer.sdpa)
    patched = _text_embeds(clip_text_model)
    assert trainer.calls, "the CLIP text encoder did not go through the patched function"
    # Without its causal and padding masks the encoder computes something else, for both the
    # full-length and the padded prompt: the patch really breaks CLIP.
    for row in range(2):
        assert not torch.allclose(patched[row], reference[row], atol=1e-4)

    calls_before = len(trainer.calls)
    with restored_attention():
        restored = _text_embeds(clip_text_model)
    assert len(trainer.calls) == calls_before
    assert torch.equal(restored, reference)
    assert F.scaled_dot_product_attention is trainer.sdpa
