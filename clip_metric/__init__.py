"""CLIP score tracking for text-to-image training.

A DDP-safe :class:`ClipScore` metric (torchmetrics), a frozen :class:`ClipEncoder` that loads a
CLIP-family model once, and pure functions in :mod:`clip_metric.functional`.
"""

from clip_metric.callback import ClipScoreCallback
from clip_metric.encoder import DEFAULT_MODEL, ClipEncoder
from clip_metric.functional import cosine_scores, scale_scores, summarize_scores
from clip_metric.generation import DiffusersGenerator
from clip_metric.metric import ClipScore

__all__ = [
    "DEFAULT_MODEL",
    "ClipEncoder",
    "ClipScore",
    "ClipScoreCallback",
    "DiffusersGenerator",
    "cosine_scores",
    "scale_scores",
    "summarize_scores",
]
__version__ = "0.1.0"
