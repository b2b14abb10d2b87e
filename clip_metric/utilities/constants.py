"""Names and defaults stated once, for the library, the callback, the CLI and the docs.

This module imports nothing heavy, so the command line can read it without loading torch.
"""

from __future__ import annotations

DEFAULT_MODEL = "openai/clip-vit-large-patch14-336"
"""The CLIP model used when none is named (hub id)."""

DEFAULT_PREFIX = "clip/"
"""Prefix of every logged key (``clip/mean``, ``clip/min``, ...)."""

STAT_NAMES = ("mean", "mean_ci", "min", "max", "std", "count")
"""The summary statistics, in the order they are reported (``mean_ci``: half-width of the 95%
interval of the mean)."""

DELTA_NAMES = ("delta", "delta_ci", "delta_count")
"""The change since the previous evaluation, over the prompts both scored (paired), its 95%
interval's half-width and the number of pairs."""

DEFAULT_MIN_PROMPTS = 64
"""Prompts every evaluation with ``target_ci`` scores before it may stop: enough for the spread
behind the interval to be estimated (Student's t at 63 degrees of freedom is within 2% of the
normal quantile), few enough that a paired evaluation can stop early. With the skew-corrected
``delta_ci`` a change carried by a tenth of the prompts is covered 0.96-0.97 of the time from this
floor on (``docs/prompts-needed.md``); below 32 the evaluator warns."""
DEFAULT_ROUND_SIZE = 32
"""Prompts added per round of an evaluation with ``target_ci``, over all ranks together."""
REPORT_TO = ("all", "tensorboard", "wandb", "none")
"""Where the extras (histogram, image grids, per-prompt table) go: ``config.json``'s ``report_to``."""

SCORES_DIRNAME = "clip_scores"
"""Folder of per-prompt score files beside a run's logs."""
