"""``ClipScoreCallback``: score the model under training on a prompt library, on every rank."""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from clip_metric.attention import ATTENTION_POLICIES, AttentionPolicy, check_attention
from clip_metric.distributed import jointly
from clip_metric.encoder import ClipEncoder
from clip_metric.evaluation import DEFAULT_MIN_PROMPTS, DEFAULT_ROUND_SIZE, EvaluationResult, PromptEvaluator
from clip_metric.images import check_value_range
from clip_metric.config import callback_kwargs
from clip_metric.lightning.generation import GenerateFn, resolve_generate_fn
from clip_metric.lightning.namespace import (
    callback_bases,
    is_overridden,
    lightning_class,
    lightning_classes,
    namespace_of,
)
from clip_metric.lightning.progress import prompt_progress
from clip_metric.lightning.reporting import report, report_signature
from clip_metric.prompts import Prompt, PromptSource
from clip_metric.signature import ScoreSignature
from clip_metric.utilities.checks import (
    check_bool,
    check_callable,
    check_choice,
    check_model_source,
    check_non_negative_int,
    check_optional_path,
    check_optional_positive_int,
    check_positive_int,
    check_prefix,
)
from clip_metric.utilities.constants import (
    DEFAULT_MODEL,
    DEFAULT_PREFIX,
    DELTA_NAMES,
    REPORT_TO,
    SCORES_DIRNAME,
    STAT_NAMES,
)
from clip_metric.functional import check_scale
from clip_metric.utilities.keys import is_tag_key
from clip_metric.utilities.precision import check_precision

log = logging.getLogger("clip_metric")

_T = TypeVar("_T")
# Folder for score files of runs without a logger (versioned like Lightning's own log folders).
_NO_LOGGER_DIRNAME = "clip_metric_logs"
# Prompts rendered by the check at fit start: two, so a generator that returns a fixed number of
# images is caught too.
_PREFLIGHT_PROMPTS = 2


class ClipScoreCallback(*callback_bases()):  # type: ignore[misc]
    r"""Generate images for a prompt library with the model under training and log CLIP scores.

    At the end of each validation epoch (or every ``every_n_train_steps`` optimizer steps), and
    at the end of ``trainer.test()``, the prompts are split across global ranks with no
    duplicates and no padding; every rank renders and scores its share; a
    :class:`~clip_metric.ScoreStatistics` syncs sum, sum of squares, count, min and max; and
    ``clip/mean``, ``clip/mean_ci`` (half-width of its 95% interval), ``clip/min``, ``clip/max``,
    ``clip/std``, ``clip/count`` are logged through the trainer's loggers, where ``EarlyStopping``
    and ``ModelCheckpoint`` can ``monitor="clip/mean"``. From the second evaluation on,
    ``clip/delta`` is the change of the mean since the previous evaluation over the prompts both
    scored (same seeds), with ``clip/delta_ci`` and ``clip/delta_count`` (pairs); after a resume
    the previous evaluation is read back from its score file. With ``target_ci`` the library is
    rendered in rounds and each evaluation stops once the interval it targets is narrow enough.
    The loop itself is :class:`~clip_metric.evaluation.PromptEvaluator`, usable without Lightning. Sanity-check validation is skipped; under ``fast_dev_run`` one batch
    of prompts per rank is scored once, whatever the schedule, and no file is written.

    Images come from ``generate_fn(pl_module, prompts, seeds)`` or, without one, from
    ``pl_module.generate_images(prompts, seeds)`` (see :mod:`clip_metric.lightning.generation`).
    Generation runs like ``validation_step``: in eval mode, under ``no_grad`` and inside the
    trainer's precision context (``bf16-true``, ``16-mixed``, ...); CLIP keeps its own precision.
    Each prompt's seed derives from its text, and every global RNG is restored afterwards, so the
    callback does not change the training trajectory.

    Everything that can fail at the first evaluation fails before the first training step: the
    CLIP model is loaded in ``setup``, schedules that a monitor of these keys could not rely on
    are refused there (``MisconfigurationException`` saying how to fix them), a schedule that
    never evaluates is warned about, and one tiny generate-and-score pass runs at fit start.
    Failures are decided jointly, so no rank is left waiting in a collective. Rank 0 shows a bar
    over the prompts in the trainer's TQDM or Rich progress bar, and logs a start and a result
    line per evaluation.

    The CLIP encoder is not a parameter of the module, not in its optimizer and not in any
    checkpoint. ``offload=True`` moves it to the CPU between evaluations.

    Args:
        model_name_or_path: CLIP model: hub id (default ``openai/clip-vit-large-patch14-336``),
            local directory, or a :class:`~clip_metric.ClipEncoder`.
        prompts: the prompt library: ``True``/``"default"`` (built-in), a path (``.txt``,
            ``.json``, ``.jsonl``, ``.tsv``, ``.csv``), or an in-memory list/dict.
        max_prompts: score a deterministic subset of this many prompts.
        generate_fn: ``(pl_module, prompts, seeds) -> images``; default: ``pl_module.generate_images``.
        batch_size: prompts per generation call on each rank.
        every_n_epochs: evaluate at the end of every n-th validation epoch (default 1).
        every_n_train_steps: evaluate every n optimizer steps instead of at validation end.
        precision: CLIP precision (see :class:`~clip_metric.ClipScore`).
        value_range: ``(low, high)`` of float images from ``generate_fn`` (default ``(0, 1)``).
        scale: ``"cosine"`` (default), ``"torchmetrics"`` or ``"clipscore"``.
        prefix: key prefix (default ``"clip/"``), part of ``state_key``: two callbacks in one
            Trainer need two prefixes.
        attention_policy: ``"restore"`` (default: CLIP runs with torch's original attention while
            SageAttention stays on for the model under training), ``"strict"`` (fail at setup) or
            ``"ignore"``.
        offload: move the encoder to the CPU between evaluations to give GPU memory back.
        report_to: which loggers get the extras (histogram, best/worst images, per-prompt table):
            ``"all"``, ``"tensorboard"``, ``"wandb"`` or ``"none"``. Scalars go to every logger.
        num_logged_images: best and worst samples shown in the image grids (0 disables).
        save_scores: write each evaluation's per-prompt scores (``clip_scores/step-*.jsonl``),
            for ``clip-metric compare``.
        scores_dir: where score files go. Default: ``<log_dir>/clip_scores`` of the first logger
            (versioned by the logger), else a new ``<default_root_dir>/clip_metric_logs/version_N/
            clip_scores``; a sub-folder per prefix other than ``"clip/"``. Resolved once per Trainer
            in ``setup``; files are never overwritten.
        enabled: ``False`` makes the callback do nothing (``evaluation_type: "none"``).
        target_ci: render in rounds and stop each evaluation once the 95% interval of ``target``
            has a half-width of at most this (in units of ``scale``); ``max_prompts`` stays the
            upper bound. None (default): the whole library every time.
        target: ``"delta"`` (default; the first evaluation, with nothing to pair with, targets the
            mean) or ``"mean"``. See :class:`~clip_metric.evaluation.PromptEvaluator`.
        min_prompts: with ``target_ci``, prompts scored before the first check (default 64).
        round_size: with ``target_ci``, prompts added per round over all ranks (default 32; it
            does not depend on the world size, so 1 and N processes stop at the same point).

    Raises:
        ValueError: for invalid arguments (each names the value).

    Example:
        >>> from clip_metric import ClipScoreCallback
        >>> callback = ClipScoreCallback("openai/clip-vit-large-patch14-336", max_prompts=64)
        >>> callback.every_n_epochs, callback.state_key
        (1, "ClipScoreCallback{'prefix': 'clip/'}")
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike | ClipEncoder = DEFAULT_MODEL,
        *,
        prompts: PromptSource = True,
        max_prompts: int | None = None,
        generate_fn: GenerateFn | None = None,
        batch_size: int = 8,
        every_n_epochs: int | None = None,
        every_n_train_steps: int | None = None,
        precision: str | int = "auto",
        value_range: tuple[float, float] = (0.0, 1.0),
        scale: str = "cosine",
        prefix: str = DEFAULT_PREFIX,
        attention_policy: AttentionPolicy = "restore",
        offload: bool = False,
        report_to: Literal["all", "tensorboard", "wandb", "none"] = "all",
        num_logged_images: int = 4,
        save_scores: bool = True,
        scores_dir: str | os.PathLike | None = None,
        enabled: bool = True,
        target_ci: float | None = None,
        target: Literal["delta", "mean"] = "delta",
        min_prompts: int = DEFAULT_MIN_PROMPTS,
        round_size: int = DEFAULT_ROUND_SIZE,
    ) -> None:
        check_model_source(model_name_or_path, ClipEncoder)
        self.batch_size = check_positive_int("batch_size", batch_size)
        if every_n_epochs is not None and every_n_train_steps is not None:
            raise ValueError(
                f"Expected only one of `every_n_epochs` ({every_n_epochs}) and `every_n_train_steps` "
                f"({every_n_train_steps})"
            )
        self.every_n_train_steps = check_optional_positive_int("every_n_train_steps", every_n_train_steps)
        if every_n_epochs is None and every_n_train_steps is None:
            every_n_epochs = 1
        self.every_n_epochs = check_optional_positive_int("every_n_epochs", every_n_epochs)
        self.report_to = check_choice("report_to", report_to, REPORT_TO)
        self.num_logged_images = check_non_negative_int("num_logged_images", num_logged_images)
        self.prefix = check_prefix(prefix)
        if isinstance(model_name_or_path, ClipEncoder) and precision != "auto":
            raise ValueError(
                f"`precision={precision!r}` would be ignored: a ClipEncoder brings its own precision; set it there"
            )
        if isinstance(model_name_or_path, ClipEncoder) and attention_policy != model_name_or_path.attention_policy:
            raise ValueError(
                f"`attention_policy={attention_policy!r}` would not reach CLIP: the ClipEncoder runs with its own "
                f"{model_name_or_path.attention_policy!r}; set it on the encoder"
            )
        self.generate_fn = None if generate_fn is None else check_callable("generate_fn", generate_fn)
        self.attention_policy = check_choice("attention_policy", attention_policy, ATTENTION_POLICIES)
        self.offload = check_bool("offload", offload)
        self.save_scores = check_bool("save_scores", save_scores)
        self.enabled = check_bool("enabled", enabled)
        self.scores_dir = check_optional_path("scores_dir", scores_dir)
        self.precision = check_precision(precision)
        self.value_range = check_value_range(value_range)
        self.scale = check_scale(scale)
        self.model_name_or_path = model_name_or_path
        if enabled and (prompts is None or prompts is False):
            raise ValueError(
                f"Expected `prompts` to be a library (True, 'default', 'parti', 'geneval', a path, a list or a dict) "
                f"but got {prompts!r}; to turn CLIP scoring off use enabled=False"
            )
        # The evaluation loop; building it loads the library, so a bad file fails at
        # construction, not hours into training.
        self._evaluator: PromptEvaluator | None = PromptEvaluator(
            model_name_or_path, prompts=prompts, max_prompts=max_prompts, batch_size=batch_size,
            value_range=value_range, scale=scale, prefix=prefix, precision=precision,
            attention_policy=attention_policy, target_ci=target_ci, target=target, min_prompts=min_prompts,
            round_size=round_size, num_logged_images=num_logged_images,
        ) if enabled else None
        if self._evaluator is not None:
            self._evaluator.owner = "ClipScoreCallback"
        self.target_ci = None if self._evaluator is None else self._evaluator.target_ci
        self.target = target if self._evaluator is None else self._evaluator.target
        self.prompt_library: list[Prompt] = [] if self._evaluator is None else self._evaluator.library
        # The score signature of the last evaluation, on rank 0 (where score files are written).
        self.signature: ScoreSignature | None = None
        self._signature_logged_for: weakref.ref[Trainer] | None = None
        self._generate: GenerateFn | None = None
        self._resolved_scores_dir: Path | None = None
        # Which Trainer the folder was resolved for, and that run's folder, shared by the
        # ClipScoreCallbacks of one Trainer.
        self._scores_dir_owner: weakref.ref[Trainer] | None = None
        self._run_dir: Path | None = None
        self._last_step_evaluated = -1
        self.history: list[dict[str, float]] = []

    def __getstate__(self) -> dict[str, Any]:
        # A weak reference does not pickle (ddp_spawn sends the callback to its workers); a
        # worker resolves its own folder.
        return {**self.__dict__, "_scores_dir_owner": None, "_signature_logged_for": None}

    def _resolved_for(self, trainer: Trainer) -> bool:
        return self._scores_dir_owner is not None and self._scores_dir_owner() is trainer

    @property
    @override
    def state_key(self) -> str:
        # The prefix tells two callbacks of one Trainer apart (two libraries, two CLIP models).
        return self._generate_state_key(prefix=self.prefix)

    @classmethod
    def from_config(cls, config: str | os.PathLike | Mapping[str, Any], **overrides: Any) -> ClipScoreCallback:
        """Build from a training ``config.json`` (path or dict) using its CLIP-evaluation keys.

        See :mod:`clip_metric.config` for the keys read. ``overrides`` are passed to
        the constructor.

        Raises:
            ValueError: for unknown values of these keys, naming the key and value.
            FileNotFoundError: if the config file does not exist.
        """
        return cls(**{**callback_kwargs(config), **overrides})

    # ------------------------------------------------------------------ lightning hooks
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not self.enabled:
            return
        _check_namespace(self, trainer)
        others = [c for c in trainer.callbacks if isinstance(c, ClipScoreCallback) and c is not self and c.enabled]
        if any(c.prefix == self.prefix for c in others):
            raise _misconfiguration(
                trainer,
                f"Two ClipScoreCallbacks log under prefix {self.prefix!r}; give each its own `prefix` "
                "(e.g. prefix='clip/parti/')"
            )
        # Fail before training starts: missing generator, SageAttention under "strict", bad schedule.
        self._generate = resolve_generate_fn(pl_module, self.generate_fn)
        findings = check_attention(self.attention_policy, module=pl_module, config=getattr(pl_module, "hparams", None))
        for finding in findings:
            log.info("CLIP scoring will run with torch's original attention: %s", finding.detail)
        if stage == "fit":
            self._check_monitors(trainer, pl_module)
            self._check_checkpoint_filenames(trainer)
            reason = self._no_validation_loop(trainer, pl_module)
            if reason:
                rank_zero_warn(f"ClipScoreCallback will never evaluate in this run: {reason}")
        if not self.save_scores or trainer.fast_dev_run:
            self._resolved_scores_dir, self._scores_dir_owner = None, None
        elif not self._resolved_for(trainer):  # once per Trainer: fit, validate and test share it
            self._resolved_scores_dir = self._resolve_scores_dir(trainer)
            self._scores_dir_owner = weakref.ref(trainer)
        self._require_evaluator().scores_dir = self._resolved_scores_dir
        self._jointly(trainer, "loading the CLIP model", lambda: self._load_encoder(trainer))

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.enabled or trainer.fast_dev_run or not self.prompt_library:
            return
        # One tiny generate-and-score pass: a broken generator stops the run in seconds, not
        # after the first epoch. Same prompts on every rank; nothing is logged or kept.
        self._require_evaluator().check(
            self._generator(trainer, pl_module), device=pl_module.device, modules=[pl_module],
            prompts=_PREFLIGHT_PROMPTS, what="the generate-and-score check at fit start",
        )
        if self.offload:
            self._offload()

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # The first point where the epoch length is known; the validation loop was checked in setup.
        if self.enabled and not self._no_validation_loop(trainer, pl_module):
            reason = self._out_of_reach(trainer)
            if reason:
                rank_zero_warn(f"ClipScoreCallback will never evaluate in this run: {reason}")

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.enabled or trainer.sanity_checking:
            return
        if trainer.state.fn == "fit":  # under trainer.validate() it always runs
            if self.every_n_epochs is None:
                return  # a step schedule evaluates in on_train_batch_end
            if not trainer.fast_dev_run and (trainer.current_epoch + 1) % self.every_n_epochs != 0:
                return
        self._log_epoch_level(trainer, pl_module, self.evaluate(trainer, pl_module))

    @override
    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.enabled:
            self._log_epoch_level(trainer, pl_module, self.evaluate(trainer, pl_module))

    @override
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        n = self.every_n_train_steps
        step = _evaluation_step(trainer)
        if not self.enabled or n is None or step == 0 or step == self._last_step_evaluated:
            return
        # fast_dev_run checks the wiring: one evaluation, at the first step, whatever the schedule.
        if (step != 1) if trainer.fast_dev_run else (step % n != 0):
            return
        values = self.evaluate(trainer, pl_module)
        # Written to the loggers directly: step-level self.log() would be filtered by
        # log_every_n_steps. callback_metrics makes them monitorable all the same.
        trainer.callback_metrics.update({k: v.detach().clone() for k, v in values.items()})
        _log_to_loggers(trainer, values, step)

    @override
    def state_dict(self) -> dict[str, Any]:
        # The previous evaluation is named by its score file (read back on resume), not copied in.
        previous = {} if self._evaluator is None else self._evaluator.state_dict()
        return {"last_step_evaluated": self._last_step_evaluated, "history": list(self.history), **previous}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Tolerant: checkpoints from other versions may lack keys, carry extra ones or other types.
        step = state_dict.get("last_step_evaluated", -1)
        self._last_step_evaluated = step if isinstance(step, int) and not isinstance(step, bool) else -1
        history = state_dict.get("history", [])
        self.history = [dict(h) for h in history if isinstance(h, Mapping)] if isinstance(history, list) else []
        if self._evaluator is not None:
            self._evaluator.load_state_dict(state_dict)

    @staticmethod
    def _log_epoch_level(trainer: Trainer, pl_module: LightningModule, values: dict[str, Tensor]) -> None:
        # The values are already identical on every rank: a max over ranks leaves them exact and
        # tells Lightning they are synced. Float so Lightning need not convert clip/count.
        # Through Lightning they reach callback_metrics (monitors) and the results of validate()
        # and test(); the loggers get them from Lightning only where its step is the evaluation's.
        step = _evaluation_step(trainer)
        through_lightning = _lightning_logs_at(trainer, step)
        pl_module.log_dict(
            {k: v.float() for k, v in values.items()}, on_step=False, on_epoch=True, sync_dist=True,
            reduce_fx="max", add_dataloader_idx=False, logger=None if through_lightning else False,
        )
        if not through_lightning:
            _log_to_loggers(trainer, values, step)

    # ------------------------------------------------------------------ setup checks
    def _owns_key(self, key: str) -> bool:
        """Whether this callback logs ``key``: ``clip/mean``, not another callback's ``clip/parti/mean``."""
        rest = key[len(self.prefix) :] if key.startswith(self.prefix) else None
        if rest is None:
            return False
        return rest in STAT_NAMES or rest in DELTA_NAMES or is_tag_key(rest)

    def _monitors(self, trainer: Trainer) -> list[Callback]:
        return [
            c for c in trainer.callbacks
            if _is(c, "EarlyStopping", "ModelCheckpoint") and isinstance(c.monitor, str) and self._owns_key(c.monitor)
        ]

    def _check_monitors(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Refuse schedules where a monitor of our keys would find no value, or a stale one."""
        for monitor in self._monitors(trainer):
            if monitor.monitor[len(self.prefix):] in DELTA_NAMES:
                raise _misconfiguration(
                    trainer,
                    f"{type(monitor).__name__}(monitor={monitor.monitor!r}): {monitor.monitor} is not logged at the "
                    f"first evaluation (there is nothing to pair it with), so the monitor would find no value. "
                    f"Monitor {self.prefix}mean."
                )
            problem = self._schedule_problem(trainer, pl_module, monitor)
            if problem:
                raise _misconfiguration(trainer, f"{type(monitor).__name__}(monitor={monitor.monitor!r}) {problem}")

    def _schedule_problem(self, trainer: Trainer, pl_module: LightningModule, monitor: Callback) -> str | None:
        """What keeps ``monitor`` from seeing a fresh evaluation at each of its checks, and the fix; None if nothing."""
        n_steps, n_epochs = self.every_n_train_steps, self.every_n_epochs
        check_every = trainer.check_val_every_n_epoch
        if _is(monitor, "ModelCheckpoint"):
            if getattr(monitor, "_train_time_interval", None) is not None:
                return (
                    "saves on a timer, which no evaluation schedule lines up with: it would find no value, or a stale "
                    "one. Save on steps: ModelCheckpoint(every_n_train_steps=N) with ClipScoreCallback(every_n_train_steps=N)."
                )
            ckpt_steps = getattr(monitor, "_every_n_train_steps", 0)
            if ckpt_steps:
                if n_steps is not None and ckpt_steps % n_steps == 0:
                    return None
                when = f"every {n_steps} steps" if n_steps is not None else "at validation end"
                return (
                    f"saves every {ckpt_steps} training steps, but ClipScoreCallback evaluates {when}: it would find "
                    f"no value, or a stale one. Use ClipScoreCallback(every_n_train_steps=N) with N dividing {ckpt_steps}."
                )
            every = monitor.every_n_epochs or 0
            if every == 0:
                return None  # saves no monitored checkpoint
            flag, explicit = "save_on_train_epoch_end", getattr(monitor, "_save_on_train_epoch_end", None)
        else:
            every = 1
            flag, explicit = "check_on_train_epoch_end", getattr(monitor, "_check_on_train_epoch_end", None)
        # Where the monitor checks: at training epoch end, or at validation end (how both decide by default).
        at_epoch_end = explicit if explicit is not None else (trainer.val_check_interval == 1.0 and check_every == 1)
        flag_fix = f" and {type(monitor).__name__}({flag}=False)" if explicit else ""

        if n_steps is not None:
            steps = n_steps * trainer.accumulate_grad_batches
            interval = trainer.val_check_interval
            if not at_epoch_end and check_every is None and isinstance(interval, int) and interval % steps == 0:
                return None
            where = "at training epoch end" if at_epoch_end else "at validation"
            missing = self._validation_loop_missing(trainer, pl_module)
            if missing:  # validation cannot be moved to the evaluated steps
                fix = (
                    f"Save on the evaluated steps: ModelCheckpoint(every_n_train_steps={n_steps})"
                    if _is(monitor, "ModelCheckpoint")
                    else "Add a validation loop and validate at the steps it evaluates: "
                    f"Trainer(val_check_interval={steps}, check_val_every_n_epoch=None)"
                )
                return (
                    f"checks {where}, which does not line up with ClipScoreCallback(every_n_train_steps={n_steps}), "
                    f"and {missing}: it would find no value, or a stale one. {fix}."
                )
            return (
                f"checks {where}, which does not line up with ClipScoreCallback(every_n_train_steps={n_steps}): it "
                "would find no value, or a stale one. Validate at the steps it evaluates: "
                f"Trainer(val_check_interval={steps}, check_val_every_n_epoch=None){flag_fix}; or evaluate at "
                "validation end (every_n_epochs=1)."
            )

        no_loop = self._no_validation_loop(trainer, pl_module)
        if no_loop:
            return (
                f"would never find a value: ClipScoreCallback evaluates at validation end, and {no_loop}. Add a "
                "validation loop, or evaluate on steps: ClipScoreCallback(every_n_train_steps=N) with "
                "ModelCheckpoint(every_n_train_steps=N)."
            )
        n = n_epochs or 1  # one of the two schedules is always set
        if at_epoch_end:  # checks every `every`-th training epoch end: each must follow an evaluation
            if check_every is not None and every % math.lcm(n, check_every) == 0:
                return None
        elif math.lcm(every, check_every or 1) % n == 0:  # checks at the validations of every `every`-th epoch
            return None
        validated = f", and the trainer validates every {check_every} epochs" if check_every and check_every > 1 else ""
        alternative = (
            f"; or save in evaluated epochs only: ModelCheckpoint(every_n_epochs={math.lcm(n, check_every or 1)})"
            if _is(monitor, "ModelCheckpoint") and not explicit else ""
        )
        return (
            f"checks in epochs where ClipScoreCallback(every_n_epochs={n}) does not evaluate (it evaluates in epochs "
            f"{n}, {2 * n}, ...{validated}): it would find no value, or count the last one again against its "
            "patience. Evaluate at every validation and validate less often: ClipScoreCallback(every_n_epochs=1) "
            f"with Trainer(check_val_every_n_epoch={n * (check_every or 1)}){flag_fix}{alternative}."
        )

    def _check_checkpoint_filenames(self, trainer: Trainer) -> None:
        """Warn where Lightning would write one of our keys, '/' and all, into a checkpoint's path."""
        for checkpoint in trainer.checkpoint_callbacks:
            filename = getattr(checkpoint, "filename", None)
            if not _is(checkpoint, "ModelCheckpoint") or not isinstance(filename, str):
                continue
            # The metric names in the template, found as ModelCheckpoint finds them.
            keys = [group[1:] for group in re.findall(r"(\{.*?)[:\}]", filename)]
            ours = [key for key in keys if self._owns_key(key) and "/" in key]
            if ours and checkpoint.auto_insert_metric_name:
                key = ours[0]
                rank_zero_warn(
                    f"ModelCheckpoint(filename={filename!r}) writes '{key}=...' into the file name "
                    "(auto_insert_metric_name=True), and its '/' makes a sub-folder. Pass "
                    "auto_insert_metric_name=False and name the value without '/', e.g. "
                    f"filename='epoch={{epoch}}-{key.replace('/', '_')}={{{key}:.4f}}'."
                )

    def _no_validation_loop(self, trainer: Trainer, pl_module: LightningModule) -> str | None:
        """Why an evaluation at validation end can never come in ``fit``, or None."""
        return None if self.every_n_epochs is None else self._validation_loop_missing(trainer, pl_module)

    @staticmethod
    def _validation_loop_missing(trainer: Trainer, pl_module: LightningModule) -> str | None:
        if not is_overridden("validation_step", pl_module):
            return f"the run has no validation loop ({type(pl_module).__name__} has no validation_step)"
        if trainer.limit_val_batches == 0:
            return "the run has no validation loop (Trainer(limit_val_batches=0))"
        return None

    def _out_of_reach(self, trainer: Trainer) -> str | None:
        """Why the first evaluation would come after the run ends (max_steps, max_epochs), or None."""
        batches = trainer.num_training_batches
        if trainer.fast_dev_run or not batches:
            return None  # fast_dev_run evaluates once whatever the schedule; no batches, no training
        accumulate = trainer.accumulate_grad_batches
        # The last accumulation of an epoch steps too; an epoch without length never ends.
        steps_per_epoch = math.inf if batches == math.inf else math.ceil(batches / accumulate)
        max_steps = trainer.max_steps if trainer.max_steps > 0 else math.inf
        max_epochs = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs > 0 else math.inf
        limits = ", ".join(
            f"{name}={value}" for name, value in (("max_steps", max_steps), ("max_epochs", max_epochs)) if value != math.inf
        )
        if self.every_n_train_steps is not None:
            total_steps = min(max_steps, max_epochs * steps_per_epoch)
            if self.every_n_train_steps > total_steps:
                return (
                    f"it evaluates after {self.every_n_train_steps} optimizer steps, and the run ends after "
                    f"{total_steps} ({limits}); lower every_n_train_steps"
                )
            return None
        first = self._first_evaluation_batch(trainer)
        if first is None:
            return None
        epochs_text = f"it evaluates at validation end in epochs {self.every_n_epochs}, {2 * self.every_n_epochs}, ..."
        if first == math.inf:
            why = (
                "the training data has no length, so the first epoch never ends" if batches == math.inf
                else "no validation falls in those epochs"
            )
            return f"{epochs_text} and {why}; evaluate at every validation (every_n_epochs=1) or on steps (every_n_train_steps=N)"
        if max_steps == math.inf or steps_per_epoch == math.inf:
            budget = max_steps * accumulate
        else:
            epochs, steps = divmod(max_steps, steps_per_epoch)
            budget = epochs * batches + steps * accumulate
        budget = min(budget, max_epochs * batches)
        if first > budget:
            return (
                f"{epochs_text} and the run ends before the first of those validations ({limits}); evaluate at every validation "
                "(every_n_epochs=1), validate sooner (Trainer(val_check_interval=...)) or evaluate on steps "
                "(every_n_train_steps=N)"
            )
        return None

    def _first_evaluation_batch(self, trainer: Trainer) -> float | None:
        """The training batch (counted over the run) of the first validation that evaluates; inf if none, None if unknown."""
        n, every, batches = self.every_n_epochs, trainer.check_val_every_n_epoch, trainer.num_training_batches
        check_batch = trainer.val_check_batch  # validate after every `check_batch` batches (Lightning's rule)
        if n is None or check_batch is None or check_batch == math.inf:
            return None
        if not isinstance(trainer.val_check_interval, (int, float)):
            return None  # validation on a timer
        if batches == math.inf:  # the first epoch never ends
            return check_batch if n == 1 else math.inf
        if every is not None:  # counted within each epoch, in epochs that validate
            return (math.lcm(n, every) - 1) * batches + check_batch
        if n == 1:
            return check_batch
        # Counted over the run: the first multiple of check_batch inside epoch n, 2n, ... (a pattern
        # that repeats within check_batch such epochs).
        for epoch in range(n, n * (int(check_batch) + 1) + 1, n):
            batch = ((epoch - 1) * batches // check_batch + 1) * check_batch
            if batch <= epoch * batches:
                return batch
        return math.inf

    def _resolve_scores_dir(self, trainer: Trainer) -> Path:
        """The run's score folder: chosen and created on rank 0, shared with every rank; a failure fails all."""
        chosen = self._jointly(
            trainer, "creating the score folder",
            lambda: str(self._scores_dir_rank_zero(trainer)) if trainer.is_global_zero else None,
        )
        return Path(trainer.strategy.broadcast(chosen))

    def _scores_dir_rank_zero(self, trainer: Trainer) -> Path:
        self._run_dir = None
        if self.scores_dir is not None:
            folder = Path(self.scores_dir).expanduser()
        else:
            folder = self._run_folder(trainer) / SCORES_DIRNAME
            if self.prefix != DEFAULT_PREFIX:
                # Two callbacks of one run write step files of the same names: one folder per prefix.
                slug = re.sub(r"[^A-Za-z0-9._-]+", "-", self.prefix).strip("-.")
                folder = folder / (slug or "no-prefix")
        folder.mkdir(parents=True, exist_ok=True)  # a folder that cannot be made fails now, not at the first evaluation
        return folder

    def _run_folder(self, trainer: Trainer) -> Path:
        """The first logger's versioned folder, or, without one, a new folder under ``default_root_dir``."""
        if trainer.loggers:
            logger = trainer.loggers[0]
            log_dir = getattr(logger, "log_dir", None)
            if isinstance(log_dir, str) and logger.version is not None and str(logger.version) in log_dir:
                return Path(log_dir)
            root = logger.save_dir or trainer.default_root_dir
            parts = [str(p) for p in (logger.name, logger.version) if p not in (None, "")]
            if parts:
                return Path(root, *parts)
        # The ClipScoreCallbacks of one Trainer share its folder.
        for other in trainer.callbacks:
            if isinstance(other, ClipScoreCallback) and other._resolved_for(trainer) and other._run_dir:
                return other._run_dir
        # A new version folder, claimed atomically so parallel runs never share one.
        base = Path(trainer.default_root_dir) / _NO_LOGGER_DIRNAME
        base.mkdir(parents=True, exist_ok=True)
        version = len([p for p in base.iterdir() if p.name.startswith("version_")])
        while True:
            candidate = base / f"version_{version}"
            try:
                candidate.mkdir()
            except FileExistsError:
                version += 1
                continue
            self._run_dir = candidate
            return candidate

    # ------------------------------------------------------------------ evaluation
    @property
    def encoder(self) -> ClipEncoder | None:
        """The CLIP encoder, once loaded."""
        return None if self._evaluator is None else self._evaluator.encoder

    @property
    def resolved_scores_dir(self) -> Path | None:
        """Where this run's score files go (set in ``setup``), or None when none are written."""
        return self._resolved_scores_dir

    @property
    def evaluator(self) -> PromptEvaluator | None:
        """The evaluation loop (None when disabled)."""
        return self._evaluator

    def _require_evaluator(self) -> PromptEvaluator:
        if self._evaluator is None:
            raise RuntimeError("ClipScoreCallback(enabled=False) does not evaluate")
        return self._evaluator

    def _load_encoder(self, trainer: Trainer | None = None) -> ClipEncoder:
        return self._require_evaluator().load_encoder(quiet=trainer is not None and not trainer.is_global_zero)

    def _offload(self) -> None:
        encoder = None if self._evaluator is None else self._evaluator.encoder
        if encoder is not None:
            encoder.to("cpu")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    @staticmethod
    def _jointly(trainer: Trainer, what: str, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` on every rank; if it fails on any, every rank raises (none hangs)."""
        return jointly(what, fn, owner="ClipScoreCallback")

    def _generator(self, trainer: Trainer, pl_module: LightningModule) -> Callable[[list, list], Any]:
        """``generate(prompts, seeds)`` for the loop: the module's generator, in the trainer's precision context."""
        if self._generate is None:
            self._generate = resolve_generate_fn(pl_module, self.generate_fn)
        if self.attention_policy == "strict":
            check_attention("strict", module=pl_module)
        generate_fn = self._generate

        def generate(prompts: list, seeds: list) -> Any:
            with trainer.precision_plugin.forward_context():
                return generate_fn(pl_module, prompts, seeds)

        # A DiffusersGenerator's settings (steps, guidance, size) reach the score header and signature.
        generate.rendering = getattr(generate_fn, "rendering", None)  # type: ignore[attr-defined]
        return generate

    def evaluate(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Tensor]:
        """Render and score the prompt library now; every rank must call this together.

        Returns:
            The synced ``clip/*`` values (plus per-category means and, from the second
            evaluation on, ``clip/delta*``), identical on every rank.
        """
        evaluator = self._require_evaluator()
        # fast_dev_run: one batch per rank checks the wiring in seconds; unpaired, nothing written.
        limit = self.batch_size * trainer.world_size if trainer.fast_dev_run else None
        step = _evaluation_step(trainer)
        rank, world_size = trainer.global_rank, trainer.world_size
        upper = min(len(self.prompt_library), limit or len(self.prompt_library))
        how = "" if self.target_ci is None or limit else f" at most, until the interval is <= {self.target_ci:g}"
        _info(trainer, f"CLIP scoring {upper} prompts{how} at step {step} ({self.prefix.rstrip('/')})")
        started = time.perf_counter()
        description = f"CLIP scoring ({self.prefix.rstrip('/')})"
        stage = trainer.state.fn
        generate = self._jointly(trainer, "resolving the generator", lambda: self._generator(trainer, pl_module))
        with prompt_progress(trainer, evaluator.shard_size(rank, world_size, limit), description) as advance:
            result = evaluator.evaluate(
                generate, step=step, device=pl_module.device, modules=[pl_module], rank=rank,
                world_size=world_size, limit=limit, advance=advance,
                header={"stage": getattr(stage, "value", stage)},  # "fit", not the enum
            )
        if trainer.is_global_zero:
            self.signature = result.signature
        if self.offload:
            self._offload()
        self._last_step_evaluated = step
        self.history.append({
            "step": step,
            **{self.prefix + k: v for k, v in result.summary.items() if k in STAT_NAMES or k in DELTA_NAMES},
        })
        self._jointly(trainer, "reporting the scores", lambda: self._publish(trainer, step, result))
        _info(trainer, _result_line(self.prefix, step, result, time.perf_counter() - started))
        return result.values

    def _publish(self, trainer: Trainer, step: int, result: EvaluationResult) -> None:
        """Rank 0 logs the signature (once per run) and the extras."""
        if not trainer.is_global_zero:
            return
        owner = self._signature_logged_for() if self._signature_logged_for is not None else None
        if owner is not trainer and self.signature is not None:  # once per run
            report_signature(trainer, self.prefix, str(self.signature), step)
            self._signature_logged_for = weakref.ref(trainer)
        if self.report_to != "none":
            report(trainer, self.report_to, self.prefix, step, result.records, result.best_worst,
                   [p.text for p in self.prompt_library])


def _result_line(prefix: str, step: int, result: EvaluationResult, seconds: float) -> str:
    s = result.summary
    line = (
        f"CLIP score at step {step}: {prefix}mean {s['mean']:.4f} +/- {s['mean_ci']:.4f} (min {s['min']:.4f}, "
        f"max {s['max']:.4f}, {int(s['count'])} prompts"
    )
    if result.rounds > 1:
        line += f" in {result.rounds} rounds"
    line += f", {seconds:.1f} s)"
    if "delta" in s:
        spread = "n/a" if math.isnan(s["delta_ci"]) else f"{s['delta_ci']:.4f}"  # too few pairs for an interval
        line += f"; {prefix}delta {s['delta']:+.4f} +/- {spread} over {int(s['delta_count'])} pairs"
        if result.paired_with_step is not None:
            line += f" with step {result.paired_with_step}"
    return line


def _log_to_loggers(trainer: Trainer, values: dict[str, Tensor], step: int) -> None:
    # Every rank calls, as Lightning does; its loggers write on rank 0 only.
    for logger in trainer.loggers:
        logger.log_metrics({k: float(v) for k, v in values.items()}, step=step)


def _evaluation_step(trainer: Trainer) -> int:
    """The one step number of an evaluation: in its score file's name, its log lines, the
    loggers, ``history`` and the checkpointed state.

    ``trainer.global_step``, the optimizer steps taken, which ``ModelCheckpoint`` puts in the
    name (``step=N``) of a checkpoint saved at that moment.
    """
    return int(trainer.global_step)


def _lightning_logs_at(trainer: Trainer, step: int) -> bool:
    """Whether Lightning would log epoch-level values at ``step`` now.

    Validation inside ``fit`` runs before Lightning counts the batch that triggered it, so
    ``self.log`` there would land one step before the checkpoint's; manual optimization with
    several optimizers counts batches, not steps.
    """
    if trainer.state.fn == "fit":
        return False
    return getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", None) == step


def _check_namespace(callback: Callback, trainer: Trainer) -> None:
    """Refuse a Trainer of a namespace the callback does not derive from (``pytorch_lightning`` 1.x)."""
    namespace = namespace_of(trainer)
    if isinstance(callback, lightning_class(namespace, "Callback")):
        return
    version = getattr(sys.modules.get(namespace.split(".")[0]), "__version__", "?")
    raise TypeError(
        f"Expected a Trainer of lightning.pytorch or pytorch_lightning 2.x but got {type(trainer).__module__}."
        f"{type(trainer).__name__} ({namespace} {version}); upgrade it (pip install -U {namespace.split('.')[0]}) "
        "or train with lightning.pytorch (import lightning.pytorch as pl)"
    )


def _info(trainer: Trainer, message: str) -> None:
    """An info line on rank 0, through the logger of the trainer's namespace, where Lightning's own go."""
    if trainer.is_global_zero:
        logging.getLogger(f"{namespace_of(trainer)}.utilities.rank_zero").info(message)


def _is(obj: object, *names: str) -> bool:
    """``isinstance`` against Lightning's classes ``names`` of either namespace."""
    return any(isinstance(obj, lightning_classes(name)) for name in names)


def _misconfiguration(trainer: Trainer, message: str) -> Exception:
    """The trainer's own namespace's ``MisconfigurationException`` (what its users catch)."""
    return lightning_class(namespace_of(trainer), "MisconfigurationException")(message)
