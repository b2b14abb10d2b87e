"""Names and defaults stated once, for the library, the callback, the CLI and the docs.

This module imports nothing heavy, so the command line can read it without loading torch.
"""

from __future__ import annotations

DEFAULT_MODEL = "openai/clip-vit-large-patch14-336"
"""The CLIP model used when none is named (hub id)."""

DEFAULT_PREFIX = "clip/"
"""Prefix of every logged key (``clip/mean``, ``clip/min``, ...)."""

STAT_NAMES = ("mean", "min", "max", "std", "count")
"""The summary statistics, in the order they are reported."""

SCORES_DIRNAME = "clip_scores"
"""Folder of per-prompt score files beside a run's logs."""
