"""The ways of scoring that the benchmarks compare, each a :class:`~harness.timing.Method`.

* :class:`Ours` / :class:`OursUpfront`: this package's ``ClipScore`` (per update, or with the
  pass's prompts encoded up front by ``ClipEncoder.cache_prompts``);
* :class:`TorchmetricsCLIPScore`: torchmetrics' ``CLIPScore`` as users run it, through the
  adapter described in :data:`ADAPTER_NOTE`; :func:`torchmetrics_text` is its text half alone;
* :class:`PerImage`: torchmetrics' functional ``clip_score`` once per image, loading the model
  on every call;
* :class:`Floor`: the bare image tower on ready pixels, the least any scorer can cost.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.timing import Method
from harness.workload import Batch, chunks

ADAPTER_NOTE = (
    "torchmetrics 1.9 CLIPScore/clip_score were given the model through their callable "
    "`model_name_or_path` argument, wrapped in a thin adapter whose get_image_features/"
    "get_text_features return the pooled embedding tensors (transformers 5 returns output "
    "objects, on which torchmetrics' `.norm()` fails); their image preprocessing is the "
    "Hugging Face CLIPProcessor, fed uint8 tensors as users do."
)
PER_IMAGE_NOTE = (
    "per-image: torchmetrics.functional.multimodal.clip_score on one image at a time, loading "
    "CLIPModel and CLIPProcessor from the saved directory on every call (what its string "
    "argument does), under torch.no_grad() as in a validation loop."
)
FLOOR_NOTE = (
    "floor: model.get_image_features(pixel_values=...) of the bare Hugging Face model on pixel "
    "tensors that are already resized, cropped and normalised, on the device; no text tower, no "
    "preprocessing, no scoring. floor-fp32 runs it in fp32; floor-default at the precision "
    "ours-default resolves to, under its autocast with the image tower's linear/convolution "
    "weights stored in that half precision (no per-call weight casts: the fastest plain recipe); "
    "floor-autocast is the textbook recipe, the same autocast over the fp32 weights."
)


# --------------------------------------------------------------------------------------- torchmetrics adapter
def pooled(output: Any) -> Tensor:
    """The embedding tensor from ``get_*_features`` (a tensor in transformers 4, an output object in 5)."""
    return output if isinstance(output, Tensor) else output.pooler_output


class Recorder:
    """Embeddings a torchmetrics run computed, to recover its per-sample cosines."""

    def __init__(self) -> None:
        self.image: list[Tensor] = []
        self.text: list[Tensor] = []

    def clear(self) -> None:
        self.image.clear()
        self.text.clear()

    def cosines(self) -> Tensor:
        image = F.normalize(torch.cat(self.image).float(), dim=-1)
        text = F.normalize(torch.cat(self.text).float(), dim=-1)
        return (image * text).sum(-1).cpu().double()


class PooledFeatures(torch.nn.Module):
    """A ``CLIPModel`` whose ``get_image_features``/``get_text_features`` return the pooled tensors.

    The adapter torchmetrics 1.9 needs on transformers 5 (see :data:`ADAPTER_NOTE`). It also hands
    a detached reference of each embedding to a :class:`Recorder` (no copy, no extra compute).
    """

    def __init__(self, model: torch.nn.Module, recorder: Recorder | None = None) -> None:
        super().__init__()
        self.model = model
        self.config = model.config
        self.recorder = recorder

    def get_image_features(self, *args: Any, **kwargs: Any) -> Tensor:
        features = pooled(self.model.get_image_features(*args, **kwargs))
        if self.recorder is not None:
            self.recorder.image.append(features.detach())
        return features

    def get_text_features(self, *args: Any, **kwargs: Any) -> Tensor:
        features = pooled(self.model.get_text_features(*args, **kwargs))
        if self.recorder is not None:
            self.recorder.text.append(features.detach())
        return features


def torchmetrics_loader(model_dir: Path, recorder: Recorder) -> Callable[[], tuple[Any, Any]]:
    """The callable for torchmetrics' ``model_name_or_path``: loads from disk on every call."""

    def load() -> tuple[Any, Any]:
        from transformers import CLIPModel, CLIPProcessor

        model = CLIPModel.from_pretrained(model_dir).eval()
        return PooledFeatures(model, recorder), CLIPProcessor.from_pretrained(model_dir)

    return load


def torchmetrics_text(
    tokenizer: Any, model: torch.nn.Module, prompts: Sequence[str], batch_size: int, device: torch.device
) -> Tensor:
    """The text half of torchmetrics' ``CLIPScore.update``, one batch per image batch: the tokenizer
    with ``padding=True, truncation=True`` and the fp32 text tower; normalised embeddings."""
    out = []
    for chunk in chunks(prompts, batch_size):
        tokens = tokenizer(chunk, padding=True, truncation=True, max_length=77, return_tensors="pt")
        with torch.no_grad():
            features = pooled(
                model.get_text_features(
                    input_ids=tokens["input_ids"].to(device), attention_mask=tokens["attention_mask"].to(device)
                )
            )
        out.append(F.normalize(features.float(), dim=-1))
    return torch.cat(out)


# --------------------------------------------------------------------------------------- methods
class Ours(Method):
    """This package's ClipScore, loaded from the directory; one encoder, a fresh metric per pass."""

    def __init__(self, key: str, model_dir: Path, precision: str, device: torch.device) -> None:
        from clip_metric import ClipScore

        self.key = key
        self.device = device
        self.metric = ClipScore(str(model_dir), precision=precision, keep_scores=True).to(device)
        self.encoder = self.metric.encoder
        self.precision = self.encoder.active_precision
        self.label = f"clip_metric ClipScore (precision={precision!r} -> {self.precision})"
        self._forwards = 0

    def sharing_encoder(self) -> Ours:
        """Another runner over the same encoder (and so the same text cache)."""
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__)
        return twin

    def begin(self) -> None:
        from clip_metric import ClipScore

        # The callback's pattern: a new metric per evaluation, the same (caching) encoder.
        self.metric = ClipScore(self.encoder, keep_scores=True).to(self.device)
        self._forwards = 0

    def step(self, index: int, batch: Batch) -> None:
        before = self.encoder.text_forward_count
        self.metric.update(batch.images, batch.prompts)
        self._forwards += self.encoder.text_forward_count - before

    def finish(self) -> None:
        self.metric.compute()

    def scores(self) -> Tensor:
        return self.metric.per_sample()[1].cpu().double()

    def text_forwards(self) -> int:
        return self._forwards


class OursUpfront(Ours):
    """ClipScore with the pass's prompts encoded up front by ``ClipEncoder.cache_prompts`` (timed),
    then updated batch by batch: what the Lightning callback and ``clip-metric score`` do."""

    def __init__(self, key: str, model_dir: Path, precision: str, device: torch.device) -> None:
        super().__init__(key, model_dir, precision, device)
        self.label += ", prompts encoded up front with cache_prompts"

    def prepare(self, batches: Sequence[Batch]) -> None:
        before = self.encoder.text_forward_count
        self.encoder.cache_prompts([prompt for batch in batches for prompt in batch.prompts])
        self._forwards += self.encoder.text_forward_count - before


class TorchmetricsCLIPScore(Method):
    key = "torchmetrics"
    label = "torchmetrics CLIPScore (fp32, adapter)"

    def __init__(self, model_dir: Path | None, device: torch.device, model: Any = None, processor: Any = None) -> None:
        from torchmetrics.multimodal.clip_score import CLIPScore

        self.device = device
        self.recorder = Recorder()
        if model is None:
            loader = torchmetrics_loader(model_dir, self.recorder)
        else:  # a second metric over an already loaded model (see `sharing_model`)
            loader = lambda: (PooledFeatures(model, self.recorder), processor)  # noqa: E731
        self.metric = CLIPScore(model_name_or_path=loader).to(device)
        self.processor_class = type(getattr(self.metric.processor, "image_processor", self.metric.processor)).__name__

    def sharing_model(self) -> TorchmetricsCLIPScore:
        """Another CLIPScore over the same loaded model, with its own state."""
        return TorchmetricsCLIPScore(None, self.device, self.metric.model.model, self.metric.processor)

    def begin(self) -> None:
        self.metric.reset()
        self.recorder.clear()

    def step(self, index: int, batch: Batch) -> None:
        self.metric.update(batch.images, batch.prompts)

    def finish(self) -> None:
        self.metric.compute()

    def scores(self) -> Tensor:
        return self.recorder.cosines()


class PerImage(Method):
    key = "per-image"
    label = "torchmetrics clip_score per image, model loaded per call"

    def __init__(self, model_dir: Path, count: int) -> None:
        self.recorder = Recorder()
        self.loader = torchmetrics_loader(model_dir, self.recorder)
        self.count = count
        self.done = 0

    def begin(self) -> None:
        self.recorder.clear()
        self.done = 0

    def step(self, index: int, batch: Batch) -> None:
        from torchmetrics.functional.multimodal import clip_score

        with torch.no_grad():
            for image, prompt in zip(batch.images, batch.prompts):
                if self.done == self.count:
                    return
                clip_score(image, prompt, self.loader)
                self.done += 1

    def scores(self) -> Tensor:
        return self.recorder.cosines()


class Floor(Method):
    """The bare image tower on pre-computed pixels (one tensor per batch index)."""

    has_scores = False

    def __init__(self, key: str, model: torch.nn.Module, pixels: list[Tensor], precision: str, device: torch.device):
        self.key = key
        self.model = model
        self.pixels = pixels
        self.precision = precision
        self.device = device
        self.label = f"floor: bare image tower ({precision})"

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16-mixed":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        if self.precision == "16-mixed":
            return torch.autocast(self.device.type, dtype=torch.float16)
        return contextlib.nullcontext()

    def step(self, index: int, batch: Batch) -> None:
        with torch.no_grad(), self._autocast():
            self.model.get_image_features(pixel_values=self.pixels[index])


def half_matmul_weights(model_dir: Path, precision: str, device: torch.device) -> torch.nn.Module:
    """The bare model with its image tower's linear/convolution weights stored in half precision.

    The fastest plain way to run the image tower under a mixed precision: autocast then has no
    weight to cast at every call (it caches casts only of weights that require grad). Layer norms,
    embeddings and the text tower stay fp32. Under ``"32"`` this is the plain fp32 model.
    """
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir).eval().requires_grad_(False).to(device)
    half = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    if half is not None:
        for name, child in model.named_children():
            if "vision" in name or "visual" in name:  # vision_model, visual_projection
                for layer in child.modules():
                    if isinstance(layer, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)):
                        layer.to(half)
    return model
