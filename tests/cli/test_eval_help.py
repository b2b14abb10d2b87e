"""``clip-metric eval --help`` says what ``--precision auto`` picks, for CLIP and for the pipeline."""

from __future__ import annotations

import pytest

from clip_metric.cli import main


def test_precision_help_says_what_auto_picks_for_clip_and_for_the_pipeline(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "CLIP bf16-mixed on CUDA" in text and "AVX512-BF16" in text  # CLIP's auto is bf16 on such CPUs
    assert "the pipeline bfloat16 on CUDA" in text and "float32 on the CPU" in text
