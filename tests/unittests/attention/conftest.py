"""Fixtures of the attention tests: pristine attention functions and the stand-in packages.

The stand-in ``sageattention`` (``tests/_helpers/fake_packages``) drops attention masks like the
real one; ``sage_trainer.patches`` switches it on the ways trainers do.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch.nn.functional as F

from clip_metric.attention import original_sdpa

FAKE_PACKAGES = Path(__file__).resolve().parents[2] / "_helpers" / "fake_packages"
_FAKE_TOP_LEVEL = ("sageattention", "sage_trainer")


def _drop_fake_modules() -> None:
    for name in list(sys.modules):
        if name.split(".", 1)[0] in _FAKE_TOP_LEVEL:
            del sys.modules[name]


@pytest.fixture(autouse=True)
def pristine_attention(monkeypatch):
    """Every test starts from torch's and transformers' own attention and gets back what was there."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

    monkeypatch.setattr(F, "scaled_dot_product_attention", original_sdpa())
    monkeypatch.setitem(AttentionInterface._global_mapping, "sdpa", sdpa_attention_forward)
    # Set, then delete: an entry a test assigns is removed again afterwards.
    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS._local_mapping, "sdpa", sdpa_attention_forward)
    monkeypatch.delitem(ALL_ATTENTION_FUNCTIONS._local_mapping, "sdpa")


@pytest.fixture
def sage(monkeypatch):
    """The stand-in ``sageattention`` package, importable for the duration of a test."""
    monkeypatch.syspath_prepend(str(FAKE_PACKAGES))
    _drop_fake_modules()
    yield importlib.import_module("sageattention")
    _drop_fake_modules()


@pytest.fixture
def trainer(sage):
    """``sage_trainer.patches``: replacements written the way trainers write them."""
    module = importlib.import_module("sage_trainer.patches")
    module.calls.clear()
    return module
