"""The Lightning layer: :class:`ClipScoreCallback` and how it gets images out of a model.

Modules: :mod:`~clip_metric.lightning.callback` (the callback and its schedule),
:mod:`~clip_metric.lightning.generation` (the ``generate_fn`` protocol and
:class:`DiffusersGenerator`), :mod:`~clip_metric.lightning.reporting` (TensorBoard and W&B
extras) and :mod:`~clip_metric.lightning.progress` (the bar over the prompts) and
:mod:`~clip_metric.lightning.namespace` (``lightning.pytorch`` and ``pytorch_lightning``). The keys of a
training ``config.json`` are read by :mod:`clip_metric.config`, in the core.
"""

from clip_metric.lightning.callback import ClipScoreCallback
from clip_metric.lightning.generation import DiffusersGenerator

__all__ = ["ClipScoreCallback", "DiffusersGenerator"]
