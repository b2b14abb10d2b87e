#!/usr/bin/env python
"""Throughput, memory and accuracy of ``clip_metric.ClipScore`` against its peers, side by side.

One command measures, on the same images, prompts and batch size, in one process:

* ``ours-default``: this package's :class:`~clip_metric.ClipScore` at its default precision
  (``"auto"``: bf16 autocast for the image tower on CUDA and on CPUs with AMX/AVX512-BF16);
* ``ours-fp32``: the same at ``precision="32"``;
* ``torchmetrics``: torchmetrics' ``CLIPScore`` as users run it (uint8 images, one ``update``
  per batch). torchmetrics 1.9 cannot use a transformers 5 model directly (``get_*_features``
  return output objects, torchmetrics calls ``.norm()`` on them) and only accepts allow-listed
  hub names as strings, so the model is passed through its callable ``model_name_or_path``
  argument, wrapped in a thin adapter that returns the pooled embedding tensors;
* ``per-image``: torchmetrics' functional ``clip_score`` called once per image, loading the
  model and processor from disk on every call (what its string argument does), on fewer images;
* ``floor-fp32`` / ``floor-default``: the bare image tower, ``model.get_image_features`` on
  already resized and normalised pixel tensors, without text, in fp32 and at the precision
  ``ours-default`` resolves to.

Three scenarios: ``fresh`` (every prompt is new in every pass, each batch's prompts encoded
in its ``update``); ``upfront`` (the same new prompts, encoded by ``ClipEncoder.cache_prompts``
at the start of the pass, timed, then the image loop: what the Lightning callback and
``clip-metric score`` do; the peers have no such path and keep their fresh figures); and
``repeated`` (the same prompt library evaluated again: a fresh ``ClipScore`` per pass sharing
one ``ClipEncoder``, as the callback does; the timed passes are second passes, whose text
embeddings all come from the cache). All methods are measured in the same rounds, interleaved (on CPU batch by
batch, in lockstep; see ``--interleave``), so that load from elsewhere on a noisy machine hits
every method alike; each figure is the median over ``--repeats`` rounds, after an untimed
warm-up round.

Models use the real CLIP configurations with random weights (the same FLOPs as the released
checkpoints), saved with ``save_pretrained`` together with the real CLIP tokenizer and a CLIP
image processor, and loaded from that directory the way users load them.

Examples::

    python benchmarks/bench_throughput.py --device cpu --json cpu.json
    python benchmarks/bench_throughput.py --device cuda --json gpu.json
    python benchmarks/bench_throughput.py --tiny            # a few seconds: plumbing check only
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from clip_metric.testing import ARCHITECTURES, CLIPArchitecture, build_clip
MIB = 1024.0 * 1024.0

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


# --------------------------------------------------------------------------------------- models
@dataclass(frozen=True)
class ModelSpec:
    key: str
    architecture: CLIPArchitecture

    @property
    def name(self) -> str:
        return self.architecture.name

    @property
    def reference(self) -> str:
        return self.architecture.reference

    @property
    def image_size(self) -> int:
        return self.architecture.image_size


SPECS = {key: ModelSpec(key, architecture) for key, architecture in ARCHITECTURES.items()}


def build_model_dir(spec: ModelSpec, out_dir: Path, seed: int = 0) -> Path:
    """Save a random-weight CLIPModel of ``spec`` with the real tokenizer and a CLIP image processor."""
    return build_clip(out_dir, spec.architecture, seed=seed)


# --------------------------------------------------------------------------------------- inputs
def make_images(n: int, size: tuple[int, int], odd: tuple[int, int], seed: int = 0) -> list[Tensor]:
    """``n`` smooth random uint8 images ``(3, H, W)``: ``size``, except every 16th (from the 4th) is ``odd``."""
    generator = torch.Generator().manual_seed(seed)
    images = []
    for index in range(n):
        height, width = odd if index % 16 == 3 else size
        low = torch.rand(1, 3, 8, 8, generator=generator)
        image = F.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)[0]
        image = image + 0.08 * torch.randn(3, height, width, generator=generator)
        images.append(image.clamp(0, 1).mul(255).round().to(torch.uint8))
    return images


_LIBRARY: list[str] = []


def library_prompts(n: int) -> list[str]:
    """The package's built-in prompt library, cycled to ``n`` prompts (the repeated scenario)."""
    if not _LIBRARY:
        from clip_metric.prompts import builtin_prompts

        _LIBRARY.extend(p.text for p in builtin_prompts())
    return [_LIBRARY[i % len(_LIBRARY)] for i in range(n)]


def fresh_prompts(n: int, tag: str) -> list[str]:
    """``n`` prompts that no other pass uses (the fresh scenario)."""
    return [f"{text}, take {tag}-{i}" for i, text in enumerate(library_prompts(n))]


@dataclass
class Batch:
    images: Tensor | list[Tensor]  # a (N, 3, H, W) uint8 tensor when equally sized, else a list of (3, H, W)
    prompts: list[str]


def make_batches(images: Sequence[Tensor], prompts: Sequence[str], batch_size: int) -> list[Batch]:
    batches = []
    for start in range(0, len(images), batch_size):
        chunk = list(images[start : start + batch_size])
        same = all(image.shape == chunk[0].shape for image in chunk)
        batches.append(Batch(torch.stack(chunk) if same else chunk, list(prompts[start : start + batch_size])))
    return batches


# --------------------------------------------------------------------------------------- measuring
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak extra memory of a block: CUDA allocator peak, or (CPU) the peak resident set size.

    On CPU, Linux's peak-RSS counter (VmHWM) is reset by writing ``5`` to ``/proc/self/clear_refs``
    before the block; the result is the peak RSS during the block minus the RSS at its start. Where
    that is not possible the figure is ``None``.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.base = 0
        self.ok = True

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return
        try:
            with open("/proc/self/clear_refs", "w") as clear_refs:
                clear_refs.write("5")
            self.base = _proc_status_kib("VmRSS") or 0
            self.ok = _proc_status_kib("VmHWM") is not None
        except OSError:
            self.ok = False

    def stop(self) -> float | None:
        """Peak extra MiB since :meth:`start`."""
        if self.device.type == "cuda":
            synchronize(self.device)
            return (torch.cuda.max_memory_allocated(self.device) - self.base) / MIB
        if not self.ok:
            return None
        peak = _proc_status_kib("VmHWM")
        return None if peak is None else max(peak - self.base, 0) / 1024.0


class ForeignLoad:
    """Share of the machine's CPU time used by other processes during a block (Linux ``/proc``).

    On a shared machine this says how much a round was disturbed; ``None`` where ``/proc`` is
    unavailable.
    """

    @staticmethod
    def _busy_and_own() -> tuple[float, float] | None:
        try:
            with open("/proc/stat") as stat:
                fields = [float(v) for v in stat.readline().split()[1:]]
            with open("/proc/self/stat") as own:
                own_fields = own.read().rsplit(")", 1)[1].split()
        except (OSError, ValueError, IndexError):
            return None
        busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0.0)  # minus idle and iowait
        return busy, float(own_fields[11]) + float(own_fields[12])  # utime + stime, in clock ticks

    def __enter__(self) -> ForeignLoad:
        self.start = self._busy_and_own()
        self.t0 = time.perf_counter()
        self.share: float | None = None
        return self

    def __exit__(self, *exc: Any) -> None:
        end = self._busy_and_own()
        if self.start is None or end is None:
            return
        ticks = os.sysconf("SC_CLK_TCK") * (time.perf_counter() - self.t0) * (os.cpu_count() or 1)
        foreign = (end[0] - self.start[0]) - (end[1] - self.start[1])
        self.share = max(foreign, 0.0) / ticks if ticks > 0 else None


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


# --------------------------------------------------------------------------------------- methods
class Method:
    """One way of scoring a pass: :meth:`begin` (untimed set-up), then :meth:`step` per batch and
    :meth:`finish` (both timed)."""

    key = ""
    label = ""
    precision = "32"
    has_scores = True

    def begin(self) -> None:
        pass

    def prepare(self, batches: Sequence[Batch]) -> None:
        """Timed work before the first batch, knowing the whole pass (only where overridden)."""

    def step(self, index: int, batch: Batch) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        pass

    def scores(self) -> Tensor | None:
        return None

    def text_forwards(self) -> int | None:
        return None


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
        twin = object.__new__(Ours)
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


def has_prepare(method: Method) -> bool:
    return type(method).prepare is not Method.prepare


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


# --------------------------------------------------------------------------------------- one model
@dataclass
class Cell:
    scenario: str  # "fresh", "repeated" or "any" (floors)
    method: Method
    count: int  # images per timed pass
    times: list[float]
    peaks: list[float | None]
    scores: list[Tensor | None]
    forwards: list[int | None]


def measured(fn: Callable[[], Any], device: torch.device) -> tuple[float, float | None]:
    """(seconds, peak extra MiB) of one call, the device synchronised on both sides."""
    memory = PeakMemory(device)
    memory.start()
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    elapsed = time.perf_counter() - start
    return elapsed, memory.stop()


def run_round(
    work: list[tuple[Cell, list[Batch]]], device: torch.device, interleave: str
) -> list[tuple[float, float | None]]:
    """One pass of every cell over its batches; (seconds, peak MiB) per cell.

    ``interleave="batch"`` feeds the cells in lockstep (batch 0 of every cell, then batch 1, ...),
    so that a burst of load from elsewhere on a shared machine hits every method alike;
    ``"pass"`` runs each cell's whole pass in turn (no synchronisation between batches).
    """
    results = []
    if interleave == "pass":
        for c, batches in work:
            c.method.begin()

            def whole(c: Cell = c, batches: list[Batch] = batches) -> None:
                c.method.prepare(batches)
                for index, batch in enumerate(batches):
                    c.method.step(index, batch)
                c.method.finish()

            results.append(measured(whole, device))
        return results
    totals = [0.0] * len(work)
    peaks: list[list[float]] = [[] for _ in work]
    for slot, (c, batches) in enumerate(work):
        c.method.begin()
        if has_prepare(c.method):
            elapsed, peak = measured(lambda: c.method.prepare(batches), device)
            totals[slot] += elapsed
            if peak is not None:
                peaks[slot].append(peak)
    for index in range(max(len(batches) for _, batches in work)):
        for slot, (c, batches) in enumerate(work):
            if index < len(batches):
                elapsed, peak = measured(lambda: c.method.step(index, batches[index]), device)
                totals[slot] += elapsed
                if peak is not None:
                    peaks[slot].append(peak)
    for slot, (c, _) in enumerate(work):
        elapsed, peak = measured(c.method.finish, device)
        totals[slot] += elapsed
        if peak is not None:
            peaks[slot].append(peak)
    return [(total, max(p) if p else None) for total, p in zip(totals, peaks)]


def benchmark_model(spec: ModelSpec, args: argparse.Namespace, device: torch.device, workdir: Path) -> dict[str, Any]:
    from transformers import AutoModel

    n_images = args.images[spec.key]
    n_per_image = min(args.per_image[spec.key], n_images)
    log(f"\n== {spec.name}: building a random-weight model dir ({spec.reference} architecture)")
    model_dir = build_model_dir(spec, workdir / spec.key, seed=args.seed)

    images = [image.to(device) for image in make_images(n_images, args.image_size, args.odd_size, seed=args.seed)]
    library = library_prompts(n_images)

    log(f"   loading methods from {model_dir}")
    ours_default = Ours("ours-default", model_dir, "auto", device)
    ours_fp32 = Ours("ours-fp32", model_dir, "32", device)
    # Their own encoders, so that the fresh scenario's cache cannot serve them.
    upfront_default = OursUpfront("ours-default", model_dir, "auto", device)
    upfront_fp32 = OursUpfront("ours-fp32", model_dir, "32", device)
    tm = TorchmetricsCLIPScore(model_dir, device)
    per_image = PerImage(model_dir, n_per_image)
    bare = AutoModel.from_pretrained(model_dir).eval().requires_grad_(False).to(device)
    pixels = [ours_fp32.encoder.preprocess(batch.images) for batch in make_batches(images, library, args.batch_size)]
    floor_fp32 = Floor("floor-fp32", bare, pixels, "32", device)
    floor_default = Floor("floor-default", half_matmul_weights(model_dir, ours_default.precision, device), pixels,
                          ours_default.precision, device)
    floor_default.label += ", matmul weights stored in half precision"
    floor_autocast = Floor("floor-autocast", bare, pixels, ours_default.precision, device)
    floor_autocast.label += ", autocast over fp32 weights"

    def cell(scenario: str, method: Method, count: int = n_images) -> Cell:
        return Cell(scenario, method, count, [], [], [], [])

    # Each cell has its own runner; the two scenarios share the loaded models (and our encoders).
    cells = [
        cell("fresh", ours_default),
        cell("fresh", ours_fp32),
        cell("fresh", tm),
        cell("fresh", per_image, n_per_image),
        cell("upfront", upfront_default),
        cell("upfront", upfront_fp32),
        cell("repeated", ours_default.sharing_encoder()),
        cell("repeated", ours_fp32.sharing_encoder()),
        cell("repeated", tm.sharing_model()),
        cell("any", floor_fp32),
        cell("any", floor_default),
        cell("any", floor_autocast),
    ]
    repeats = args.repeats_for(spec.key)
    foreign: list[float | None] = []
    for round_index in range(repeats + 1):
        warmup = round_index == 0
        log(f"   round {round_index}/{repeats}{' (warm-up)' if warmup else ''}")
        fresh = make_batches(images, fresh_prompts(n_images, f"r{round_index}"), args.batch_size)
        repeated = make_batches(images, library, args.batch_size)
        order = cells if round_index % 2 == 0 else list(reversed(cells))
        work = []
        for c in order:
            batches = repeated if c.scenario == "repeated" else fresh  # upfront scores the fresh prompts
            if warmup and c.scenario != "repeated":
                batches = batches[:1]  # the repeated scenario's first pass is whole: it fills the cache
            work.append((c, batches))
        per_image.count = 1 if warmup else n_per_image
        with ForeignLoad() as load:
            outcomes = run_round(work, device, args.interleave)
        if warmup:
            continue
        foreign.append(load.share)
        for (c, _), (elapsed, peak) in zip(work, outcomes):
            c.times.append(elapsed)
            c.peaks.append(peak)
            c.scores.append(c.method.scores() if c.method.has_scores else None)
            c.forwards.append(c.method.text_forwards())

    result: dict[str, Any] = {
        "name": spec.name,
        "reference_architecture": spec.reference,
        "parameters_millions": round(sum(p.numel() for p in bare.parameters()) / 1e6, 1),
        "images": n_images,
        "per_image_images": n_per_image,
        "repeats": repeats,
        "foreign_cpu_share_per_round": foreign,
        "default_precision": ours_default.precision,
        "torchmetrics_image_processor": tm.processor_class,
        "scenarios": {},
    }
    floors = {c.method.key: c for c in cells if c.scenario == "any"}
    fresh_cells = {c.method.key: c for c in cells if c.scenario == "fresh"}
    for scenario in ("fresh", "upfront", "repeated"):
        rows = {c.method.key: c for c in cells if c.scenario == scenario}
        # per-image has no cache: its work is the same with a repeated library (measured once); the
        # peers have no up-front path: with fresh prompts they do the fresh scenario's work.
        shared = {"repeated": ["per-image"], "upfront": ["torchmetrics", "per-image"]}.get(scenario, [])
        rows.update({key: fresh_cells[key] for key in shared})
        rows.update(floors)
        result["scenarios"][scenario] = summarize(rows, scenario)

    if args.breakdown_for(spec.key):
        log("   time breakdown")
        result["breakdown"] = {
            method.key: breakdown(method, images, args, device, tm.metric.processor)
            for method in (ours_default, ours_fp32)
        }
    if args.offload_check:
        if device.type == "cuda":
            result["offload"] = offload_check(ours_default, images, library, args.batch_size, device)
        else:
            result["offload"] = {"skipped": "needs a CUDA device"}
    return result


def summarize(rows: dict[str, Cell], scenario: str) -> dict[str, Any]:
    """Median time, throughput, peak memory, score differences and ratios of each method."""
    out: dict[str, Any] = {}
    for key, c in rows.items():
        seconds = statistics.median(c.times)
        peaks = [p for p in c.peaks if p is not None]
        out[key] = {
            "label": c.method.label,
            "precision": c.method.precision,
            "images": c.count,
            "seconds": seconds,
            "seconds_all": c.times,
            "seconds_min": min(c.times),
            "images_per_s": c.count / seconds,
            "ms_per_image": 1000.0 * seconds / c.count,
            "peak_mem_mib": max(peaks) if peaks else None,
            "text_forwards_per_pass": c.forwards if c.method.text_forwards() is not None else None,
            "shared_across_scenarios": c.scenario != scenario,
        }

    def max_diff(key: str, reference: str) -> float | None:
        if key not in rows or reference not in rows or not rows[key].method.has_scores:
            return None
        if rows[key].scenario != scenario:  # shown, not measured, in this scenario
            return None
        if {rows[key].scenario, rows[reference].scenario} - {scenario, "fresh" if scenario == "upfront" else scenario}:
            return None  # scored other prompts
        worst = 0.0
        for mine, ref in zip(rows[key].scores, rows[reference].scores):
            n = min(len(mine), len(ref))
            worst = max(worst, float((mine[:n] - ref[:n]).abs().max()))
        return worst

    for key, row in out.items():
        row["max_abs_diff_vs_ours_fp32"] = max_diff(key, "ours-fp32")
        row["max_abs_diff_vs_hf_fp32"] = max_diff(key, "torchmetrics")
        row["speedup_vs"] = {
            peer: row["images_per_s"] / out[peer]["images_per_s"]
            for peer in ("torchmetrics", "per-image")
            if peer in out
        }
        row["time_vs_floor"] = {
            floor: row["ms_per_image"] / out[floor]["ms_per_image"]
            for floor in ("floor-fp32", "floor-default")
            if floor in out
        }
    return out


def breakdown(method: Ours, images: list[Tensor], args: argparse.Namespace, device: torch.device, hf_processor: Any):
    """Where one ClipScore pass spends its time (fresh prompts), per batch of ``--batch-size``.

    For every batch, the components are timed one by one (the device synchronised after each) in
    the order ``ClipEncoder.score`` runs them, then the whole ``ClipScore.update`` is timed on the
    same images with other fresh prompts (``total``; plus ``compute()`` once per pass), so both
    see the same machine load. ``other`` is what the components do not account for; on a GPU it
    can be negative, since a whole update overlaps host work with device work and the
    synchronised components cannot.
    """
    from clip_metric import ClipScore
    from clip_metric.utilities.precision import weight_dtype

    encoder = method.encoder
    parts = ["preprocess", "tokenize", "text tower", "image tower"]
    runs: dict[str, list[float]] = {name: [] for name in parts + ["total", "hf_processor_images"]}

    def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
        synchronize(device)
        start = time.perf_counter()
        value = fn()
        synchronize(device)
        return value, time.perf_counter() - start

    for round_index in range(args.repeats + 1):
        batches = make_batches(images, fresh_prompts(len(images), f"b{round_index}"), args.batch_size)
        others = make_batches(images, fresh_prompts(len(images), f"t{round_index}"), args.batch_size)
        sums = dict.fromkeys(runs, 0.0)
        metric = ClipScore(encoder)
        for batch, other in zip(batches, others):
            pixels, t = timed(lambda: encoder.preprocess(batch.images))
            sums["preprocess"] += t
            # The package's own tokenisation: one tokenizer call, cut to the context, padded.
            tokens, t = timed(lambda: encoder.text_inputs(encoder.token_ids(batch.prompts)))
            sums["tokenize"] += t
            _, t = timed(lambda: encoder._forward("get_text_features", **tokens))
            sums["text tower"] += t
            dtype = weight_dtype(encoder.active_precision)
            _, t = timed(lambda: encoder._forward("get_image_features", pixel_values=pixels.to(dtype)))
            sums["image tower"] += t
            _, t = timed(lambda: metric.update(other.images, other.prompts))
            sums["total"] += t
            cpu_images = [image.cpu() for image in batch.images]
            _, t = timed(lambda: hf_processor(images=cpu_images, return_tensors="pt"))
            sums["hf_processor_images"] += t
        _, t = timed(metric.compute)
        sums["total"] += t
        if round_index > 0:  # round 0 warms up
            for name, value in sums.items():
                runs[name].append(value)

    n_batches = math.ceil(len(images) / args.batch_size)
    ms = {name: 1000.0 * statistics.median(values) / n_batches for name, values in runs.items()}
    ms["other (scoring, metric, glue)"] = ms["total"] - sum(ms[name] for name in parts)
    return {
        "precision": method.precision,
        "batch_size": args.batch_size,
        "batches": n_batches,
        "ms_per_batch": ms,
        "share_of_total": {name: ms[name] / ms["total"] for name in parts + ["other (scoring, metric, glue)"]},
    }


def offload_check(method: Ours, images: list[Tensor], prompts: list[str], batch_size: int, device: torch.device):
    """Does ``metric.to("cpu")`` + ``torch.cuda.empty_cache()`` give the encoder's GPU memory back?"""
    gc.collect()
    torch.cuda.empty_cache()
    batches = make_batches(images, prompts, batch_size)
    metric = method.metric
    metric.reset()
    metric.update(batches[0].images, batches[0].prompts)
    first = metric.per_sample()[1].clone()
    synchronize(device)
    weights = sum(p.numel() * p.element_size() for p in method.encoder.model.parameters())
    on_gpu = torch.cuda.memory_allocated(device)
    metric.to("cpu")
    torch.cuda.empty_cache()
    off = torch.cuda.memory_allocated(device)
    reserved_off = torch.cuda.memory_reserved(device)
    metric.to(device)
    metric.reset()
    metric.update(batches[0].images, batches[0].prompts)
    again = metric.per_sample()[1]
    returned = on_gpu - off
    return {
        "weights_mib": weights / MIB,
        "allocated_before_mib": on_gpu / MIB,
        "allocated_after_mib": off / MIB,
        "reserved_after_mib": reserved_off / MIB,
        "returned_mib": returned / MIB,
        "returned_fraction_of_weights": returned / weights,
        "max_score_change_after_round_trip": float((first.cpu() - again.cpu()).abs().max()),
        "passed": returned >= 0.99 * weights,
    }


# --------------------------------------------------------------------------------------- targets
def evaluate_targets(models: dict[str, Any], device: torch.device, tiny: bool) -> list[dict[str, Any]]:
    """Pass/fail of the performance targets for this device (informational in --tiny mode)."""

    def row(name: str, model: str, scenario: str, value: float | None, op: str, threshold: float) -> dict[str, Any]:
        passed = None if value is None else (value >= threshold if op == ">=" else value <= threshold)
        return dict(target=name, model=model, scenario=scenario, value=value, op=op, threshold=threshold, passed=passed)

    def get(model: str, scenario: str, method: str) -> dict[str, Any] | None:
        return models.get(model, {}).get("scenarios", {}).get(scenario, {}).get(method)

    rows = []
    if device.type == "cpu":
        model = "tiny" if tiny else "b32"
        fresh = get(model, "fresh", "ours-default")
        rep = get(model, "repeated", "ours-fp32")
        upfront = get(model, "upfront", "ours-default")
        for scenario, measured_row in (("fresh", fresh), ("upfront", upfront)):
            rows.append(row("default precision: x torchmetrics CLIPScore throughput", model, scenario,
                            measured_row and measured_row["speedup_vs"].get("torchmetrics"), ">=", 3.0))
        worst = None
        if fresh:
            diffs = [get(model, s, "ours-default")["max_abs_diff_vs_ours_fp32"] for s in ("fresh", "upfront", "repeated")]
            worst = max(d for d in diffs if d is not None)
        rows.append(row("default precision: max |score - fp32 score| (cosine)", model, "all", worst, "<=", 2e-3))
        rows.append(row("default precision: x per-image pattern throughput", model, "fresh",
                        fresh and fresh["speedup_vs"].get("per-image"), ">=", 20.0))
        rep_default = get(model, "repeated", "ours-default")
        rows.append(row("default precision: x per-image pattern throughput", model, "repeated",
                        rep_default and rep_default["speedup_vs"].get("per-image"), ">=", 20.0))
        rows.append(row("fp32: time / fp32 floor time", model, "repeated",
                        rep and rep["time_vs_floor"].get("floor-fp32"), "<=", 1.10))
    else:
        model = "tiny" if tiny else "l14-336"
        for scenario in ("fresh", "upfront", "repeated"):
            measured_row = get(model, scenario, "ours-default")
            rows.append(row("default precision: x torchmetrics CLIPScore throughput", model, scenario,
                            measured_row and measured_row["speedup_vs"].get("torchmetrics"), ">=", 10.0))
            rows.append(row("default precision: time / floor time at the same precision", model, scenario,
                            measured_row and measured_row["time_vs_floor"].get("floor-default"), "<=", 1.2))
    return rows


# --------------------------------------------------------------------------------------- report
ORDER = ["ours-default", "ours-fp32", "torchmetrics", "per-image", "floor-fp32", "floor-default", "floor-autocast"]


def _shares(model: dict[str, Any]) -> str:
    shares = model.get("foreign_cpu_share_per_round") or []
    return ", ".join("n/a" if v is None else f"{100 * v:.0f}%" for v in shares) or "n/a"


def _fmt(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:{spec}}{suffix}"


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        f"# clip_metric throughput ({env['device']}: {env['device_name']})",
        "",
        f"- torch {env['torch']}, transformers {env['transformers']}, torchmetrics {env['torchmetrics']}, "
        f"Python {env['python']}",
        f"- CPU: {env['cpu_model']} ({env['cpu_count']} logical CPUs, torch threads {env['torch_threads']}, "
        f"AMX {env['cpu_amx']}, AVX512-BF16 {env['cpu_avx512_bf16']})",
        f"- command: `{env['command']}`; clip_metric sources sha256 {env.get('package_sources_sha256')}",
        f"- load average (1/5/15 min) at start {env['load_average_at_start']}, at end {env.get('load_average_at_end')}",
        f"- batch size {report['settings']['batch_size']}, the median of several rounds after a warm-up round, "
        f"methods interleaved by {report['settings']['interleave']}; "
        f"images {report['settings']['image_size']} uint8 plus some "
        f"{report['settings']['odd_size']}",
    ]
    if report["settings"]["tiny"]:
        lines.append("- **--tiny: 2-layer toy model; checks the plumbing, the figures mean nothing**")
    lines += ["", "Notes:", ""] + [f"- {note}" for note in report["notes"]]
    for model in report["models"].values():
        lines += [
            "",
            f"## {model['name']} ({model['parameters_millions']}M parameters, architecture of "
            f"{model['reference_architecture']}, random weights)",
            "",
            f"{model['images']} images ({model['per_image_images']} for per-image), median of {model['repeats']} "
            f"rounds; share of the CPUs used by other processes per round: {_shares(model)}; default precision "
            f"resolves to `{model['default_precision']}`; torchmetrics' image processor: "
            f"`{model['torchmetrics_image_processor']}`.",
        ]
        for scenario, rows in model["scenarios"].items():
            title = {
                "fresh": "fresh prompts (every prompt new: text tower runs for every batch)",
                "upfront": "fresh prompts encoded up front (ours: `cache_prompts` on the pass's prompts, timed, "
                "then the image loop, as the callback and `clip-metric score` do)",
                "repeated": "same prompt library again (second pass: ours reads text embeddings from its cache)",
            }[scenario]
            lines += [
                "",
                f"### {title}",
                "",
                "| method | precision | images/s | ms/image | x torchmetrics | x per-image | time / floor fp32 "
                "| time / floor default | peak mem (MiB) | max abs diff vs ours fp32 | max abs diff vs HF fp32 "
                "| text forwards per pass |",
                "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for key in ORDER:
                if key not in rows:
                    continue
                r = rows[key]
                forwards = r["text_forwards_per_pass"]
                lines.append(
                    f"| {key}{' (shared)' if r['shared_across_scenarios'] else ''} | {r['precision']} "
                    f"| {_fmt(r['images_per_s'], '.1f')} | {_fmt(r['ms_per_image'], '.1f')} "
                    f"| {_fmt(r['speedup_vs'].get('torchmetrics'), '.2f', 'x')} "
                    f"| {_fmt(r['speedup_vs'].get('per-image'), '.1f', 'x')} "
                    f"| {_fmt(r['time_vs_floor'].get('floor-fp32'), '.3f')} "
                    f"| {_fmt(r['time_vs_floor'].get('floor-default'), '.3f')} "
                    f"| {_fmt(r['peak_mem_mib'], '.0f')} "
                    f"| {_fmt(r['max_abs_diff_vs_ours_fp32'], '.2e')} | {_fmt(r['max_abs_diff_vs_hf_fp32'], '.2e')} "
                    f"| {'-' if forwards is None else max(forwards)} |"
                )
        if "breakdown" in model:
            lines += [
                "",
                "### where ours spends its time (fresh prompts, ms per batch)",
                "",
                "| component | " + " | ".join(f"{k} ({b['precision']})" for k, b in model["breakdown"].items()) + " |",
                "|---|" + "---:|" * len(model["breakdown"]),
            ]
            names = list(next(iter(model["breakdown"].values()))["share_of_total"]) + ["total"]
            for name in names:
                cells = []
                for b in model["breakdown"].values():
                    share = b["share_of_total"].get(name)
                    percent = f" ({100 * share:.0f}%)" if share is not None else ""
                    cells.append(f"{b['ms_per_batch'][name]:.1f}{percent}")
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            hf = [f"{b['ms_per_batch']['hf_processor_images']:.1f}" for b in model["breakdown"].values()]
            lines.append("| for comparison: HF CLIPProcessor on the same images (torchmetrics' preprocessing) | "
                         + " | ".join(hf) + " |")
        if "offload" in model:
            off = model["offload"]
            lines += ["", "### offload (`metric.to('cpu')` + `torch.cuda.empty_cache()`)", ""]
            if "skipped" in off:
                lines.append(f"skipped: {off['skipped']}")
            else:
                lines.append(
                    f"allocated {off['allocated_before_mib']:.0f} MiB -> {off['allocated_after_mib']:.0f} MiB: "
                    f"returned {off['returned_mib']:.0f} MiB = {100 * off['returned_fraction_of_weights']:.1f}% of "
                    f"the {off['weights_mib']:.0f} MiB of weights; largest score change after moving back: "
                    f"{off['max_score_change_after_round_trip']:.1e}; {'PASS' if off['passed'] else 'FAIL'}"
                )
    lines += ["", "## targets", ""]
    lines += ["| target | model | scenario | measured | target | result |", "|---|---|---|---:|---:|---|"]
    for t in report["targets"]:
        spec = ".2e" if t["threshold"] < 0.01 else ".3f"
        result = "n/a" if t["passed"] is None else ("PASS" if t["passed"] else "FAIL")
        if report["settings"]["tiny"] and t["passed"] is not None:
            result += " (tiny: not meaningful)"
        lines.append(
            f"| {t['target']} | {t['model']} | {t['scenario']} | {_fmt(t['value'], spec)} "
            f"| {t['op']} {t['threshold']:{spec}} | {result} |"
        )
    return "\n".join(lines) + "\n"


def _package_hash() -> str:
    """A short hash of the benchmarked package's Python sources (which revision was measured)."""
    import hashlib

    import clip_metric

    root = Path(clip_metric.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def environment(device: torch.device) -> dict[str, Any]:
    import torchmetrics
    import transformers

    cpu_model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    env = {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model,
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_amx": bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()),
        "cpu_avx512_bf16": bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torchmetrics": torchmetrics.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python"] + sys.argv),
        "load_average_at_start": _load_average(),
        "package_sources_sha256": _package_hash(),
    }
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
        env["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
        env["tf32_cudnn"] = torch.backends.cudnn.allow_tf32
    return env


# --------------------------------------------------------------------------------------- CLI
def quiet_transformers() -> None:
    """No transformers warnings, progress bars or FutureWarnings in a benchmark's output."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW like 383x517 but got {text!r}") from None
    return height, width


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Throughput ratios taken in the same run are what count; absolute figures vary from run to run.",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available")
    parser.add_argument("--models", default="b32,l14-336", help="comma-separated from: b32, l14-336 (default: both)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (median reported) after one warm-up round")
    parser.add_argument("--repeats-l14", type=int, default=None,
                        help="timed rounds for ViT-L/14-336 (default: 3 on CPU, --repeats on CUDA)")
    parser.add_argument("--images-b32", type=int, default=None,
                        help="images for ViT-B/32 (default: 32 on CPU, 256 on CUDA)")
    parser.add_argument("--images-l14", type=int, default=None,
                        help="images for ViT-L/14-336 (default: 8 on CPU, 128 on CUDA)")
    parser.add_argument("--per-image-b32", type=int, default=None,
                        help="images for the per-image pattern, ViT-B/32 (default: 6 on CPU, 16 on CUDA)")
    parser.add_argument("--per-image-l14", type=int, default=None,
                        help="images for the per-image pattern, ViT-L/14-336 (default: 2 on CPU, 8 on CUDA)")
    parser.add_argument("--image-size", type=_size, default=(512, 512),
                        help="size of most images, HxW (default 512x512)")
    parser.add_argument("--odd-size", type=_size, default=(383, 517),
                        help="size of every 16th image, HxW (default 383x517)")
    parser.add_argument("--breakdown", choices=("auto", "all", "none"), default="auto",
                        help="time breakdown of ours: auto = every model on CUDA, ViT-B/32 only on CPU")
    parser.add_argument("--interleave", choices=("auto", "batch", "pass"), default="auto",
                        help="how timed passes are interleaved: batch = all methods in lockstep, batch by batch "
                        "(robust to load from elsewhere on a shared machine); pass = whole passes in turn, no "
                        "synchronisation between batches; auto = batch on CPU, pass on CUDA")
    parser.add_argument("--offload", action="store_true", help="offload check (always on with CUDA)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON to this path")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the markdown report to this path")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where to save the models (default: a temp dir, removed)")
    parser.add_argument("--tiny", action="store_true",
                        help="2-layer toy model, 4 images, 1 repeat: a few seconds on CPU (checks the plumbing)")
    args = parser.parse_args(argv)

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    cuda = args.device == "cuda"
    if args.tiny:
        args.model_keys = ["tiny"]
        args.repeats = 1
        args.images = {"tiny": 4}
        args.per_image = {"tiny": 2}
    else:
        args.model_keys = [k.strip() for k in args.models.split(",") if k.strip()]
        unknown = [k for k in args.model_keys if k not in ("b32", "l14-336")]
        if unknown or not args.model_keys:
            parser.error(f"--models: unknown {unknown}; choose from b32, l14-336")
        pick = lambda value, cpu, gpu: value if value is not None else (gpu if cuda else cpu)  # noqa: E731
        args.images = {"b32": pick(args.images_b32, 32, 256), "l14-336": pick(args.images_l14, 8, 128)}
        args.per_image = {"b32": pick(args.per_image_b32, 6, 16), "l14-336": pick(args.per_image_l14, 2, 8)}
    repeats_l14 = args.repeats_l14 if args.repeats_l14 is not None else (args.repeats if cuda else min(args.repeats, 3))
    args.repeats_for = lambda key: repeats_l14 if key == "l14-336" else args.repeats
    if min(args.repeats, repeats_l14) < 1 or args.batch_size < 1 or min(args.images.values()) < 1:
        parser.error("--repeats, --batch-size and image counts must be positive")
    if args.interleave == "auto":
        args.interleave = "pass" if cuda else "batch"
    args.offload_check = args.offload or cuda
    args.breakdown_for = lambda key: args.breakdown == "all" or (
        args.breakdown == "auto" and (cuda or key in ("b32", "tiny"))
    )
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    quiet_transformers()

    report: dict[str, Any] = {
        "environment": environment(device),
        "settings": {
            "batch_size": args.batch_size,
            "repeats": args.repeats,
            "image_size": "x".join(map(str, args.image_size)),
            "odd_size": "x".join(map(str, args.odd_size)),
            "odd_every": "every 16th image, starting with the 4th",
            "images": {k: args.images[k] for k in args.model_keys},
            "per_image_images": {k: args.per_image[k] for k in args.model_keys},
            "tiny": args.tiny,
            "interleave": args.interleave,
        },
        "notes": [
            ADAPTER_NOTE,
            PER_IMAGE_NOTE,
            FLOOR_NOTE,
            "Random weights with the real architectures: the same FLOPs as the released checkpoints; the "
            "score differences are those of random embeddings, not of a trained model.",
            "Rows marked (shared) are measured once per round and shown in several scenarios: the floors take no "
            "text, and per-image has no cache, so their work does not depend on the scenario; torchmetrics has "
            "no way to encode prompts up front, so its fresh-prompt row is shown in the up-front scenario.",
            "Up-front scenario: the same new prompts as the fresh scenario, scored by ours through separate "
            "encoders whose caches hold no earlier prompts; ClipEncoder.cache_prompts (one tokenizer call, "
            "prompts grouped by token length, text-tower batches of 128 on CPU and 256 on CUDA) is timed as "
            "part of the pass. With batch interleaving it runs before the lockstep loop, each method's "
            "up-front encoding in turn, so it is not shielded from load bursts as the batches are.",
            "Score differences are of cosines (torchmetrics' scale is 100x). 'HF fp32' is the torchmetrics "
            "path: Hugging Face CLIPProcessor + fp32 model. 'x peer' is images/s over the peer's images/s; "
            "'time / floor' is time per image over the floor's time per image.",
        ],
        "models": {},
    }
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="clip-bench-"))
    try:
        for key in args.model_keys:
            report["models"][key] = benchmark_model(SPECS[key], args, device, workdir)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    report["environment"]["load_average_at_end"] = _load_average()
    report["targets"] = evaluate_targets(report["models"], device, args.tiny)
    report["markdown"] = markdown(report)
    print(report["markdown"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=_json_default))
    if args.markdown:
        args.markdown.write_text(report["markdown"])
    return report


def _json_default(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


if __name__ == "__main__":
    main()
