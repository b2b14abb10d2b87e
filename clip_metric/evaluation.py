"""``PromptEvaluator``: render a prompt library with the model under training, score it, sync it.

The loop behind :class:`~clip_metric.ClipScoreCallback`, usable without Lightning (a plain or
accelerate training loop): the library is split across ranks, each prompt is rendered with a
seed derived from its text, every global RNG and every module's train/eval mode is restored,
the scores are synced (:class:`~clip_metric.ScoreStatistics`), rank 0 writes a score file with
its :class:`~clip_metric.signature.ScoreSignature`, and every rank gets the same values.

Beyond the summary statistics, each evaluation after the first is *paired* with the one
before it: ``clip/delta`` is the mean change over the prompts both scored (same prompt, same
seed), with the half-width ``clip/delta_ci`` of its 95% interval (:mod:`clip_metric.intervals`).
With ``target_ci``, the library is rendered in rounds, in the proportional order of
:func:`~clip_metric.prompts.proportional_order`, and the evaluation stops as soon as the interval
it targets is narrow enough (:class:`~clip_metric.adaptive.StoppingRule`), rendering on to the
pairs the next evaluation is predicted to need: every rank takes the same decision from the same
synced moments.

Every rank must call :meth:`PromptEvaluator.evaluate` together: it runs collectives. A rank
whose generator fails makes every rank raise (none is left waiting).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import math
import numbers
import os
import re
import uuid
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from clip_metric.distributed import (
    AbandonedMeeting,
    all_reduce_sum,
    broadcast_object,
    collective_device,
    gather_objects,
    jointly,
    local_only,
    rank_and_world_size,
    wait_for_all_ranks,
)
from clip_metric.encoder import ClipEncoder
from clip_metric.functional import check_scale, scale_scores
from clip_metric.adaptive import Decision, StoppingRule, delta_half_width, settings_warning
from clip_metric.images import check_value_range
from clip_metric.intervals import MIN_PAIRS
from clip_metric.prompts import (
    BUILTIN_LIBRARIES,
    BUILTIN_LIBRARY,
    Prompt,
    PromptSource,
    proportional_order,
    load_prompt_library,
    select_prompts,
)
from clip_metric.records import ScoreRecord, read_scores, write_scores
from clip_metric.samples import BestWorst, Candidates
from clip_metric.signature import ScoreSignature, rendering_field, signature_of
from clip_metric.statistics import ScoreStatistics
from clip_metric.utilities.checks import (
    check_choice,
    check_model_source,
    check_non_negative_int,
    check_optional_path,
    check_optional_positive_number,
    check_positive_int,
    check_prefix,
)
from clip_metric.utilities.constants import DEFAULT_MIN_PROMPTS, DEFAULT_MODEL, DEFAULT_PREFIX, DEFAULT_ROUND_SIZE
from clip_metric.utilities.keys import tag_key
from clip_metric.utilities.precision import check_precision
from clip_metric.utilities.rng import preserved_rng

log = logging.getLogger("clip_metric")

GenerateImages = Callable[[list, list], Any]
"""``generate(prompts, seeds) -> images``: one image per prompt, rendered from ``seeds[i]``."""

TARGETS = ("delta", "mean")
DEFAULT_JOIN_TIMEOUT = 600.0
"""Seconds an evaluation waits for every rank to call it before it raises (instead of hanging)."""

_SCORE_FILE = re.compile(r"step-(\d+)(?:-(\d+))?\.jsonl")
"""The names of the score files an evaluator writes: ``step-XXXXXXXX.jsonl``, ``-N`` for another at that step."""

# Signature fields that change what a score means; prompts may differ (pairs are matched by prompt).
_PAIRING_FIELDS = ("model", "image", "precision", "scale", "seed", "images_per_prompt")

# Tells the evaluators of one process apart in the process group's store; every rank builds
# its evaluators in the same order (or receives them pickled, numbered).
_INSTANCES = itertools.count()


@dataclass
class EvaluationResult:
    """What one evaluation produced; identical on every rank except ``signature`` and ``path``.

    Attributes:
        step: the step given to :meth:`PromptEvaluator.evaluate`.
        values: ``prefix + "mean"|"mean_ci"|"min"|"max"|"std"|"count"``, per-tag means, and, from
            the second evaluation on, ``prefix + "delta"|"delta_ci"|"delta_count"`` (0-dim float64
            tensors, synced). ``delta_ci`` is NaN below :data:`~clip_metric.intervals.MIN_PAIRS`
            pairs (too few for an interval to be trusted), as ``mean_ci`` is below two prompts.
        records: every prompt scored, on every rank, in library order.
        rounds: rounds rendered (1 without ``target_ci``).
        stopped_early: whether the evaluation stopped checking before the library was used up
            (``target_ci`` reached, or the pairs with the previous evaluation used up); it may
            then have rendered on, to leave the next evaluation its pairs
            (:class:`~clip_metric.adaptive.StoppingRule`).
        signature: the score signature (rank 0 only; None elsewhere).
        path: the score file written (rank 0 only, when a ``scores_dir`` is set).
        best_worst: thumbnails of the best and worst samples, with ``num_logged_images``.
        paired_with_step: the step of the evaluation ``delta`` pairs with (None when unpaired).
        paired_with_file: that evaluation's score file, when known (rank 0, or every rank after a resume).
        target_reached: with ``target_ci``, whether the targeted interval reached it (None without).
    """

    step: int
    values: dict[str, Tensor]
    records: list[ScoreRecord]
    rounds: int = 1
    stopped_early: bool = False
    signature: ScoreSignature | None = None
    path: Path | None = None
    best_worst: BestWorst | None = None
    summary: dict[str, float] = field(default_factory=dict)
    paired_with_step: int | None = None
    paired_with_file: str | None = None
    target_reached: bool | None = None


class PromptEvaluator:
    r"""Score the model under training on a prompt library, on every rank, with paired deltas.

    Args:
        model_name_or_path: CLIP model: hub id, local directory or a :class:`~clip_metric.ClipEncoder`
            (loaded once, on first use or with :meth:`load_encoder`).
        prompts: the library (see :func:`~clip_metric.prompts.load_prompt_library`).
        max_prompts: score a deterministic, proportional subset of at most this many prompts.
        batch_size: prompts per ``generate`` call on each rank.
        value_range: ``(low, high)`` of float images from ``generate``.
        scale: ``"cosine"``, ``"torchmetrics"`` or ``"clipscore"``.
        prefix: key prefix (default ``"clip/"``).
        precision: CLIP precision, for a hub id or directory (see :class:`~clip_metric.ClipScore`).
        attention_policy: see :mod:`clip_metric.attention`, for a hub id or directory.
        target_ci: stop as soon as the 95% interval of the target has a half-width of at most this
            (in units of ``scale``); None renders the whole library every time.
        target: ``"delta"`` (default): the change since the previous evaluation; the first
            evaluation, which has none, targets the mean. An evaluation that stops (or whose pairs
            run out) renders on to the count the next one is predicted to need, so the next one
            has its pairs (:class:`~clip_metric.adaptive.StoppingRule`). ``clip/delta_ci`` is
            corrected for skewness (:func:`~clip_metric.adaptive.delta_half_width`). ``"mean"``:
            ``clip/mean_ci``.
        min_prompts: prompts scored before the first check (default 64; below 32 warns: too few
            for the interval to be estimated).
        round_size: prompts added per round, over all ranks (default 32). It does not depend on
            the world size, so 1 and N processes stop at the same point. Below 8 warns.
        num_logged_images: keep thumbnails of this many best and worst samples.
        scores_dir: where rank 0 writes ``step-XXXXXXXX.jsonl`` score files (None: none).
        library_name: the library's name in the signature (default: from ``prompts``).
        join_timeout: seconds :meth:`evaluate` waits for every rank of the process group to call
            it; a rank that never comes (an evaluation under ``if accelerator.is_main_process:``)
            makes it raise a ``RuntimeError`` saying so, where a collective would hang.

    Raises:
        ValueError: for invalid arguments (each names the value).

    Example:
        >>> import torch
        >>> from clip_metric.evaluation import PromptEvaluator
        >>> from clip_metric.demos.tiny_clip import embedded_model_path
        >>> evaluator = PromptEvaluator(
        ...     embedded_model_path(), prompts=["a red square", "a blue circle"], batch_size=2, precision="32"
        ... )
        >>> def generate(prompts, seeds):
        ...     gen = torch.Generator().manual_seed(seeds[0])
        ...     return torch.rand(len(prompts), 3, 32, 32, generator=gen)
        >>> first = evaluator.evaluate(generate, step=1)
        >>> int(first.values["clip/count"]), "clip/delta" in first.values
        (2, False)
        >>> second = evaluator.evaluate(generate, step=2)
        >>> float(second.values["clip/delta"]), int(second.values["clip/delta_count"])
        (0.0, 2)
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike | ClipEncoder = DEFAULT_MODEL,
        *,
        prompts: PromptSource = True,
        max_prompts: int | None = None,
        batch_size: int = 8,
        value_range: tuple[float, float] = (0.0, 1.0),
        scale: str = "cosine",
        prefix: str = DEFAULT_PREFIX,
        precision: str | int = "auto",
        attention_policy: str = "restore",
        target_ci: float | None = None,
        target: Literal["delta", "mean"] = "delta",
        min_prompts: int = DEFAULT_MIN_PROMPTS,
        round_size: int = DEFAULT_ROUND_SIZE,
        num_logged_images: int = 0,
        scores_dir: str | os.PathLike | None = None,
        library_name: str | None = None,
        join_timeout: float = DEFAULT_JOIN_TIMEOUT,
    ) -> None:
        from clip_metric.attention import ATTENTION_POLICIES

        self.model_name_or_path = check_model_source(model_name_or_path, ClipEncoder)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.value_range = check_value_range(value_range)
        self.scale = check_scale(scale)
        self.prefix = check_prefix(prefix)
        self.precision = check_precision(precision)
        self.attention_policy = check_choice("attention_policy", attention_policy, ATTENTION_POLICIES)
        self.target_ci = check_optional_positive_number("target_ci", target_ci)
        self.target = check_choice("target", target, TARGETS)
        self.min_prompts = check_positive_int("min_prompts", min_prompts)
        if self.min_prompts < 2:
            raise ValueError(f"Expected `min_prompts` of at least 2 (an interval needs a spread) but got {min_prompts}")
        self.round_size = check_positive_int("round_size", round_size)
        too_small = settings_warning(self.min_prompts, self.round_size) if self.target_ci is not None else None
        if too_small is not None and rank_and_world_size()[0] == 0:
            warnings.warn(too_small, UserWarning, stacklevel=2)
        self.num_logged_images = check_non_negative_int("num_logged_images", num_logged_images)
        if join_timeout is None:
            raise ValueError("Expected `join_timeout` to be a positive number of seconds but got None")
        self.join_timeout = check_optional_positive_number("join_timeout", join_timeout)
        self.scores_dir = scores_dir
        if prompts is None or prompts is False:
            raise ValueError(
                f"Expected `prompts` to be a library (True, 'default', 'parti', 'geneval', a path, a list or a dict) "
                f"but got {prompts!r}"
            )
        full = load_prompt_library(prompts)
        self.library: list[Prompt] = select_prompts(full, max_prompts)
        self.library_size = len(full)
        if max_prompts is not None and max_prompts > len(full) and rank_and_world_size()[0] == 0:
            warnings.warn(
                f"max_prompts={max_prompts} is more than the library holds: it has {len(full)} prompts, all of "
                "them are used", UserWarning, stacklevel=2,
            )
        self.library_name = library_name if library_name is not None else _library_name(prompts)
        self.subset = "all" if len(self.library) == len(full) else f"max{max_prompts}"
        # Who failed, in the error other ranks raise when one rank's rendering fails.
        self.owner = type(self).__name__
        self._instance = next(_INSTANCES)
        self._meetings = 0
        self._encoder: ClipEncoder | None = model_name_or_path if isinstance(model_name_or_path, ClipEncoder) else None
        # Evaluation order: library order, or with target_ci the proportional order whose prefixes
        # hold every category in proportion. Position p goes to rank p % world_size, whatever the stopping point.
        index_of = {id(prompt): i for i, prompt in enumerate(self.library)}
        self._order = (
            [index_of[id(p)] for p in proportional_order(self.library)] if self.target_ci is not None
            else list(range(len(self.library)))
        )
        self._position = {index: position for position, index in enumerate(self._order)}
        self._keys = {(p.id, p.text, p.seed): i for i, p in enumerate(self.library)}
        if self.target_ci is not None and len(self.library) <= self.min_prompts and rank_and_world_size()[0] == 0:
            warnings.warn(
                f"target_ci={self.target_ci:g} changes nothing: the library has {len(self.library)} prompts, no more "
                f"than min_prompts={self.min_prompts}, so every evaluation scores all of them",
                UserWarning, stacklevel=2,
            )
        # The previous evaluation: this rank's scores by library index, how many prompts it
        # scored over all ranks, and the score file it was written to (for resuming).
        self._previous: dict[int, float] | None = None
        self._previous_count = 0
        self._previous_file: str | None = None
        self._previous_step: int | None = None
        self._previous_local = False  # scored by a local=True evaluation, on this process alone
        self._pending_file: str | None = None
        self._pending_state: Mapping[str, Any] = {}
        # Names the run in its score files, so a resumed run finds the evaluations it made.
        self.run_id = uuid.uuid4().hex[:16]

    @classmethod
    def from_config(
        cls, config: str | os.PathLike | Mapping[str, Any], **overrides: Any
    ) -> PromptEvaluator | None:
        """Build from a training ``config.json`` (path or dict), as ``ClipScoreCallback.from_config`` does.

        The keys are SimpleTuner's (see :mod:`clip_metric.config`): ``evaluation_type``,
        ``pretrained_evaluation_model_name_or_path``, ``validation_prompt_library``,
        ``user_prompt_library`` (``report_to`` is for the script's own trackers). ``overrides``
        are passed to the constructor.

        Returns:
            The evaluator, or None when ``evaluation_type`` is ``"none"`` (or null).

        Raises:
            ValueError: for unknown values of these keys, naming the key and value.
            FileNotFoundError: if the config file does not exist.

        Example:
            >>> from clip_metric.demos.tiny_clip import embedded_model_path
            >>> config = {"--evaluation_type": "clip", "pretrained_evaluation_model_name_or_path": embedded_model_path()}
            >>> len(PromptEvaluator.from_config(config, max_prompts=16).library)
            16
            >>> PromptEvaluator.from_config({"evaluation_type": "none"}) is None
            True
        """
        from clip_metric.config import evaluator_kwargs

        kwargs = evaluator_kwargs(config)
        return None if kwargs is None else cls(**{**kwargs, **overrides})

    # ------------------------------------------------------------------ model and state
    @property
    def scores_dir(self) -> Path | None:
        """Where rank 0 writes score files (None: none); checked when set, before anything is rendered."""
        return self._scores_dir

    @scores_dir.setter
    def scores_dir(self, value: str | os.PathLike | None) -> None:
        check_optional_path("scores_dir", value)
        self._scores_dir = None if value is None else _checked_scores_dir(Path(value).expanduser())

    @property
    def stopping_rule(self) -> StoppingRule | None:
        """The rule adaptive evaluations stop by (None without ``target_ci``), from the present settings."""
        if self.target_ci is None:
            return None
        return StoppingRule(
            self.target_ci, target=self.target, min_prompts=self.min_prompts, round_size=self.round_size
        )

    @property
    def encoder(self) -> ClipEncoder | None:
        """The CLIP encoder, once loaded."""
        return self._encoder

    def load_encoder(self, quiet: bool = False) -> ClipEncoder:
        """Load the CLIP model (once); ``quiet`` hides transformers' loading output (other ranks)."""
        if self._encoder is None:
            self._encoder = ClipEncoder.build(
                self.model_name_or_path, precision=self.precision, attention_policy=self.attention_policy, quiet=quiet
            )
        return self._encoder

    @property
    def has_previous(self) -> bool:
        """Whether the next evaluation will be paired with a previous one (in memory or from a file)."""
        resumable = isinstance(self._pending_state.get("id"), str) and isinstance(self._pending_state.get("dir"), str)
        return self._previous is not None or self._pending_file is not None or resumable

    def state_dict(self) -> dict[str, Any]:
        """Where the last evaluation's scores were written, and which run wrote them.

        ``previous_scores_file``: an absolute path (None without a ``scores_dir``, or before the
        first evaluation). ``scores_run``: the run's id (in every score file's header), its score
        folder and the last evaluation's step. Enough to pair with the last evaluation after a
        resume, including one that ran after this state was saved (the scores are read back from
        the files).
        """
        if self._pending_file is not None or self._pending_state:  # loaded, not evaluated since
            run = {**self._pending_state, "id": self.run_id}
            return {"previous_scores_file": self._pending_file, "scores_run": run}
        return {
            "previous_scores_file": self._previous_file,
            "scores_run": {
                "id": self.run_id,
                "dir": None if self.scores_dir is None else str(self.scores_dir.resolve()),
                "previous_step": self._previous_step,
            },
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Pair the next evaluation with the last one of the checkpoint's run (read then, on every rank).

        That is the newest score file the run wrote before the next evaluation's step (an
        evaluation right after the checkpoint was saved included), else the file named in the
        state. What this evaluator held before is dropped: a resumed run continues the
        checkpoint's history, and writes its score files under the same run id. A state without a
        usable path or run (none was written, or another version's) makes the next evaluation
        unpaired.
        """
        state = state_dict if isinstance(state_dict, Mapping) else {}
        path = state.get("previous_scores_file")
        run = state.get("scores_run")
        self.forget_previous()
        self._pending_file = path if isinstance(path, str) and path else None
        self._pending_state = dict(run) if isinstance(run, Mapping) else {}
        if isinstance(self._pending_state.get("id"), str):
            self.run_id = self._pending_state["id"]
        self._previous_file = self._pending_file

    def forget_previous(self) -> None:
        """Make the next evaluation unpaired (as the first one)."""
        self._previous, self._previous_count, self._previous_file, self._pending_file = None, 0, None, None
        self._previous_step, self._previous_local, self._pending_state = None, False, {}

    # ------------------------------------------------------------------ evaluation
    def rounds(self, limit: int | None = None) -> list[int]:
        """Prompts scored after each round (over all ranks): ``[n]`` without ``target_ci``."""
        n = len(self.library) if limit is None else min(limit, len(self.library))
        rule = self.stopping_rule
        if rule is None or limit is not None:
            return [n] if n else []
        return rule.bounds(n)

    def shard_size(self, rank: int, world_size: int, limit: int | None = None) -> int:
        """How many prompts ``rank`` renders at most (the whole library, or ``limit``)."""
        n = len(self.library) if limit is None else min(limit, len(self.library))
        return len(range(rank, n, world_size))

    def evaluate(
        self,
        generate: GenerateImages,
        *,
        step: int = 0,
        device: torch.device | str | None = None,
        modules: Sequence[nn.Module] = (),
        rank: int | None = None,
        world_size: int | None = None,
        limit: int | None = None,
        advance: Callable[[int], None] | None = None,
        header: Mapping[str, Any] | None = None,
        save: bool = True,
        local: bool = False,
    ) -> EvaluationResult:
        """Render, score and sync; every rank must call this together (or pass ``local=True``).

        Args:
            generate: ``generate(prompts, seeds) -> images`` for this rank's prompts.
            step: the training step (score file name and header).
            device: where CLIP scores (default: where the encoder is).
            modules: put in eval mode while rendering, each sub-module's mode restored after.
            rank, world_size: default from ``torch.distributed`` (``0, 1`` without it).
            limit: score only the first ``limit`` prompts, in one round, unpaired (a quick check).
            advance: called with the number of prompts this rank just rendered (a progress bar).
            header: extra fields for the score file's header.
            save: write the score file (with a ``scores_dir``); ``False`` for a check.
            local: this process renders and scores the whole library alone, with no collective
                (and writes the score file): for an evaluation under
                ``if accelerator.is_main_process:``. Do not mix with evaluations every rank joins.

        Raises:
            ValueError: if ``step`` is not a non-negative integer (before anything is rendered).
            RuntimeError: on every rank, if rendering or scoring fails on another rank (naming that
                rank's error); if not every rank calls it within ``join_timeout`` seconds (and
                ``local`` is False); if the ranks hold different previous evaluations (``local=True``
                mixed with evaluations every rank joins).
        """
        step = _checked_step(step)
        if local:
            with local_only():
                return self._evaluate(generate, step, device, modules, 0, 1, limit, advance, header, save, local)
        if rank is None or world_size is None:
            rank, world_size = rank_and_world_size()
        self._join("evaluate()")
        return self._evaluate(generate, step, device, modules, rank, world_size, limit, advance, header, save, local)

    def _join(self, what: str) -> None:
        while True:
            self._meetings += 1
            key = f"{self.owner}/{self.prefix}/{self._instance}/{self._meetings}"
            try:
                return wait_for_all_ranks(key, self.join_timeout, f"{self.owner}.{what}")
            except AbandonedMeeting:
                # The others gave up on that call (and raised); this call is their next one.
                log.warning("%s: %s came after the other ranks had given up on the previous call; joining their "
                            "next call", self.owner, what)

    def _evaluate(
        self,
        generate: GenerateImages,
        step: int,
        device: torch.device | str | None,
        modules: Sequence[nn.Module],
        rank: int,
        world_size: int,
        limit: int | None,
        advance: Callable[[int], None] | None,
        header: Mapping[str, Any] | None,
        save: bool,
        local: bool,
    ) -> EvaluationResult:
        def load() -> ClipEncoder:
            loaded = self.load_encoder(quiet=rank != 0)
            return loaded if device is None else loaded.to(device)

        # Jointly: a rank that cannot load CLIP must not leave the others in the next collective.
        encoder = jointly("loading the CLIP model", load, owner=self.owner)
        device = encoder.device
        paired = limit is None
        if paired and not local:
            self._check_same_previous(rank)
        previous = self._load_previous(rank, world_size, step) if paired else None
        paired_step, paired_file = (self._previous_step, self._previous_file) if previous is not None else (None, None)
        metric = ScoreStatistics(scale=self.scale, prefix=self.prefix, keep_scores=True, sync_on_compute=not local)
        metric.to(device)
        candidates = Candidates(self.num_logged_images) if self.num_logged_images else None
        pair_moments = torch.zeros(4, dtype=torch.float64)
        bounds = self.rounds(limit)
        done, rounds, stopped_early, target_reached = 0, 0, False, None

        def render(bound: int) -> None:
            positions = range(done + (rank - done) % world_size, bound, world_size)
            shard = [self._order[p] for p in positions]
            jointly(
                "rendering and scoring",
                lambda: self._score(generate, encoder, shard, metric, candidates, previous, pair_moments, advance),
                owner=self.owner,
            )

        with _generation_mode(modules):
            for bound in bounds:
                render(bound)
                done, rounds = bound, rounds + 1
                if self.stopping_rule is None or limit is not None:
                    continue
                decision = self._decide(metric, pair_moments, previous is not None, done)
                if decision.stop or bound == bounds[-1]:
                    stopped_early, target_reached = decision.stop and done < len(self.library), decision.reached
                    if decision.render_to > done:  # past the stop: the pairs the next evaluation needs
                        render(decision.render_to)
                        done, rounds = decision.render_to, rounds + 1
                    break

        values = metric.compute()
        ids, scores = metric.per_sample()
        values.update(self._tag_means(ids, scores))
        if previous is not None:
            total, total_sq, total_cube, count = all_reduce_sum(pair_moments).tolist()
            if count == 0:
                log.warning(
                    "%s: no prompt of this evaluation was scored by the previous one; no %sdelta", self.prefix, self.prefix
                )
                paired_step, paired_file = None, None
            else:
                # Below MIN_PAIRS the interval is NaN, as compare refuses one: the key stays, so
                # loggers and monitors see the same keys at every evaluation. Skew-corrected: a
                # change carried by a few prompts is skewed (clip_metric.adaptive).
                ci = delta_half_width(total, total_sq, total_cube, count) if count >= MIN_PAIRS else math.nan
                values[self.prefix + "delta"] = torch.tensor(total / count, dtype=torch.float64, device=device)
                values[self.prefix + "delta_ci"] = torch.tensor(ci, dtype=torch.float64, device=device)
                values[self.prefix + "delta_count"] = torch.tensor(count, dtype=torch.float64, device=device)
                if rank == 0:
                    log.info("%s: step %d paired with the evaluation at step %s (%d prompts)",
                             self.prefix, step, paired_step, int(count))
        scores_by_index = dict(zip(ids.tolist(), scores.tolist()))
        best_worst = candidates.gather(scores_by_index, collective_device()) if candidates is not None else None
        records = [
            ScoreRecord(self.library[i].id, self.library[i].text, score, self.library[i].seed,
                        tags=dict(self.library[i].tags))
            for i, score in sorted(scores_by_index.items())
        ]
        result = EvaluationResult(step, values, records, rounds, stopped_early, best_worst=best_worst,
                                  paired_with_step=paired_step, paired_with_file=paired_file,
                                  target_reached=target_reached)
        result.summary = {k[len(self.prefix):]: float(v) for k, v in values.items()}
        rendering = getattr(generate, "rendering", None)
        if isinstance(rendering, Mapping):  # the generator's settings (steps, guidance, size, ...)
            header = {"rendering": _json_safe(rendering), **(header or {})}

        def finish() -> Path | None:
            if rank == 0:  # a local model's weights are hashed once, where the file is written
                result.signature = self.signature(limit)
                if isinstance(rendering, Mapping):  # images rendered differently never pair as alike
                    result.signature = dataclasses.replace(result.signature, rendering=rendering_field(rendering))
            return self._save(result, rank, header) if save and limit is None else None

        result.path = jointly("saving the scores", finish, owner=self.owner)
        if paired:  # the next evaluation pairs with this one
            self._previous = {i: s for i, s in scores_by_index.items() if self._position[i] % world_size == rank}
            self._previous_count = len(scores_by_index)
            self._previous_file = None if result.path is None else str(result.path.resolve())
            self._previous_step = step
            self._previous_local = local
            self._pending_file, self._pending_state = None, {}
        return result

    def check(self, generate: GenerateImages, *, device: torch.device | str | None = None,
              modules: Sequence[nn.Module] = (), prompts: int = 2, what: str = "the generate-and-score check") -> None:
        """Render and score the first ``prompts`` prompts on every rank; nothing is kept or written.

        A broken generator (wrong count, wrong shape, wrong range) fails here, in seconds.
        """
        self._join("check()")
        encoder = self.load_encoder(quiet=rank_and_world_size()[0] != 0)
        if device is not None:
            encoder.to(device)
        metric = ScoreStatistics(scale=self.scale).to(encoder.device)
        indices = list(range(min(prompts, len(self.library))))
        with _generation_mode(modules):
            jointly(
                what,
                lambda: self._score(generate, encoder, indices, metric, None, None, torch.zeros(4, dtype=torch.float64)),
                owner=self.owner,
            )

    def signature(self, limit: int | None = None) -> ScoreSignature:
        """The signature of this evaluator's scores (of a ``limit``-ed check, with ``limit``)."""
        subset = self.subset
        texts = [p.text for p in self.library]
        if limit is not None:
            texts, subset = texts[: min(limit, len(texts))], f"first{min(limit, len(texts))}"
        elif self.target_ci is not None and len(self.library) > self.min_prompts:
            # The rule, not the stopping point: evaluations that stop at different points share it.
            subset += f",proportional-prefix:{self.stopping_rule.describe()}"  # type: ignore[union-attr]
        return signature_of(
            self.load_encoder(), scale=self.scale, library=self.library_name, texts=texts, subset=subset
        )

    # ------------------------------------------------------------------ internals
    def _score(
        self,
        generate: GenerateImages,
        encoder: ClipEncoder,
        shard: list[int],
        metric: ScoreStatistics,
        candidates: Candidates | None,
        previous: dict[int, float] | None,
        pair_moments: Tensor,
        advance: Callable[[int], None] | None = None,
    ) -> None:
        if shard:
            encoder.cache_prompts([self.library[i].text for i in shard])
        for start in range(0, len(shard), self.batch_size):
            ids = shard[start : start + self.batch_size]
            texts = [self.library[i].text for i in ids]
            # Copies: a generator that edits its arguments cannot change what is scored.
            images = generate(list(texts), [self.library[i].seed for i in ids])
            cosines = encoder.score(images, texts, self.value_range)
            metric.update(cosines, ids)
            if previous is not None:
                values = scale_scores(cosines.detach().double().cpu(), self.scale).tolist()
                diffs = [value - previous[index] for index, value in zip(ids, values) if index in previous]
                if diffs:  # one small tensor per batch, not per sample
                    d = torch.tensor(diffs, dtype=torch.float64)
                    pair_moments += torch.stack(
                        [d.sum(), (d * d).sum(), (d * d * d).sum(), torch.tensor(float(d.numel()), dtype=torch.float64)]
                    )
            if candidates is not None:
                candidates.add(images, self.value_range, ids, cosines)
            if advance is not None:
                advance(len(ids))

    def _decide(self, metric: ScoreStatistics, pair_moments: Tensor, paired: bool, scored: int) -> Decision:
        """The stopping rule's decision from the synced moments (the same answer on every rank)."""
        local = torch.cat([
            torch.stack([metric.total.cpu(), metric.total_sq.cpu(), metric.count.cpu().double()]), pair_moments
        ])
        synced = all_reduce_sum(local).tolist()
        rule = self.stopping_rule
        if rule is None:
            raise RuntimeError("an adaptive decision was asked of an evaluator without target_ci")
        return rule.decide(
            scored, len(self.library), synced[:3], synced[3:] if paired else None, self._previous_count if paired else 0
        )

    def _check_same_previous(self, rank: int) -> None:
        """Raise on every rank if the ranks would pair with different evaluations (a collective)."""
        mine = (self._previous is not None, self._previous_count, self._previous_step, self._previous_local,
                self._pending_file)
        every = gather_objects(mine)
        if all(other == every[0] for other in every):
            return

        def describe(r: int, d: tuple) -> str:
            has, count, step, local, pending = d
            if pending is not None:
                return f"rank {r}: a resumed state naming {pending}"
            if not has:
                return f"rank {r}: none"
            kind = "a local=True evaluation" if local else "an evaluation"
            return f"rank {r}: {kind} of {count} prompts at step {step}"

        raise RuntimeError(
            f"{self.owner}: the ranks hold different previous evaluations to pair with ("
            + "; ".join(describe(r, d) for r, d in enumerate(every))
            + "). An evaluation with local=True was mixed with evaluations every rank joins; call forget_previous() "
            "(or load the same state) on every rank before the next joint evaluation."
        )

    def _load_previous(self, rank: int, world_size: int, step: int) -> dict[int, float] | None:
        """This rank's previous scores by library index: from memory, or from a score file after a resume."""
        if self._pending_file is None and not self._pending_state:
            return self._previous
        state, self._pending_state = self._pending_state, {}
        named, self._pending_file = self._pending_file, None
        # Rank 0 chooses the file (the newest of this run before this step) and every rank reads it.
        choice = jointly(
            "choosing the previous evaluation's score file",
            lambda: self._safe_resume_choice(named, state, step) if rank == 0 else None,
            owner=self.owner,
        )
        path, reason = broadcast_object(choice)
        if path is None:
            if reason and rank == 0:
                log.warning("%s: cannot pair with the evaluation before the resume (%s); this one is unpaired",
                            self.prefix, reason)
            self._previous, self._previous_count, self._previous_file, self._previous_step = None, 0, None, None
            return None

        def read() -> tuple[dict[int, float], int]:
            scores = read_scores(path)
            scale = scores.header.get("scale", "cosine")
            if scale != self.scale:
                raise ValueError(f"{path} holds scores on scale {scale!r}, not {self.scale!r}")
            matched = {self._keys[r.key]: r.score for r in scores.records if r.key in self._keys}
            return matched, scores.step

        try:
            matched, file_step = jointly("reading the previous evaluation's score file", read, owner=self.owner)
        except (OSError, ValueError, RuntimeError) as err:
            if rank == 0:
                log.warning("%s: cannot pair with the evaluation before the resume (%s); this one is unpaired",
                            self.prefix, err)
            self._previous, self._previous_count, self._previous_file, self._previous_step = None, 0, None, None
            return None
        if rank == 0 and path != named:
            log.info("%s: resumed; pairing with the newest evaluation of this run before step %d: %s (step %d)",
                     self.prefix, step, path, file_step)
        self._previous = {i: s for i, s in matched.items() if self._position[i] % world_size == rank}
        self._previous_count = len(matched)
        self._previous_file, self._previous_step, self._previous_local = path, file_step, False
        return self._previous

    def _safe_resume_choice(
        self, named: str | None, state: Mapping[str, Any], step: int
    ) -> tuple[str | None, str | None]:
        try:
            return self._resume_choice(named, state, step)
        except (OSError, ValueError) as err:  # an unreadable folder: unpaired, with the reason
            return None, str(err)

    def _resume_choice(
        self, named: str | None, state: Mapping[str, Any], step: int
    ) -> tuple[str | None, str | None]:
        """``(path, None)`` of the evaluation to pair with after a resume, or ``(None, why not)``.

        The state was saved when the checkpoint was; an evaluation may have followed at that very
        step (diffusers' scripts save, then validate). So the newest score file of the same run
        (its header's ``run_id``), from the state's file on and before ``step``, is the last
        evaluation that happened; a file of a run resumed from an earlier checkpoint, at this
        step or later, is not. It is looked for in this evaluator's ``scores_dir`` first (a run
        folder copied or moved elsewhere and resumed there), then in the state's folder. Without a
        run id (an older state), the state's file.
        """
        run, directory = state.get("id"), state.get("dir")
        named_step = state.get("previous_step")
        if named is not None:
            directory = str(Path(named).parent)
        # This evaluator's own folder first: a run's output folder copied or moved elsewhere and
        # resumed there holds the run's files, and the state's absolute path names the old place.
        folders = [str(self.scores_dir)] if self.scores_dir is not None else []
        folders += [directory] if isinstance(directory, str) else []
        newest = None
        for folder in folders:
            newest = self._newest_of_run(folder, run, named_step, step)
            if newest is not None:
                break
        path = newest if newest is not None else named
        if path is None:
            return None, None  # nothing was evaluated before the checkpoint: a first evaluation
        theirs = _header(path).get("signature")
        if isinstance(theirs, Mapping):
            mine = self.signature().as_dict()
            fields = [k for k in _PAIRING_FIELDS if not (k == "precision" and mine[k] == "auto")]  # not resolved yet
            differ = [f"{k}: {theirs.get(k)} vs {mine[k]}" for k in fields if theirs.get(k) != mine[k]]
            if differ:
                return None, f"{path} was scored differently ({'; '.join(differ)})"
        return path, None

    @staticmethod
    def _newest_of_run(directory: str, run: Any, named_step: Any, step: int) -> str | None:
        """The newest score file in ``directory`` of run ``run``, from ``named_step`` on and before ``step``."""
        if not isinstance(run, str) or not os.path.isdir(directory):
            return None
        newest: tuple[tuple[int, int], str] | None = None
        for entry in os.scandir(directory):
            match = _SCORE_FILE.fullmatch(entry.name)
            if match is None or not entry.is_file():  # never open a FIFO or a device
                continue
            head = _header(entry.path)
            file_step = head.get("step")
            if head.get("run_id") != run or not isinstance(file_step, int) or isinstance(file_step, bool):
                continue
            if file_step >= step or (isinstance(named_step, int) and file_step < named_step):
                continue
            key = ((file_step, int(match.group(2) or 0)), str(Path(entry.path).resolve()))
            if newest is None or key > newest:
                newest = key
        return None if newest is None else newest[1]

    def _save(self, result: EvaluationResult, rank: int, header: Mapping[str, Any] | None) -> Path | None:
        if rank != 0 or self.scores_dir is None:
            return None
        full_header = {
            "scale": self.scale, "prefix": self.prefix, **(header or {}),
            "signature": None if result.signature is None else result.signature.as_dict(),
            "run_id": self.run_id,
            "paired_with": None if result.paired_with_step is None else {
                "step": result.paired_with_step, "file": result.paired_with_file,
            },
        }
        rule = self.stopping_rule
        if rule is not None and len(self.library) > self.min_prompts:
            full_header["adaptive"] = {
                **rule.as_dict(), "rounds": result.rounds, "stopped_early": result.stopped_early,
                "target_reached": result.target_reached,
            }
        try:
            for attempt in range(1000):
                suffix = "" if attempt == 0 else f"-{attempt}"
                path = self.scores_dir / f"step-{result.step:08d}{suffix}.jsonl"
                try:
                    return write_scores(path, result.records, step=result.step, header=full_header, exclusive=True)
                except FileExistsError:
                    if not self.scores_dir.is_dir():
                        raise
                    continue  # another evaluation at this step (validate() twice, test after fit)
            raise FileExistsError(f"Too many score files for step {result.step} in {self.scores_dir}")
        except OSError as err:
            # The scores are computed: a folder that fails only now (read-only, full, removed)
            # costs the file, not the evaluation's values.
            warnings.warn(
                f"{self.owner}: the scores of step {result.step} were not written to {self.scores_dir} ({err}); "
                "the values are returned, and the next evaluation after a resume cannot pair with this one",
                UserWarning, stacklevel=2,
            )
            return None

    def _tag_means(self, ids: Tensor, scores: Tensor) -> dict[str, Tensor]:
        """``prefix + "by_<tag>/<value>"`` (:func:`~clip_metric.utilities.keys.tag_key`): the mean score of the
        prompts with each value of each tag."""
        sums: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
        for index, score in zip(ids.tolist(), scores.tolist()):
            for name, value in self.library[index].tags.items():
                sums[(name, value)][0] += score
                sums[(name, value)][1] += 1
        out: dict[str, Tensor] = {}
        for (name, value), (total, count) in sorted(sums.items()):
            key = self.prefix + tag_key(name, value)
            while key in out:  # two values that differ only in characters loggers refuse
                key += "_"
            out[key] = torch.tensor(total / count, dtype=torch.float64, device=scores.device)
        return out


@contextlib.contextmanager
def _generation_mode(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Eval mode and no_grad; every sub-module's mode and every global RNG restored afterwards."""
    modes = {module: module.training for root in modules for module in root.modules()}
    try:
        for root in modules:
            root.eval()
        with preserved_rng(), torch.no_grad():
            yield
    finally:
        for module, training in modes.items():
            module.train(training)


def _library_name(prompts: Any) -> str:
    """The library's name for the score signature: a bundled name, a file name, or ``custom``."""
    if prompts is True:
        return BUILTIN_LIBRARY
    if isinstance(prompts, str) and prompts in BUILTIN_LIBRARIES:
        return prompts
    if isinstance(prompts, (str, os.PathLike)):
        return Path(prompts).name
    return "custom"


def _checked_step(step: Any) -> int:
    """``step`` as an ``int``: any integer type (``numpy.int64`` too), not a bool, a float or a negative."""
    if isinstance(step, numbers.Integral) and not isinstance(step, bool) and int(step) >= 0:
        return int(step)
    raise ValueError(f"Expected `step` to be a non-negative int but got {step!r}")


def _checked_scores_dir(path: Path) -> Path:
    """``path`` if it is, or can be made, a writable folder; refused now rather than after rendering.

    Raises:
        ValueError: if ``path`` (or the nearest existing folder above it) is not a directory.
        PermissionError: if that folder cannot be written (permissions, a read-only filesystem).
    """
    existing = path
    while not os.path.lexists(existing) and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        what = "it" if existing == path else f"{str(existing)!r} above it"
        raise ValueError(
            f"Expected `scores_dir` to be a directory (or a path one can be made at) but got {str(path)!r}: "
            f"{what} exists and is not a directory"
        )
    read_only = hasattr(os, "statvfs") and bool(os.statvfs(existing).f_flag & getattr(os, "ST_RDONLY", 0))
    if read_only or not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(
            f"Expected a writable `scores_dir` but got {str(path)!r}: {str(existing)!r} cannot be written"
            f"{' (a read-only filesystem)' if read_only else ''}"
        )
    return path


def _header(path: str | os.PathLike) -> dict[str, Any]:
    """The header object of a score file (its first line); empty when it has none or cannot be read."""
    if not os.path.isfile(path):  # never open a FIFO or a device
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            head = json.loads(handle.readline(1 << 20))
    except (OSError, ValueError):
        return {}
    return head if isinstance(head, dict) else {}


def _json_safe(value: Any) -> Any:
    """``value`` with what JSON cannot hold (dtypes, tuples, objects) written as text."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and math.isfinite(float(value)):
        return float(value)
    return str(value)
