"""``ClipScore``: a DDP-safe torchmetrics metric of image-prompt CLIP similarity."""

from __future__ import annotations

import itertools
import os
import weakref
from typing import Any, Sequence

import torch
from torch import Tensor

from clip_metric.attention import AttentionPolicy
from clip_metric.encoder import ClipEncoder
from clip_metric.functional import cosine_scores
from clip_metric.images import check_value_range
from clip_metric.statistics import ScoreStatistics, check_cosines
from clip_metric.utilities.constants import DEFAULT_MODEL, DEFAULT_PREFIX


_ENCODER_DEFAULTS = {"precision": "auto", "attention_policy": "restore", "text_cache_size": 100_000}

# A number per encoder object in this process: metrics sharing an encoder may share states.
_ENCODER_NUMBERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_NEXT_NUMBER = itertools.count()


def _encoder_number(encoder: ClipEncoder) -> int:
    if encoder not in _ENCODER_NUMBERS:
        _ENCODER_NUMBERS[encoder] = next(_NEXT_NUMBER)
    return _ENCODER_NUMBERS[encoder]


class ClipScore(ScoreStatistics):
    r"""CLIP score of generated images against their prompts: mean, min, max, std and count.

    Each sample's score is the cosine similarity between CLIP's embedding of an image and of its
    prompt (on the scale chosen by ``scale``). The statistics are those of
    :class:`~clip_metric.ScoreStatistics`: sum, sum of squares, count, min and max, which reduce
    exactly across DDP ranks, so the result does not depend on batch size or on how samples are
    split over ranks.

    The CLIP model is held by a frozen :class:`~clip_metric.ClipEncoder`, loaded once. It is not a
    submodule: it never appears in ``state_dict()`` (of the metric or of a LightningModule that
    holds it) nor in ``parameters()``, yet it follows the metric to its device.

    Args:
        model_name_or_path: a hub id (default ``openai/clip-vit-large-patch14-336``), a local
            directory saved with ``save_pretrained``, a :class:`~clip_metric.ClipEncoder` (shared,
            not copied), or a preloaded CLIP-family model (then pass ``processor``).
        processor: for a preloaded model: its processor, or a ``(tokenizer, image_processor)`` pair.
        precision: ``"auto"`` (bf16 autocast on CUDA and on CPUs with AMX/AVX512-BF16, else fp32),
            ``"32"`` for exact fp32, or ``"bf16-mixed"``, ``"16-mixed"``, ``"bf16-true"``,
            ``"16-true"``.
        value_range: ``(low, high)`` of float images: ``(0, 1)`` by default, ``(-1, 1)`` for raw
            diffusion outputs. uint8 images are always 0-255.
        scale: ``"cosine"`` (raw cosine, default; good models score 0.30-0.39), ``"torchmetrics"``
            (``100 * max(cos, 0)``) or ``"clipscore"`` (``2.5 * max(cos, 0)``), applied per sample.
        prefix: prefix of the keys ``compute()`` returns (default ``"clip/"``).
        keep_scores: also keep every per-sample score (and its prompt id) as a ``cat`` state, for
            per-prompt tables; read them with :meth:`per_sample`.
        attention_policy: ``"restore"`` (default: CLIP runs with torch's original attention even
            when SageAttention patched it), ``"strict"`` (raise instead), or ``"ignore"``.
        text_cache_size: number of prompt embeddings to cache (a fixed prompt library is scored
            again and again; repeated prompts never run the text tower twice).
        kwargs: passed to :class:`torchmetrics.Metric` (``sync_on_compute``, ``process_group``, ...).

    Raises:
        ValueError: for an unknown ``scale``, ``precision`` or ``attention_policy``, a bad
            ``value_range`` or ``prefix``.
        OSError: if the model cannot be loaded (with how to get it).

    Example:
        >>> import torch
        >>> from clip_metric import ClipScore
        >>> from clip_metric.demos import embedded_model_path
        >>> metric = ClipScore(embedded_model_path(), precision="32")
        >>> images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
        >>> metric.update(images, ["a red circle on a blue background", "a green square on a white background"])
        >>> sorted(metric.compute())
        ['clip/count', 'clip/max', 'clip/mean', 'clip/mean_ci', 'clip/min', 'clip/std']
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike | ClipEncoder | Any = DEFAULT_MODEL,
        *,
        processor: Any = None,
        precision: str = "auto",
        value_range: tuple[float, float] = (0.0, 1.0),
        scale: str = "cosine",
        prefix: str = DEFAULT_PREFIX,
        keep_scores: bool = False,
        attention_policy: AttentionPolicy = "restore",
        text_cache_size: int = 100_000,
        **kwargs: Any,
    ) -> None:
        super().__init__(scale=scale, prefix=prefix, keep_scores=keep_scores, **kwargs)
        self.value_range = check_value_range(value_range)
        encoder_kwargs = dict(precision=precision, attention_policy=attention_policy, text_cache_size=text_cache_size)
        if isinstance(model_name_or_path, ClipEncoder):
            changed = {k: v for k, v in encoder_kwargs.items() if v != _ENCODER_DEFAULTS[k]}
            if changed:
                raise ValueError(
                    f"{changed} would be ignored: a ClipEncoder brings its own settings; set them on the encoder"
                )
            encoder_kwargs = {}
        # Stored outside nn.Module's registry on purpose: no weights in state_dict()/parameters().
        object.__setattr__(self, "_encoder", ClipEncoder.build(model_name_or_path, processor, **encoder_kwargs))
        self._register_settings()

    def _settings_key(self) -> str:
        # Another encoder or value_range reads the same images differently: never one compute group.
        encoder = self.__dict__.get("_encoder")  # None while ScoreStatistics.__init__ runs
        if encoder is None:
            return super()._settings_key()
        return f"{super()._settings_key()}|encoder={_encoder_number(encoder)}|value_range={self.value_range}"

    def merge_state(self, incoming_state: Any) -> None:
        """Merge another metric's states; refused across CLIP models, scales, prefixes or ``keep_scores``.

        Raises:
            ValueError: if ``incoming_state`` is a :class:`ClipScore` of another CLIP model (its
                weights, for a local or preloaded one) or of different settings.
        """
        if isinstance(incoming_state, ClipScore) and incoming_state._encoder is not self._encoder:
            from clip_metric.signature import model_fingerprint

            mine, theirs = model_fingerprint(self._encoder), model_fingerprint(incoming_state._encoder)
            if mine != theirs:
                raise ValueError(
                    f"Expected a metric of the same CLIP model to merge but got model {theirs!r} into {mine!r}: "
                    "scores of different models are not comparable"
                )
        super().merge_state(incoming_state)

    @property
    def encoder(self) -> ClipEncoder:
        """The frozen CLIP encoder (shared, never in ``state_dict``)."""
        return self._encoder

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> ClipScore:
        # `.to()`, `.cuda()`, Lightning's device moves: the encoder follows the device only.
        this = super()._apply(fn, *args, **kwargs)
        target = fn(torch.zeros(1, device=self._encoder.device)).device
        if target.type != "meta":  # the meta device holds no weights: moving there would lose them
            self._encoder.to(target)
        return this

    def update(
        self,
        images: Any = None,
        prompts: Sequence[str] | None = None,
        *,
        ids: Sequence[int] | Tensor | None = None,
        scores: Tensor | None = None,
        image_embeds: Tensor | None = None,
        text_embeds: Tensor | None = None,
    ) -> None:
        """Add a batch: images with one prompt each, precomputed embeddings, or per-sample scores.

        Args:
            images: a batch of images (any form :func:`clip_metric.images.standardize_images`
                accepts) with ``prompts``, one per image.
            prompts: the prompts of the images.
            ids: optional integer prompt ids, kept with the per-sample scores when
                ``keep_scores=True`` (``-1`` when not given).
            scores: per-sample cosines computed elsewhere (``(N,)``), instead of images.
            image_embeds: ``(N, D)`` image embeddings, with ``text_embeds``, instead of images.
            text_embeds: ``(N, D)`` text embeddings of the matching prompts.

        Raises:
            ValueError: for mixed or missing inputs, count mismatches, bad images or prompts.
        """
        given = {
            "images/prompts": images is not None or prompts is not None,
            "scores": scores is not None,
            "embeddings": image_embeds is not None or text_embeds is not None,
        }
        if sum(given.values()) != 1:
            chosen = [k for k, v in given.items() if v] or ["nothing"]
            raise ValueError(
                "Expected exactly one of images with prompts, `scores`, or `image_embeds` with `text_embeds` "
                f"but got {' and '.join(chosen)}"
            )
        if given["images/prompts"]:
            if images is None or prompts is None:
                raise ValueError("Expected both `images` and `prompts`; one of them is None")
            cosines = self._encoder.score(images, prompts, self.value_range)
        elif given["embeddings"]:
            if image_embeds is None or text_embeds is None:
                raise ValueError("Expected both `image_embeds` and `text_embeds`; one of them is None")
            for name, value in (("image_embeds", image_embeds), ("text_embeds", text_embeds)):
                if not isinstance(value, Tensor) or not value.is_floating_point():
                    kind = f"tensor of dtype {value.dtype}" if isinstance(value, Tensor) else type(value).__name__
                    raise ValueError(f"Expected `{name}` as a float tensor (N, D) but got {kind}")
                if value.shape[0] == 0:
                    raise ValueError(f"Expected at least one row in `{name}` but got shape {tuple(value.shape)}")
            cosines = check_cosines(cosine_scores(image_embeds, text_embeds))
        else:
            cosines = check_cosines(scores)
        self._accumulate(cosines, ids)
