"""The package metadata and the install docs agree with each other."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

tomllib = pytest.importorskip("tomllib") if sys.version_info >= (3, 11) else pytest.importorskip("tomli")


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def test_licence_is_an_spdx_expression_with_its_files():
    # setuptools deprecates the TOML-table form; the SPDX string is what PEP 639 specifies.
    project = _project()
    assert isinstance(project["license"], str) and project["license"] == "Apache-2.0"
    for pattern in project["license-files"]:
        assert sorted(REPO.glob(pattern)), f"license-files pattern {pattern!r} matches no file"


def test_extras_table_lists_every_extra():
    extras = set(_project()["optional-dependencies"])
    text = (REPO / "docs" / "getting-started.md").read_text(encoding="utf-8")
    text = text.split("| Extra |", 1)[1].split("\n\n", 1)[0]  # the extras table alone
    documented = set(re.findall(r"^\| `([\w-]+)` \|", text, flags=re.MULTILINE))
    assert documented == extras, f"documented {sorted(documented)} but pyproject has {sorted(extras)}"


def test_lora_extra_installs_peft():
    # diffusers loads LoRA weights through peft: the extra that enables LoRA evaluation must pull it.
    assert any(req.startswith("peft") for req in _project()["optional-dependencies"]["lora"])
