"""One frozen CLIP-family model, loaded once, that turns images and prompts into embeddings.

:class:`ClipEncoder` is deliberately not an ``nn.Module``: whoever holds it (a metric, a
callback, a LightningModule) never sees its weights in ``state_dict()`` or ``parameters()``, so
they stay out of checkpoints and optimizers. It is always in eval mode with
``requires_grad=False``, preprocesses tensors on its own device following the model's image
processor config, and caches text embeddings by prompt.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import warnings
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from clip_metric.attention import AttentionPolicy, check_attention, restored_attention, use_exact_attention
from clip_metric.images import ImageTransform, standardize_images
from clip_metric.text import EmbeddingCache, check_prompts, length_grouped_batches, truncate_token_ids
from clip_metric.utilities.checks import check_non_negative_int, check_positive_int
from clip_metric.utilities.constants import DEFAULT_MODEL
from clip_metric.utilities.precision import (
    HALF_DTYPES,
    cast_matmul_weights,
    check_precision,
    own_precision,
    resolve_precision,
    weight_dtype,
)
from clip_metric.utilities.rng import preserved_rng

log = logging.getLogger("clip_metric")
# Models that were trained on text padded to the full context and pool the last position.
_PAD_TO_MAX_LENGTH = ("siglip", "siglip2")
_SHARED_LOAD_KWARGS = ("revision", "cache_dir", "local_files_only", "token", "trust_remote_code", "subfolder")
_OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _embedding(output: Any) -> Tensor:
    """The embedding from ``get_*_features``: a tensor (transformers 4.x) or an output object (5.x)."""
    if isinstance(output, Tensor):
        return output
    for name in ("pooler_output", "image_embeds", "text_embeds"):
        value = getattr(output, name, None)
        if isinstance(value, Tensor):
            return value
    raise TypeError(f"Cannot find an embedding in the model output of type {type(output).__name__}")


def _looks_like_path(name: str) -> bool:
    """Whether a model name can only be a local path (a hub id is ``name`` or ``namespace/name``)."""
    return (
        os.path.isabs(name)
        or name.startswith((".", "~"))
        or "\\" in name
        or name.count("/") > 1
        or os.path.exists(name)
    )


def _check_local(name: str) -> None:
    path = os.path.expanduser(name)
    if not os.path.exists(path):
        raise OSError(f"Could not load the CLIP model {name!r}: no such directory")
    if not os.path.isdir(path):
        raise OSError(
            f"Could not load the CLIP model {name!r}: it is a file, not a model directory (one saved with "
            "`save_pretrained`: config.json, weights, tokenizer and preprocessor files)"
        )


@contextlib.contextmanager
def _quiet_transformers() -> Any:
    """Hide transformers' loading bars and messages for the block, then put its settings back."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _load_pretrained(name_or_path: str, quiet: bool = False, **model_kwargs: Any) -> tuple[Any, Any, Any]:
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise ValueError(f"Expected a hub id or a local directory but got {name_or_path!r}")
    local = _looks_like_path(name_or_path)
    if local:
        _check_local(name_or_path)
        name_or_path = os.path.expanduser(name_or_path)
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    model_kwargs.setdefault("dtype", torch.float32)
    # Where and which version to load from applies to all three parts alike.
    shared = {k: model_kwargs[k] for k in _SHARED_LOAD_KWARGS if k in model_kwargs}
    try:
        with _quiet_transformers() if quiet else contextlib.nullcontext():
            model = AutoModel.from_pretrained(name_or_path, **model_kwargs)
            tokenizer = AutoTokenizer.from_pretrained(name_or_path, **shared)
            image_processor = AutoImageProcessor.from_pretrained(name_or_path, **shared)
    except (pickle.UnpicklingError, OSError, ValueError) as err:
        refused = _unpickling_error(err)
        if refused is not None:  # transformers 4.x wraps it in an OSError
            raise OSError(
                f"Could not load the CLIP model {name_or_path!r}: its weights are a pickle that would run code to "
                f"load, and are refused ({str(refused).splitlines()[0]}). Use a model saved as safetensors."
            ) from err
        hint = (
            "the directory must hold a model, tokenizer and image processor saved with `save_pretrained`"
            if local
            else "download it while online (e.g. `hf download "
            f"{name_or_path}`), or pass a local directory saved with `save_pretrained`"
        )
        raise OSError(f"Could not load the CLIP model {name_or_path!r}: {err}\nTo fix: {hint}.") from err
    return model, tokenizer, image_processor


def _unpickling_error(err: BaseException) -> BaseException | None:
    """The ``UnpicklingError`` behind ``err`` (torch refusing pickled code), if any."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, pickle.UnpicklingError):
            return err
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


def _reload_encoder(name: str, kwargs: dict[str, Any]) -> ClipEncoder:
    """Unpickle an encoder saved by :meth:`ClipEncoder.__reduce__`: load it from its source."""
    return ClipEncoder.from_pretrained(name, quiet=True, **kwargs)


def _split_processor(processor: Any) -> tuple[Any, Any]:
    """(tokenizer, image_processor) from a processor, a pair, or a bare tokenizer."""
    if processor is None:
        raise ValueError("A preloaded model needs its `processor` (or a (tokenizer, image_processor) pair)")
    if isinstance(processor, (tuple, list)):
        if len(processor) != 2:
            raise ValueError(f"Expected a (tokenizer, image_processor) pair but got {len(processor)} items")
        return processor[0], processor[1]
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is not None:
        return tokenizer, getattr(processor, "image_processor", None)
    return processor, None


def _default_transform(model: Any) -> ImageTransform:
    size = int(getattr(getattr(model.config, "vision_config", model.config), "image_size", 224))
    return ImageTransform(size, None, (size, size), _OPENAI_CLIP_MEAN, _OPENAI_CLIP_STD, "bicubic")


class ClipEncoder:
    """A frozen CLIP-family model with its tokenizer and image preprocessing.

    Works with any model that has ``get_image_features`` and ``get_text_features``
    (``CLIPModel``, ``SiglipModel``, ...), on transformers 4.57+ and 5.x.

    Args:
        model: the loaded model.
        tokenizer: its tokenizer.
        image_processor: its Hugging Face image processor (or its config dict); size, crop,
            mean, std and resampling are read from it. ``None`` uses OpenAI CLIP's defaults at
            the model's ``image_size``.
        precision: ``"auto"`` (default), ``"32"``, ``"bf16-mixed"``, ``"16-mixed"``,
            ``"bf16-true"`` or ``"16-true"``; see :mod:`clip_metric.utilities.precision`.
        attention_policy: what to do about SageAttention patches of torch's SDPA or of
            transformers' ``"sdpa"`` attention: ``"restore"`` (default) runs CLIP with exact
            attention, ``"strict"`` raises, ``"ignore"`` does nothing; see
            :mod:`clip_metric.attention`. Under ``"restore"`` a model on ``"sdpa"`` is switched
            to the package's own exact attention function (``attention_route == "model"``);
            other models run each forward with the original functions swapped back
            process-wide (``attention_route == "process"``).
        text_cache_size: how many prompt embeddings to keep (least recently used dropped).

    Raises:
        TypeError: if the model lacks ``get_image_features`` / ``get_text_features``.
        ValueError: for an unknown precision or attention policy, or a bad cache size.

    Example:
        >>> from clip_metric.demos import embedded_model_path
        >>> encoder = ClipEncoder.from_pretrained(embedded_model_path(), precision="32")
        >>> encoder.encode_texts(["a red circle on a blue background"]).shape[0]
        1
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        image_processor: Any = None,
        *,
        precision: str = "auto",
        attention_policy: AttentionPolicy = "restore",
        text_cache_size: int = 100_000,
    ) -> None:
        for method in ("get_image_features", "get_text_features"):
            if not callable(getattr(model, method, None)):
                raise TypeError(
                    f"Expected a CLIP-family model with `{method}` but got {type(model).__name__}"
                )
        check_non_negative_int("text_cache_size", text_cache_size)
        self.precision = check_precision(precision)
        for finding in check_attention(attention_policy):
            log.info("CLIP scoring runs with the original attention: %s (%s)", finding.detail, finding.source)
        self.attention_policy = attention_policy
        self.model = model.eval().requires_grad_(False)
        # Per model where transformers allows it: then nothing process-wide changes during scoring.
        self.attention_route: str | None = None
        if attention_policy == "restore":
            self.attention_route = "model" if use_exact_attention(self.model) else "process"
        self.tokenizer = tokenizer
        # Tokenising once and padding the ids is deliberate (it keeps the end-of-text token of cut
        # prompts); transformers 4.x would warn that padding after tokenising is slower.
        shown = getattr(tokenizer, "deprecation_warnings", None)
        if isinstance(shown, dict):
            shown.setdefault("Asking-to-pad-a-fast-tokenizer", True)
        self.transform = (
            ImageTransform.from_image_processor(image_processor)
            if image_processor is not None
            else _default_transform(model)
        )
        model_type = str(getattr(model.config, "model_type", ""))
        self._pad_to_max_length = model_type in _PAD_TO_MAX_LENGTH
        text_config = getattr(model.config, "text_config", model.config)
        limits = [getattr(text_config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
        self.context_length = min(int(n) for n in limits if n is not None and n < 1_000_000)
        self.text_cache_size = text_cache_size
        self._text_cache = EmbeddingCache(text_cache_size)
        self._active_precision = ""
        self._apply_precision()
        # Counters users and benchmarks can read.
        self.text_forward_count = 0
        self.image_forward_count = 0
        self.truncated_prompt_count = 0
        self._warned_truncation = False
        # (name_or_path, settings) when loaded by name (set by from_pretrained), None for a preloaded model.
        self._source: tuple[str, dict[str, Any]] | None = None

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike = DEFAULT_MODEL,
        *,
        device: str | torch.device | None = None,
        precision: str = "auto",
        attention_policy: AttentionPolicy = "restore",
        text_cache_size: int = 100_000,
        quiet: bool = False,
        **model_kwargs: Any,
    ) -> ClipEncoder:
        """Load a model, tokenizer and image processor by hub id or local directory.

        A name that can only be a path (absolute, starting with ``.`` or ``~``, or existing on
        disk) is loaded as a local directory, and a missing one is named as missing. ``quiet``
        hides transformers' loading bars and messages (other ranks of a multi-process run).

        ``model_kwargs`` go to ``AutoModel.from_pretrained``; of them ``revision``, ``cache_dir``,
        ``local_files_only``, ``token``, ``trust_remote_code`` and ``subfolder`` also go to the
        tokenizer and image processor, so all three come from the same place.

        Raises:
            OSError: if the model cannot be loaded, with how to get it (offline machines need a
                local directory or a model downloaded while online).
        """
        # transformers 4.x initialises weights with the global generators before loading them:
        # loading a metric must not shift a training run's random stream.
        with preserved_rng():
            model, tokenizer, image_processor = _load_pretrained(os.fspath(name_or_path), quiet, **model_kwargs)
        settings = dict(precision=precision, attention_policy=attention_policy, text_cache_size=text_cache_size)
        encoder = cls(model, tokenizer, image_processor, **settings)
        # Where it came from: a pickled encoder is loaded again from there instead of carrying its weights.
        encoder._source = (os.fspath(name_or_path), {**settings, **model_kwargs})
        return encoder.to(device) if device is not None else encoder

    @classmethod
    def build(cls, source: Any = DEFAULT_MODEL, processor: Any = None, **kwargs: Any) -> ClipEncoder:
        """An encoder from a hub id, a local directory, an encoder, or a preloaded model.

        Args:
            source: a hub id or path (loaded with :meth:`from_pretrained`), a
                :class:`ClipEncoder` (returned as is), or a preloaded model.
            processor: for a preloaded model: its processor, or a ``(tokenizer, image_processor)``
                pair.
            kwargs: passed to the constructor or :meth:`from_pretrained`.
        """
        if isinstance(source, ClipEncoder):
            return source
        if isinstance(source, (str, os.PathLike)):
            if processor is not None:
                raise ValueError("`processor` is only for preloaded models; a path or hub id brings its own")
            return cls.from_pretrained(source, **kwargs)
        if not all(callable(getattr(source, m, None)) for m in ("get_image_features", "get_text_features")):
            raise ValueError(
                "Expected a hub id, a local directory, a ClipEncoder or a CLIP-family model (with "
                f"`get_image_features` and `get_text_features`) but got {type(source).__name__}: {source!r}"[:300]
            )
        kwargs.pop("quiet", None)  # nothing is loaded
        tokenizer, image_processor = _split_processor(processor)
        return cls(source, tokenizer, image_processor, **kwargs)

    # ----------------------------------------------------------------------------- device
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> ClipEncoder:
        """Move the model and the text cache; a no-op when already there."""
        device = torch.device(device)
        if device != self.device:
            self.model.to(device)
            self._text_cache.to(device)
            self._apply_precision()
        return self

    def _apply_precision(self) -> None:
        resolved = resolve_precision(self.precision, self.device)
        if resolved == self._active_precision:
            return
        self.model.to(weight_dtype(resolved))
        if resolved in HALF_DTYPES:
            cast_matmul_weights(self.model, HALF_DTYPES[resolved])
        self._active_precision = resolved

    @property
    def active_precision(self) -> str:
        """The concrete precision in use on the current device (``"auto"`` resolved)."""
        return self._active_precision

    def __deepcopy__(self, memo: dict) -> ClipEncoder:
        # The encoder is frozen: copies of a metric share it instead of duplicating the weights.
        return self

    def __reduce__(self) -> Any:
        source = self._source
        if source is None:
            return super().__reduce__()  # a preloaded model travels with its weights
        # Loaded by name: pickling (torch.save of a metric, ddp_spawn) stores how to load it, not
        # gigabytes of frozen weights; the copy is loaded again, on the CPU.
        name, kwargs = source
        return (_reload_encoder, (name, kwargs))

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        # Unpickled in a new process (ddp_spawn): register the model's attention function there too.
        if getattr(self, "attention_route", None) == "model" and not use_exact_attention(self.model):
            self.attention_route = "process"

    # ----------------------------------------------------------------------------- forward
    def _forward(self, method: str, **inputs: Tensor) -> Tensor:
        if self.attention_policy == "strict":
            check_attention("strict")
        restore = restored_attention() if self.attention_route == "process" else contextlib.nullcontext()
        # Its own precision, never the caller's autocast: the signature says what ran.
        with torch.no_grad(), restore, own_precision(self._active_precision, self.device):
            features = _embedding(getattr(self.model, method)(**inputs))
        return F.normalize(features.float(), dim=-1)

    def encode_images(self, images: Any, value_range: Any = (0.0, 1.0)) -> Tensor:
        """Normalised image embeddings ``(N, D)`` in float32.

        Args:
            images: any input :func:`clip_metric.images.standardize_images` accepts.
            value_range: the ``(low, high)`` of float pixel values.
        """
        return self._image_features(self.preprocess(images, value_range))

    def _image_features(self, pixels: Tensor) -> Tensor:
        self.image_forward_count += 1
        return self._forward("get_image_features", pixel_values=pixels.to(weight_dtype(self._active_precision)))

    def preprocess(self, images: Any, value_range: Any = (0.0, 1.0)) -> Tensor:
        """Model-ready pixel values ``(N, 3, h, w)`` on the encoder's device, in float32 (under any autocast)."""
        with own_precision("32", self.device):
            batches = standardize_images(images, value_range, self.device, keep_uint8=True)
            return torch.cat([self.transform(batch) for batch in batches])

    def encode_texts(self, prompts: Sequence[str]) -> Tensor:
        """Normalised text embeddings ``(N, D)`` in float32, cached by prompt.

        Prompts longer than the model's context are truncated by the tokenizer, which keeps the
        end-of-text token CLIP pools on; they are counted in ``truncated_prompt_count`` and
        logged.

        Raises:
            ValueError: for a non-list, an empty list, non-string or empty prompts.
        """
        prompts = check_prompts(prompts)
        fresh = self._encode_missing(prompts)
        # A fresh embedding may already be out of a small cache: read it from `fresh` first.
        return torch.stack([fresh[p] if p in fresh else self._text_cache[p] for p in prompts])

    def _encode_missing(self, prompts: list[str], batch_size: int | None = None) -> dict[str, Tensor]:
        """Mark cached prompts as just used, encode and cache the others; the new embeddings."""
        missing = self._text_cache.missing(prompts)
        if not missing:
            return {}
        fresh = dict(zip(missing, self._encode_uncached(missing, batch_size)))
        self._text_cache.put(fresh)
        return fresh

    def token_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids per prompt, cut to the model's context keeping the end-of-text token.

        CLIP pools on the end-of-text token, so an over-long prompt keeps its last token; such
        prompts are counted in ``truncated_prompt_count`` and logged.
        """
        prompts = check_prompts(prompts)
        ids = self.tokenizer(prompts, verbose=False)["input_ids"]
        cut = truncate_token_ids(ids, self.context_length, self.tokenizer.eos_token_id)
        if cut:
            self.truncated_prompt_count += len(cut)
            message = (
                f"{len(cut)} prompt(s) longer than the model's {self.context_length}-token context were truncated "
                f"(end-of-text token kept), e.g. {prompts[cut[0]][:80]!r}"
            )
            log.warning(message)
            if not self._warned_truncation:  # once, as torchmetrics does, so notebooks show it too
                self._warned_truncation = True
                warnings.warn(message, UserWarning, stacklevel=3)
        return ids

    def text_inputs(self, ids: Sequence[list[int]]) -> dict[str, Tensor]:
        """Padded ``input_ids`` and ``attention_mask`` on the encoder's device, as the model expects."""
        tokens = self.tokenizer.pad(
            {"input_ids": list(ids)},
            padding="max_length" if self._pad_to_max_length else "longest",
            max_length=self.context_length,
            return_tensors="pt",
        )
        return {k: v.to(self.device, non_blocking=True) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}

    def _encode_uncached(self, prompts: list[str], batch_size: int | None = None) -> Tensor:
        # Tokenise everything once. With several batches, prompts of similar length go together so
        # that little compute is spent on padding; results come back in the caller's order.
        ids = self.token_ids(prompts)
        if batch_size is None or len(ids) <= batch_size:
            self.text_forward_count += 1
            return self._forward("get_text_features", **self.text_inputs(ids))
        chunks, order = [], []
        for chunk in length_grouped_batches([len(row) for row in ids], batch_size):
            self.text_forward_count += 1
            chunks.append(self._forward("get_text_features", **self.text_inputs([ids[i] for i in chunk])))
            order.extend(chunk)
        embeddings = torch.cat(chunks)
        return embeddings[torch.as_tensor(order, device=embeddings.device).argsort()]

    def cache_prompts(self, prompts: Sequence[str], batch_size: int | None = None) -> None:
        """Encode prompts ahead of scoring, in text-tower batches of ``batch_size``.

        When the prompts are known up front (a prompt library, a captioned folder), large
        text-tower batches of prompts of similar token length cost less per prompt than one
        batch per image batch; later calls read the cache. Prompts already cached are skipped,
        and prompts beyond ``text_cache_size`` are not kept.

        Args:
            prompts: the prompts to encode.
            batch_size: prompts per text-tower forward. ``None`` picks 128 on CPU (larger batches
                were slower there: their activations leave the CPU caches) and 256 elsewhere.
        """
        if batch_size is None:
            batch_size = 128 if self.device.type == "cpu" else 256
        check_positive_int("batch_size", batch_size)
        self._encode_missing(list(dict.fromkeys(check_prompts(prompts)))[: self.text_cache_size], batch_size)

    def clear_text_cache(self) -> None:
        self._text_cache.clear()

    @property
    def text_cache_len(self) -> int:
        return len(self._text_cache)

    def score(self, images: Any, prompts: Sequence[str], value_range: Any = (0.0, 1.0)) -> Tensor:
        """Per-sample cosine between each image and its prompt, ``(N,)`` float32.

        Raises:
            ValueError: if the number of images and prompts differ, or for bad images/prompts.
        """
        prompts = check_prompts(prompts)
        pixels = self.preprocess(images, value_range)
        if pixels.shape[0] != len(prompts):
            raise ValueError(
                f"Expected one prompt per image but got {pixels.shape[0]} images and {len(prompts)} prompts"
            )
        text = self.encode_texts(prompts)
        return (self._image_features(pixels) * text).sum(dim=-1).clamp(-1.0, 1.0)
