"""``ScoreStatistics``: DDP-exact summary statistics of per-sample CLIP scores.

The five states (sum, sum of squares, count, min, max) reduce exactly across ranks
(``sum``/``sum``/``sum``/``min``/``max``), so results do not depend on batch size or on how
samples are split over processes. The metric holds no model: feed it cosines computed anywhere
(:class:`~clip_metric.ClipScore` adds a CLIP encoder on top; the Lightning callback and the
command line feed it from their own encoder).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import rank_zero_warn
from torchmetrics.utilities.data import dim_zero_cat

from clip_metric.functional import check_scale, scale_scores, stats_from_moments
from clip_metric.utilities.checks import check_bool, check_str
from clip_metric.utilities.constants import DEFAULT_PREFIX

# Cosines are clamped to [-1, 1] when computed; allow for float32 rounding of ones computed elsewhere.
_COSINE_SLACK = 1e-4


def _as_ids(ids: Any, expected: int, device: torch.device) -> Tensor:
    """Integer prompt ids as a ``(N,)`` int64 tensor, checked before any state changes."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, (Sequence, Tensor)) :
        raise ValueError(f"Expected `ids` as a sequence of {expected} ints but got {type(ids).__name__}: {ids!r}")
    if isinstance(ids, Tensor):
        tensor = ids.detach().reshape(-1)
        if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
            raise ValueError(f"Expected integer `ids` but got a tensor of dtype {tensor.dtype}")
    else:
        bad = [value for value in ids if isinstance(value, bool) or not isinstance(value, int)]
        if bad:
            raise ValueError(f"Expected `ids` to be ints but got {bad[0]!r}")
        tensor = torch.as_tensor(list(ids), dtype=torch.long)
    if tensor.numel() != expected:
        raise ValueError(f"Expected {expected} ids (one per sample) but got {tensor.numel()}")
    return tensor.to(device=device, dtype=torch.long)


def check_cosines(scores: Any) -> Tensor:
    """Per-sample cosines as a non-empty 1-D float tensor of finite values in ``[-1, 1]``.

    Raises:
        ValueError: naming what is wrong (shape, dtype, NaN/Inf, values outside ``[-1, 1]``).
    """
    if not isinstance(scores, Tensor):
        raise ValueError(f"Expected `scores` as a 1-D float tensor but got {type(scores).__name__}")
    if scores.ndim != 1 or scores.numel() == 0 or not scores.is_floating_point():
        raise ValueError(
            f"Expected `scores` as a non-empty 1-D float tensor but got shape {tuple(scores.shape)} "
            f"and dtype {scores.dtype}"
        )
    if scores.device.type == "meta":
        raise ValueError("Expected `scores` with data but got a tensor on the meta device")
    values = scores.detach()
    if not torch.isfinite(values).all():
        raise ValueError("Expected finite `scores` but got NaN or Inf")
    low, high = (float(v) for v in torch.aminmax(values.float()))
    if low < -1 - _COSINE_SLACK or high > 1 + _COSINE_SLACK:
        raise ValueError(
            f"Expected `scores` to be cosines in [-1, 1] but got values in [{low:.4g}, {high:.4g}]; "
            "pass raw cosines: the metric applies its `scale` itself"
        )
    return values.clamp(-1.0, 1.0)


def _keep_own(stacked: Tensor) -> Tensor:
    """Reduction of the settings state: the metric's own (``merge_state`` stacks theirs, mine)."""
    return stacked[-1]


def _settings_code(key: str) -> Tensor:
    """A settings description as a state torchmetrics compares: 16 digest bytes, 0-255 each.

    Small integers, so ``torch.allclose`` (how ``MetricCollection`` finds compute groups) tells
    any two keys apart.
    """
    digest = hashlib.sha256(key.encode("utf-8")).digest()[:16]
    return torch.tensor(list(digest), dtype=torch.float64)


_SETTINGS_STATE = "settings_code"


class ScoreStatistics(Metric):
    r"""Mean (with its 95% interval), min, max, std and count of per-sample CLIP cosines, exact across DDP ranks.

    Args:
        scale: ``"cosine"`` (raw cosine, default; good models score 0.30-0.39), ``"torchmetrics"``
            (``100 * max(cos, 0)``) or ``"clipscore"`` (``2.5 * max(cos, 0)``), applied per sample.
        prefix: prefix of the keys ``compute()`` returns (default ``"clip/"``).
        keep_scores: also keep every per-sample score (and its prompt id) as a ``cat`` state, for
            per-prompt tables; read them with :meth:`per_sample`.
        kwargs: passed to :class:`torchmetrics.Metric` (``sync_on_compute``, ``process_group``, ...).

    The states stay float64 (count int64) whatever dtype cast the module holding the metric gets
    (``module.to(torch.bfloat16)``, ``Trainer(precision="bf16-true")``): a bf16 sum of
    thousands of scores would lose the digits being compared. A ``state_dict`` whose states were
    cast (a float16 checkpoint) is cast back on load, with a warning that digits were lost.

    In a ``MetricCollection(compute_groups=True)``, metrics of different settings (``scale``; for
    :class:`~clip_metric.ClipScore` also the CLIP encoder and ``value_range``) never share
    states, even when their first batch gives equal ones: a small state, ``settings_code``,
    describes the settings. It is never synced across ranks nor loaded from a checkpoint.

    Raises:
        ValueError: for an unknown ``scale``, a non-string ``prefix`` or a non-bool ``keep_scores``.

    Example:
        >>> import torch
        >>> from clip_metric import ScoreStatistics
        >>> stats = ScoreStatistics()
        >>> stats.update(torch.tensor([0.25, 0.35]))
        >>> {k: round(float(v), 4) for k, v in stats.compute().items()}
        {'clip/mean': 0.3, 'clip/mean_ci': 0.6353, 'clip/min': 0.25, 'clip/max': 0.35, 'clip/std': 0.05, 'clip/count': 2.0}
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    total: Tensor
    total_sq: Tensor
    count: Tensor
    minimum: Tensor
    maximum: Tensor

    def __init__(
        self, *, scale: str = "cosine", prefix: str = DEFAULT_PREFIX, keep_scores: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.scale = check_scale(scale)
        self.prefix = check_str("prefix", prefix)
        self.keep_scores = check_bool("keep_scores", keep_scores)
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total_sq", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        # A rank that sees no samples contributes its defaults: +inf/-inf leave min/max untouched.
        self.add_state("minimum", torch.tensor(math.inf, dtype=torch.float64), dist_reduce_fx="min")
        self.add_state("maximum", torch.tensor(-math.inf, dtype=torch.float64), dist_reduce_fx="max")
        if self.keep_scores:
            self.add_state("scores", [], dist_reduce_fx="cat")
            self.add_state("ids", [], dist_reduce_fx="cat")
        self._register_settings()

    def _settings_key(self) -> str:
        """What, besides the samples, decides the states: metrics with different keys never share them."""
        return f"{type(self).__qualname__}|scale={self.scale}"

    def _register_settings(self) -> None:
        """(Re)state the settings code; subclasses call it once their settings are known."""
        self.add_state(_SETTINGS_STATE, _settings_code(self._settings_key()), dist_reduce_fx=_keep_own)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> ScoreStatistics:
        # Device moves apply; dtype casts do not: every state (and its default, and a cached
        # compute() result) keeps its own dtype *and its value*. Casting to the target dtype and
        # back would round the float64 sums through bf16/fp16, and a cast default would make the
        # states low precision again after reset().
        def keep_dtype(tensor: Tensor) -> Tensor:
            moved = fn(tensor)
            if isinstance(moved, Tensor) and isinstance(tensor, Tensor) and moved.dtype != tensor.dtype:
                return tensor.to(moved.device)
            return moved

        return super()._apply(keep_dtype, *args, **kwargs)

    _RESTORED_ON_FAILURE = (
        "_update_count", "_computed", "_forward_cache", "_to_sync", "_should_unsync", "_is_synced",
        "_enable_grad", "compute_on_cpu",
    )

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Add a batch (as :meth:`update`) and return its own statistics.

        A refused batch leaves the accumulated states as they were: torchmetrics' ``forward``
        resets the states to compute the batch value, so they are put back when ``update`` raises.
        """
        # The five scalar states are cloned (update adds to them in place); the per-sample lists
        # are only ever appended to, so copying the lists (not the tensors in them) is enough.
        states = {
            name: value.clone() if isinstance(value, Tensor) else list(value)
            for name, value in ((name, getattr(self, name)) for name in self._defaults)
        }
        context = {name: getattr(self, name) for name in self._RESTORED_ON_FAILURE}
        try:
            return super().forward(*args, **kwargs)
        except BaseException:
            for name, value in states.items():
                setattr(self, name, value)
            for name, value in context.items():
                setattr(self, name, value)
            raise

    def update(self, scores: Tensor, ids: Sequence[int] | Tensor | None = None) -> None:
        """Add per-sample cosines.

        Args:
            scores: ``(N,)`` cosines in ``[-1, 1]``; the metric's ``scale`` is applied here.
            ids: optional integer prompt ids, one per score, kept with the per-sample scores when
                ``keep_scores=True`` (``-1`` when not given).

        Raises:
            ValueError: for scores that are not finite cosines, or ids of the wrong count or type.
                A rejected batch leaves every state as it was.
        """
        self._accumulate(check_cosines(scores), ids)

    def _accumulate(self, cosines: Tensor, ids: Sequence[int] | Tensor | None) -> None:
        device = self.total.device
        if device.type == "meta":
            raise ValueError("Cannot update a metric whose states are on the meta device; move it with `.to(device)`")
        # Everything is checked before the first state changes, so a failed update is a no-op.
        id_tensor = None if ids is None else _as_ids(ids, cosines.numel(), device)
        values = scale_scores(cosines.detach(), self.scale).to(device, torch.float64)
        self.total += values.sum()
        self.total_sq += (values * values).sum()
        self.count += values.numel()
        self.minimum = torch.minimum(self.minimum, values.min())
        self.maximum = torch.maximum(self.maximum, values.max())
        if self.keep_scores:
            if id_tensor is None:
                id_tensor = torch.full((values.numel(),), -1, dtype=torch.long, device=device)
            self.scores.append(values)
            self.ids.append(id_tensor)

    def _sync_dist(self, *args: Any, **kwargs: Any) -> None:
        # torchmetrics stands in for an empty list state with an empty tensor of the metric's
        # float dtype; a rank without samples would then send float32 where the others send
        # int64/float64 and the gather would fail. Give the stand-ins the right dtypes.
        if self.keep_scores:
            if len(self.scores) == 0:
                self.scores = [torch.zeros(0, dtype=torch.float64, device=self.total.device)]
            if len(self.ids) == 0:
                self.ids = [torch.zeros(0, dtype=torch.long, device=self.total.device)]
        # The settings code is local (it may name a process's own encoder): no collective for it.
        reductions = self._reductions
        self._reductions = {name: fx for name, fx in reductions.items() if name != _SETTINGS_STATE}
        try:
            super()._sync_dist(*args, **kwargs)
        finally:
            self._reductions = reductions

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        # The settings code describes this metric, not the saved one (a checkpoint of an older
        # version has none).
        state_dict.pop(prefix + _SETTINGS_STATE, None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._restore_state_dtypes()

    def _restore_state_dtypes(self) -> None:
        """States loaded in another dtype (a float16 checkpoint) go back to float64 / int64."""
        lowered = []
        for name, default in self._defaults.items():
            value = getattr(self, name)
            if isinstance(default, Tensor):
                wanted = default.dtype
                if isinstance(value, Tensor) and value.dtype != wanted:
                    lowered.append(f"{name} ({value.dtype})")
                    setattr(self, name, value.to(dtype=wanted))
            elif isinstance(value, list):
                wanted = torch.long if name == "ids" else torch.float64
                if any(isinstance(item, Tensor) and item.dtype != wanted for item in value):
                    lowered.append(f"{name} ({next(i.dtype for i in value if i.dtype != wanted)})")
                    setattr(self, name, [item.to(dtype=wanted) for item in value])
        if lowered:
            rank_zero_warn(
                f"{type(self).__name__}.load_state_dict: states {', '.join(lowered)} were cast back to "
                "float64 / int64; digits lost to the lower precision they were saved in stay lost",
                UserWarning,
            )

    def compute(self) -> dict[str, Tensor]:
        """``{prefix + "mean"|"mean_ci"|"min"|"max"|"std"|"count"}`` over every sample on every rank.

        ``mean_ci`` is the half-width of the 95% *t* interval of the mean, from the synced moments
        (:func:`clip_metric.intervals.half_width`): exact at any world size, NaN below two samples.

        With no samples anywhere it warns and returns NaN for the statistics (count 0); all
        ranks take the same path, so no rank is left waiting in a collective.
        """
        if self.count.item() == 0:
            rank_zero_warn(
                f"{type(self).__name__}.compute() found no samples on any rank; returning NaN. Call update() first.",
                UserWarning,
            )
        return stats_from_moments(self.total, self.total_sq, self.count, self.minimum, self.maximum, self.prefix)

    def per_sample(self) -> tuple[Tensor, Tensor]:
        """``(ids, scores)`` of every sample seen (synced across ranks), with ``keep_scores=True``.

        Scores are on the metric's ``scale``.

        Raises:
            RuntimeError: if the metric was created without ``keep_scores=True``.
        """
        if not self.keep_scores:
            raise RuntimeError(f"Per-sample scores are only kept with {type(self).__name__}(keep_scores=True)")
        with self.sync_context(should_sync=self._to_sync, should_unsync=self._should_unsync):
            ids = dim_zero_cat(self.ids) if len(self.ids) else torch.zeros(0, dtype=torch.long)
            scores = dim_zero_cat(self.scores) if len(self.scores) else torch.zeros(0, dtype=torch.float64)
        return ids, scores

    def merge_state(self, incoming_state: Any) -> None:
        """Merge another metric's states; refused across scales, prefixes or ``keep_scores``.

        A dict of states (``other.metric_state``, or one saved without ``settings_code``) is
        merged as well.
        """
        if isinstance(incoming_state, ScoreStatistics):
            for name in ("scale", "prefix", "keep_scores"):
                mine, theirs = getattr(self, name), getattr(incoming_state, name)
                if mine != theirs:
                    raise ValueError(f"Expected a metric with {name}={mine!r} to merge but got {name}={theirs!r}")
        elif isinstance(incoming_state, dict) and _SETTINGS_STATE not in incoming_state:
            incoming_state = {**incoming_state, _SETTINGS_STATE: getattr(self, _SETTINGS_STATE)}
        super().merge_state(incoming_state)
