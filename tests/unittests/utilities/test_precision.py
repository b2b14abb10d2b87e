"""Direct tests of ``clip_metric.utilities.precision``."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest
import torch

from clip_metric.utilities import precision as precision_module
from clip_metric.utilities.precision import (
    PRECISIONS,
    autocast_context,
    cast_matmul_weights,
    check_precision,
    resolve_precision,
    weight_dtype,
)

CPU = torch.device("cpu")


@pytest.mark.parametrize("name", PRECISIONS)
def test_canonical_names_pass_through(name):
    assert check_precision(name) == name


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [("32-true", "32"), ("fp32", "32"), (32, "32"), ("bf16", "bf16-mixed"), ("16", "16-mixed"), (16, "16-mixed")],
)
def test_aliases(alias, canonical):
    assert check_precision(alias) == canonical
    assert resolve_precision(alias, CPU) == canonical


@pytest.mark.parametrize(
    "bad", ["64", "fp16", "BF16-MIXED", "", "mixed", 64, 8, 32.0, 16.0, True, False, None, ["32"], {"32": 1}]
)
def test_unknown_names_are_refused(bad):
    with pytest.raises(ValueError, match=r"Expected `precision` to be one of \('auto', '32'"):
        check_precision(bad)
    with pytest.raises(ValueError, match=r"Expected `precision` to be one of"):
        resolve_precision(bad, CPU)


@pytest.mark.parametrize(("fast", "expected"), [(True, "bf16-mixed"), (False, "32")])
def test_auto_on_cpu_follows_bf16_support(monkeypatch, fast, expected):
    monkeypatch.setattr(precision_module, "cpu_has_fast_bf16", lambda: fast)
    assert resolve_precision("auto", CPU) == expected


@pytest.mark.parametrize("name", [n for n in PRECISIONS if n != "auto"])
@pytest.mark.parametrize("fast", [True, False])
def test_explicit_names_ignore_the_hardware(monkeypatch, name, fast):
    monkeypatch.setattr(precision_module, "cpu_has_fast_bf16", lambda: fast)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: fast)
    assert resolve_precision(name, CPU) == name
    assert resolve_precision(name, torch.device("cuda")) == name


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bf16-mixed"), (False, "16-mixed")])
def test_auto_on_cuda_follows_bf16_support(monkeypatch, bf16, expected):
    # torch.device("cuda") is only a description: no CUDA is needed to build or resolve it.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(precision_module, "cpu_has_fast_bf16", lambda: not bf16)
    assert resolve_precision("auto", torch.device("cuda")) == expected
    assert resolve_precision("auto", SimpleNamespace(type="cuda")) == expected


@pytest.mark.parametrize("device", ["mps", "meta", "xpu"])
def test_auto_elsewhere_is_fp32(monkeypatch, device):
    monkeypatch.setattr(precision_module, "cpu_has_fast_bf16", lambda: True)
    assert resolve_precision("auto", torch.device(device)) == "32"


def test_cpu_has_fast_bf16_is_a_bool_and_reads_torch_cpu(monkeypatch):
    assert isinstance(precision_module.cpu_has_fast_bf16(), bool)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert precision_module.cpu_has_fast_bf16() is True
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert precision_module.cpu_has_fast_bf16() is False


@pytest.mark.parametrize(
    ("name", "dtype"),
    [("32", torch.float32), ("bf16-mixed", torch.float32), ("16-mixed", torch.float32),
     ("bf16-true", torch.bfloat16), ("16-true", torch.float16)],
)
def test_weight_dtype(name, dtype):
    assert weight_dtype(name) == dtype


def test_autocast_context_on_cpu():
    with autocast_context("bf16-mixed", CPU):
        out = torch.ones(2, 2) @ torch.ones(2, 2)
    assert out.dtype == torch.bfloat16
    for name in ("32", "bf16-true", "16-true"):
        assert isinstance(autocast_context(name, CPU), contextlib.nullcontext)
        with autocast_context(name, CPU):
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_autocast_context_fp16_mixed_uses_float16():
    context = autocast_context("16-mixed", CPU)
    assert isinstance(context, torch.autocast) and context.fast_dtype == torch.float16


def test_cast_matmul_weights_casts_only_linear_and_convolution_layers():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.LayerNorm(4), torch.nn.Linear(4, 4), torch.nn.Conv1d(4, 4, 1),
        torch.nn.Embedding(5, 4),
    )
    assert cast_matmul_weights(model, torch.bfloat16) == 3
    assert model[0].weight.dtype == model[2].weight.dtype == model[3].weight.dtype == torch.bfloat16
    assert model[2].bias.dtype == torch.bfloat16
    assert model[1].weight.dtype == torch.float32 and model[4].weight.dtype == torch.float32
