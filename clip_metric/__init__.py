"""CLIP score tracking for text-to-image training.

The core (importable without Lightning): :class:`ScoreStatistics`, DDP-exact statistics of
per-sample scores; :class:`ClipScore`, the same with a frozen :class:`ClipEncoder` that loads a
CLIP-family model once; pure functions in :mod:`clip_metric.functional`. The Lightning layer
(:class:`ClipScoreCallback`, :class:`DiffusersGenerator`) lives in :mod:`clip_metric.lightning`.

Every name here is loaded on first use, so ``import clip_metric`` costs nothing: the command line
answers ``--help`` without torch, and ``from clip_metric import ClipScore`` never imports
Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "DEFAULT_MODEL": "clip_metric.utilities.constants",
    "ClipEncoder": "clip_metric.encoder",
    "ClipScore": "clip_metric.metric",
    "ScoreStatistics": "clip_metric.statistics",
    "cosine_scores": "clip_metric.functional",
    "scale_scores": "clip_metric.functional",
    "summarize_scores": "clip_metric.functional",
    "ClipScoreCallback": "clip_metric.lightning.callback",
    "DiffusersGenerator": "clip_metric.lightning.generation",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from clip_metric.encoder import ClipEncoder
    from clip_metric.functional import cosine_scores, scale_scores, summarize_scores
    from clip_metric.lightning.callback import ClipScoreCallback
    from clip_metric.lightning.generation import DiffusersGenerator
    from clip_metric.metric import ClipScore
    from clip_metric.statistics import ScoreStatistics
    from clip_metric.utilities.constants import DEFAULT_MODEL


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'clip_metric' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
