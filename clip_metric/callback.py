"""``ClipScoreCallback``: score the model under training on a prompt library, on every rank."""

from __future__ import annotations

import json
import logging
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

from clip_metric.attention import ATTENTION_POLICIES, AttentionPolicy, check_attention
from clip_metric.encoder import DEFAULT_MODEL, ClipEncoder
from clip_metric.functional import check_scale, scale_scores
from clip_metric.generation import GenerateFn, resolve_generate_fn
from clip_metric.images import check_value_range, standardize_images
from clip_metric.metric import ClipScore
from clip_metric.precision import check_precision
from clip_metric.prompts import Prompt, PromptSource, load_prompt_library
from clip_metric.rng import preserved_rng

log = logging.getLogger("clip_metric")

REPORT_TO = ("all", "tensorboard", "wandb", "none")
SCORES_DIRNAME = "clip_scores"
_THUMBNAIL = 128


class ClipScoreCallback(Callback):
    r"""Generate images for a prompt library with the model under training and log CLIP scores.

    At the end of each validation epoch (or every ``every_n_train_steps`` optimizer steps), the
    prompts are split across global ranks with no duplicates and no padding; every rank renders
    and scores its share; a :class:`~clip_metric.ClipScore` syncs sum, sum of squares, count, min
    and max; and ``clip/mean``, ``clip/min``, ``clip/max``, ``clip/std``, ``clip/count`` are logged
    through the trainer's loggers at the global step, where ``EarlyStopping`` and
    ``ModelCheckpoint`` can ``monitor="clip/mean"``. Sanity-check validation is skipped.

    Images come from ``generate_fn(pl_module, prompts, seeds)`` or, without one, from
    ``pl_module.generate_images(prompts, seeds)`` (see :mod:`clip_metric.generation`). Each
    prompt's seed derives from its text. During generation the module is in eval mode under
    ``no_grad`` and every global RNG is restored afterwards, so the callback does not change the
    training trajectory.

    The CLIP encoder is loaded lazily on first use, on the module's device; it is not a parameter
    of the module, not in its optimizer and not in any checkpoint. ``offload=True`` moves it to
    the CPU between evaluations.

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
        prefix: key prefix (default ``"clip/"``).
        attention_policy: ``"restore"`` (default: CLIP runs with torch's original attention while
            SageAttention stays on for the model under training), ``"strict"`` (fail at setup) or
            ``"ignore"``.
        offload: move the encoder to the CPU between evaluations to give GPU memory back.
        report_to: which loggers get the extras (histogram, best/worst images, per-prompt table):
            ``"all"``, ``"tensorboard"``, ``"wandb"`` or ``"none"``. Scalars go to every logger.
        num_logged_images: best and worst samples shown in the image grids (0 disables).
        save_scores: write each evaluation's per-prompt scores (``clip_scores/step-*.jsonl``)
            beside the logs, for ``clip-metric compare``.
        enabled: ``False`` makes the callback do nothing (``evaluation_type: "none"``).

    Raises:
        ValueError: for invalid arguments (each names the value).

    Example:
        >>> from clip_metric import ClipScoreCallback
        >>> callback = ClipScoreCallback("openai/clip-vit-large-patch14-336", max_prompts=64)
        >>> callback.every_n_epochs
        1
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
        prefix: str = "clip/",
        attention_policy: AttentionPolicy = "restore",
        offload: bool = False,
        report_to: Literal["all", "tensorboard", "wandb", "none"] = "all",
        num_logged_images: int = 4,
        save_scores: bool = True,
        enabled: bool = True,
    ) -> None:
        _check_positive("batch_size", batch_size)
        if every_n_epochs is not None and every_n_train_steps is not None:
            raise ValueError(
                f"Expected only one of `every_n_epochs` ({every_n_epochs}) and `every_n_train_steps` "
                f"({every_n_train_steps})"
            )
        if every_n_train_steps is not None:
            _check_positive("every_n_train_steps", every_n_train_steps)
        every_n_epochs = 1 if every_n_epochs is None and every_n_train_steps is None else every_n_epochs
        if every_n_epochs is not None:
            _check_positive("every_n_epochs", every_n_epochs)
        if report_to not in REPORT_TO:
            raise ValueError(f"Expected `report_to` to be one of {REPORT_TO} but got {report_to!r}")
        if not isinstance(num_logged_images, int) or num_logged_images < 0:
            raise ValueError(f"Expected `num_logged_images` to be a non-negative int but got {num_logged_images!r}")
        if not isinstance(prefix, str):
            raise ValueError(f"Expected `prefix` to be a string but got {prefix!r}")
        if isinstance(model_name_or_path, ClipEncoder) and precision != "auto":
            raise ValueError(
                f"`precision={precision!r}` would be ignored: a ClipEncoder brings its own precision; set it there"
            )
        if generate_fn is not None and not callable(generate_fn):
            raise ValueError(f"Expected `generate_fn` to be callable but got {generate_fn!r}")
        if attention_policy not in ATTENTION_POLICIES:
            raise ValueError(f"Expected `attention_policy` to be one of {ATTENTION_POLICIES} but got {attention_policy!r}")
        self.model_name_or_path = model_name_or_path
        # Loading the library here surfaces a bad file at construction, not hours into training.
        self.prompt_library: list[Prompt] = load_prompt_library(prompts, max_prompts) if enabled else []
        self.generate_fn = generate_fn
        self.batch_size = batch_size
        self.every_n_epochs = every_n_epochs
        self.every_n_train_steps = every_n_train_steps
        self.precision = check_precision(precision)
        self.value_range = check_value_range(value_range)
        self.scale = check_scale(scale)
        self.prefix = prefix
        self.attention_policy = attention_policy
        self.offload = bool(offload)
        self.report_to = report_to
        self.num_logged_images = num_logged_images
        self.save_scores = bool(save_scores)
        self.enabled = bool(enabled)
        self._encoder: ClipEncoder | None = model_name_or_path if isinstance(model_name_or_path, ClipEncoder) else None
        self._generate: GenerateFn | None = None
        self._last_step_evaluated = -1
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------ configuration files
    @classmethod
    def from_config(cls, config: str | os.PathLike | Mapping[str, Any], **overrides: Any) -> ClipScoreCallback:
        """Build from a training ``config.json`` (path or dict) using its CLIP-evaluation keys.

        Keys read: ``evaluation_type`` (``"clip"`` enables, ``"none"``/null disables),
        ``pretrained_evaluation_model_name_or_path``, ``report_to`` (``"tensorboard"``,
        ``"wandb"``, ``"none"``), ``validation_prompt_library`` (true for the built-in library, or a
        path), ``user_prompt_library`` (a path; combined with ``validation_prompt_library`` when both
        are set; with neither, the built-in library). Other keys of a training config are ignored. ``overrides`` are passed to the
        constructor.

        Raises:
            ValueError: for unknown values of these keys, naming the key and value.
            FileNotFoundError: if the config file does not exist.
        """
        if not isinstance(config, Mapping):
            path = Path(config)
            try:
                config = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise ValueError(f"Invalid JSON in config {path}: line {err.lineno}: {err.msg}") from None
            if not isinstance(config, Mapping):
                raise ValueError(f"Expected a JSON object in config {path} but got {type(config).__name__}")
        evaluation_type = config.get("evaluation_type", "clip")
        if evaluation_type not in ("clip", "none", None):
            raise ValueError(f"Unknown evaluation_type {evaluation_type!r}: expected 'clip' or 'none'")
        report_to = config.get("report_to", "all")
        if report_to not in REPORT_TO:
            raise ValueError(f"Unknown report_to {report_to!r}: expected one of {REPORT_TO}")
        library = config.get("validation_prompt_library", None)
        user_library = config.get("user_prompt_library", None)
        if library not in (None, False, True) and not isinstance(library, (str, os.PathLike)):
            raise ValueError(f"Unknown validation_prompt_library {library!r}: expected true/false or a path")
        kwargs: dict[str, Any] = {
            "model_name_or_path": config.get("pretrained_evaluation_model_name_or_path") or DEFAULT_MODEL,
            "report_to": report_to,
            "enabled": evaluation_type == "clip",
        }
        if user_library and library:
            kwargs["prompts"] = load_prompt_library(user_library) + load_prompt_library(library)
        elif user_library or library:
            kwargs["prompts"] = user_library or library
        elif library is False and evaluation_type == "clip":
            raise ValueError(
                "validation_prompt_library is false and no user_prompt_library is set: CLIP evaluation needs prompts"
            )
        kwargs.update(overrides)
        return cls(**kwargs)

    # ------------------------------------------------------------------ lightning hooks
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not self.enabled:
            return
        # Fail before training starts: missing generator, or SageAttention under "strict".
        self._generate = resolve_generate_fn(pl_module, self.generate_fn)
        findings = check_attention(self.attention_policy, module=pl_module, config=getattr(pl_module, "hparams", None))
        for finding in findings:
            log.info("CLIP scoring will run with torch's original attention: %s", finding.detail)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.enabled or trainer.sanity_checking:
            return
        if trainer.state.fn == "fit" and (
            self.every_n_epochs is None or (trainer.current_epoch + 1) % self.every_n_epochs != 0
        ):
            return  # under trainer.validate() it always runs
        values = self.evaluate(trainer, pl_module)
        # Already synced across ranks; float so Lightning need not convert clip/count.
        values = {k: v.float() for k, v in values.items()}
        pl_module.log_dict(values, on_step=False, on_epoch=True, sync_dist=False, add_dataloader_idx=False)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        n = self.every_n_train_steps
        step = trainer.global_step
        if not self.enabled or n is None or step == 0 or step % n != 0 or step == self._last_step_evaluated:
            return
        values = self.evaluate(trainer, pl_module)
        # Written to the loggers directly: step-level self.log() would be filtered by
        # log_every_n_steps. callback_metrics makes them monitorable all the same.
        trainer.callback_metrics.update({k: v.detach().clone() for k, v in values.items()})
        for logger in trainer.loggers:
            logger.log_metrics({k: float(v) for k, v in values.items()}, step=step)

    def state_dict(self) -> dict[str, Any]:
        return {"last_step_evaluated": self._last_step_evaluated, "history": list(self.history)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Tolerant: checkpoints from other versions may lack keys or carry extra ones.
        self._last_step_evaluated = int(state_dict.get("last_step_evaluated", -1))
        history = state_dict.get("history", [])
        self.history = [dict(h) for h in history if isinstance(h, Mapping)]

    # ------------------------------------------------------------------ evaluation
    @property
    def encoder(self) -> ClipEncoder | None:
        """The CLIP encoder, once loaded."""
        return self._encoder

    def _load_encoder(self, device: torch.device) -> ClipEncoder:
        if self._encoder is None:
            self._encoder = ClipEncoder.build(
                self.model_name_or_path, precision=self.precision, attention_policy=self.attention_policy
            )
        return self._encoder.to(device)

    def _shard(self, trainer: Trainer) -> list[tuple[int, Prompt]]:
        """This rank's prompts: every world_size-th one, with no padding and no duplicates."""
        indexed = list(enumerate(self.prompt_library))
        return indexed[trainer.global_rank :: trainer.world_size]

    def evaluate(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Tensor]:
        """Render and score the prompt library now; every rank must call this together.

        Returns:
            The synced ``clip/*`` values (plus per-category means), identical on every rank.
        """
        if self._generate is None:
            self._generate = resolve_generate_fn(pl_module, self.generate_fn)
        if self.attention_policy == "strict":
            check_attention("strict", module=pl_module)
        device = pl_module.device
        encoder = self._load_encoder(device)
        metric = ClipScore(encoder, scale=self.scale, prefix=self.prefix, keep_scores=True).to(device)
        candidates = _Candidates(self.num_logged_images)
        error: BaseException | None = None
        modes = {module: module.training for module in pl_module.modules()}
        try:
            pl_module.eval()
            with preserved_rng(), torch.no_grad():
                shard = self._shard(trainer)
                if shard:
                    encoder.cache_prompts([prompt.text for _, prompt in shard])
                for start in range(0, len(shard), self.batch_size):
                    batch = shard[start : start + self.batch_size]
                    ids = [index for index, _ in batch]
                    texts = [prompt.text for _, prompt in batch]
                    images = self._generate(pl_module, texts, [prompt.seed for _, prompt in batch])
                    cosines = encoder.score(images, texts, self.value_range)
                    metric.update(scores=cosines, ids=ids)
                    if self.num_logged_images:
                        candidates.add(images, self.value_range, ids, scale_scores(cosines, self.scale))
        except Exception as err:  # decided jointly below, so no rank is left in a collective
            error = err
        finally:
            for module, training in modes.items():
                module.train(training)
        failed = trainer.strategy.reduce(torch.tensor(float(error is not None), device=device), reduce_op="sum")
        if error is not None:
            raise error
        if float(failed) > 0:
            raise RuntimeError(f"ClipScoreCallback failed on {int(float(failed))} other rank(s); see their logs")

        values = metric.compute()
        ids, scores = metric.per_sample()
        values.update(self._category_means(ids, scores))
        best_worst = candidates.gather(trainer) if self.num_logged_images else None
        log_dir = _log_dir(trainer)  # a collective: every rank asks
        step = _logging_step(trainer)
        if self.offload:
            encoder.to("cpu")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        self._last_step_evaluated = trainer.global_step
        summary = {k: float(v) for k, v in values.items() if k[len(self.prefix):] in ("mean", "min", "max", "std", "count")}
        self.history.append({"step": step, **summary})
        if trainer.is_global_zero:
            self._report(trainer, step, ids, scores, best_worst, log_dir)
        return values

    def _category_means(self, ids: Tensor, scores: Tensor) -> dict[str, Tensor]:
        sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        for index, score in zip(ids.tolist(), scores.tolist()):
            category = self.prompt_library[index].category
            if category:
                sums[category][0] += score
                sums[category][1] += 1
        device = scores.device
        return {
            f"{self.prefix}category/{name}": torch.tensor(total / count, dtype=torch.float64, device=device)
            for name, (total, count) in sorted(sums.items())
        }

    # ------------------------------------------------------------------ reporting (rank 0)
    def _rows(self, step: int, ids: Tensor, scores: Tensor) -> list[dict[str, Any]]:
        rows = []
        for index, score in sorted(zip(ids.tolist(), scores.tolist())):
            prompt = self.prompt_library[index]
            rows.append(
                {"step": step, "prompt_id": prompt.id, "prompt": prompt.text, "category": prompt.category,
                 "seed": prompt.seed, "score": score}
            )
        return rows

    def _report(self, trainer: Trainer, step: int, ids: Tensor, scores: Tensor, best_worst: Any, log_dir: str) -> None:
        rows = self._rows(step, ids, scores)
        if self.save_scores:
            out = Path(log_dir) / SCORES_DIRNAME
            out.mkdir(parents=True, exist_ok=True)
            with open(out / f"step-{step:08d}.jsonl", "w", encoding="utf-8") as handle:
                for row in rows:
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        if self.report_to == "none":
            return
        for logger in trainer.loggers:
            kind = type(logger).__name__
            if kind == "TensorBoardLogger" and self.report_to in ("all", "tensorboard"):
                self._report_tensorboard(logger.experiment, step, rows, scores, best_worst)
            elif kind == "WandbLogger" and self.report_to in ("all", "wandb"):
                self._report_wandb(logger, step, rows, best_worst)

    def _caption(self, index: int, score: float) -> str:
        return f"{score:.4f} | {self.prompt_library[index].text}"

    def _report_tensorboard(self, writer: Any, step: int, rows: list, scores: Tensor, best_worst: Any) -> None:
        if scores.numel():
            writer.add_histogram(f"{self.prefix}scores", scores.detach().float().cpu(), step)
        header = "| score | prompt | category | seed |\n|---|---|---|---|\n"
        ranked = sorted(rows, key=lambda r: r["score"])
        table = "".join(
            f"| {r['score']:.4f} | {r['prompt'].replace('|', '/')} | {r['category'] or ''} | {r['seed']} |\n"
            for r in ranked
        )
        writer.add_text(f"{self.prefix}per_prompt", header + table, step)
        if best_worst is not None:
            for name, (images, ids, values) in best_worst.items():
                if len(ids):
                    writer.add_images(f"{self.prefix}{name}", images.cpu(), step)
                    captions = "\n".join(f"{i + 1}. {self._caption(k, v)}" for i, (k, v) in enumerate(zip(ids, values)))
                    writer.add_text(f"{self.prefix}{name}_prompts", captions, step)

    def _report_wandb(self, logger: Any, step: int, rows: list, best_worst: Any) -> None:
        columns = ["prompt_id", "prompt", "category", "seed", "score"]
        logger.log_table(key=f"{self.prefix}per_prompt", columns=columns, data=[[r[c] for c in columns] for r in rows], step=step)
        if best_worst is not None:
            for name, (images, ids, values) in best_worst.items():
                if len(ids):
                    logger.log_image(
                        key=f"{self.prefix}{name}", images=list(images.cpu()), step=step,
                        caption=[self._caption(k, v) for k, v in zip(ids, values)],
                    )


class _Candidates:
    """Thumbnails of this rank's best and worst samples, merged across ranks on demand.

    The global best k are among the union of every rank's best k, so each rank keeps only 2k
    small images however many prompts it renders.
    """

    def __init__(self, k: int) -> None:
        self.k = k
        self.images: Tensor | None = None
        self.ids = torch.zeros(0, dtype=torch.long)
        self.scores = torch.zeros(0, dtype=torch.float64)

    def add(self, images: Any, value_range: tuple[float, float], ids: Sequence[int], scores: Tensor) -> None:
        batches = standardize_images(images, value_range)
        thumbs = torch.cat([F.interpolate(b, size=(_THUMBNAIL, _THUMBNAIL), mode="bilinear", antialias=True) for b in batches])
        images_all = thumbs.cpu() if self.images is None else torch.cat([self.images, thumbs.cpu()])
        ids_all = torch.cat([self.ids, torch.as_tensor(ids, dtype=torch.long)])
        scores_all = torch.cat([self.scores, scores.detach().cpu().double()])
        keep = _extremes(scores_all, self.k)
        self.images, self.ids, self.scores = images_all[keep], ids_all[keep], scores_all[keep]

    def gather(self, trainer: Trainer) -> dict[str, tuple[Tensor, list[int], list[float]]]:
        size = 2 * self.k
        images = torch.zeros(size, 3, _THUMBNAIL, _THUMBNAIL)
        ids = torch.full((size,), -1, dtype=torch.long)
        scores = torch.full((size,), math.nan, dtype=torch.float64)
        n = len(self.ids)
        if n:
            images[:n], ids[:n], scores[:n] = self.images, self.ids, self.scores
        device = trainer.strategy.root_device
        gathered = [trainer.strategy.all_gather(t.to(device)) for t in (images, ids, scores)]
        if trainer.world_size > 1:
            gathered = [t.reshape(-1, *t.shape[2:]).cpu() for t in gathered]
        else:
            gathered = [t.cpu() for t in gathered]
        images, ids, scores = gathered
        valid = ids >= 0
        images, ids, scores = images[valid], ids[valid], scores[valid]
        order = torch.argsort(scores, descending=True)
        best, worst = order[: self.k], torch.flip(order, [0])[: self.k]
        return {
            name: (images[sel], ids[sel].tolist(), scores[sel].tolist())
            for name, sel in (("best", best), ("worst", worst))
        }


def _extremes(scores: Tensor, k: int) -> Tensor:
    if scores.numel() <= 2 * k:
        return torch.arange(scores.numel())
    order = torch.argsort(scores)
    return torch.cat([order[:k], order[-k:]])


def _logging_step(trainer: Trainer) -> int:
    """The step Lightning gives metrics logged now, so the extras line up with the scalars.

    Validation inside ``fit`` runs before Lightning counts the batch that triggered it, so
    ``self.log`` there lands one step before ``trainer.global_step``.
    """
    if trainer.state.fn == "fit" and trainer.validating:
        return int(getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", trainer.global_step))
    return trainer.global_step


def _log_dir(trainer: Trainer) -> str:
    return trainer.log_dir or trainer.default_root_dir


def _check_positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"Expected `{name}` to be a positive int but got {value!r}")
