"""What each entry point imports, checked in fresh interpreters (never how long it takes)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import clip_metric

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "lightning", "pytorch_lightning")
LIGHTNING = ("lightning", "pytorch_lightning")


def _run(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; it ends by printing a JSON object."""
    script = textwrap.dedent(code)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _loaded(statement: str, watched=HEAVY) -> list[str]:
    result = _run(
        f"""
        import json, sys
        {statement}
        print(json.dumps(sorted(m for m in {tuple(watched)!r} if m in sys.modules)))
        """
    )
    return result


def test_the_probe_sees_an_import():
    # The checks below would pass vacuously if the probe could not see imports at all.
    watched = ("clip_metric.utilities.constants", "clip_metric.records")
    assert _loaded("import clip_metric.utilities.constants", watched) == ["clip_metric.utilities.constants"]


def test_import_clip_metric_loads_neither_torch_nor_lightning():
    assert _loaded("import clip_metric; clip_metric.__version__; dir(clip_metric)") == []


def test_constants_load_without_torch():
    assert _loaded("from clip_metric import DEFAULT_MODEL") == []


@pytest.mark.parametrize(
    "statement",
    [
        "from clip_metric import ClipScore",
        "from clip_metric import ScoreStatistics, cosine_scores; import clip_metric.compare, clip_metric.text",
    ],
    ids=["ClipScore", "ScoreStatistics"],
)
def test_core_does_not_import_lightning(statement):
    loaded = _loaded(statement)
    assert "torch" in loaded
    assert [m for m in loaded if m in LIGHTNING] == []


def test_records_and_readers_do_not_import_torch():
    assert _loaded("import clip_metric.records, clip_metric.utilities.readers, clip_metric.utilities.checks") == []


def test_cli_import_and_parser_do_not_import_torch():
    statement = "import clip_metric.cli as cli; parser = cli.build_parser(); parser.format_help()"
    assert _loaded(statement) == []


def test_cli_help_exits_zero_without_torch():
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "clip_metric.cli", "--help"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "usage: clip-metric" in done.stdout
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "clip_metric.cli" in imported  # the trace is there and names our modules
    assert {m for m in imported if m.split(".")[0] in HEAVY} == set()


def test_cli_subcommand_help_exits_zero_without_torch():
    result = _run(
        """
        import json, sys
        from clip_metric.cli import main
        codes = []
        for command in ("score", "compare", "demo"):
            try:
                main([command, "--help"])
            except SystemExit as done:
                codes.append(done.code)
        print(json.dumps({"codes": codes, "loaded": sorted(m for m in ("torch", "lightning") if m in sys.modules)}))
        """
    )
    assert result == {"codes": [0, 0, 0], "loaded": []}


def test_lightning_names_load_lazily_and_every_export_resolves():
    result = _run(
        """
        import json, sys
        import clip_metric
        before = "lightning" in sys.modules
        from clip_metric import ClipScoreCallback
        after = "lightning" in sys.modules
        for name in clip_metric.__all__:
            getattr(clip_metric, name)
        print(json.dumps({"before": before, "after": after, "module": ClipScoreCallback.__module__,
                          "missing": [n for n in clip_metric.__all__ if n not in vars(clip_metric)]}))
        """
    )
    assert result == {"before": False, "after": True, "module": "clip_metric.lightning.callback", "missing": []}


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'NotAThing'"):
        clip_metric.NotAThing  # noqa: B018
    assert set(clip_metric.__all__) <= set(dir(clip_metric))
    assert "ClipScore" in clip_metric.__all__ and "ScoreStatistics" in clip_metric.__all__
