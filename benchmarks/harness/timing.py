"""Timing: synchronised calls, peak memory, interleaved rounds, and the load other processes add.

Machines are shared and noisy, so every script measures the methods it compares in the same
rounds, interleaved (:func:`rounds`), and reports medians; the first round is an untimed warm-up.
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch
from torch import Tensor

MIB = 1024.0 * 1024.0
T = TypeVar("T")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], T], device: torch.device) -> tuple[T, float]:
    """``(value, seconds)`` of one call, the device synchronised on both sides."""
    synchronize(device)
    start = time.perf_counter()
    value = fn()
    synchronize(device)
    return value, time.perf_counter() - start


def _proc_status_kib(name: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(name + ":"):
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


def measured(fn: Callable[[], Any], device: torch.device) -> tuple[float, float | None]:
    """``(seconds, peak extra MiB)`` of one call, the device synchronised on both sides."""
    memory = PeakMemory(device)
    memory.start()
    _, elapsed = timed(fn, device)
    return elapsed, memory.stop()


class ForeignLoad:
    """Share of the machine's CPU time used by other processes during a block (Linux ``/proc``).

    On a shared machine this says how much a round was disturbed; ``None`` where ``/proc`` is
    unavailable. ``children=True`` counts the CPU time of finished child processes as this
    process's own (a benchmark that times subprocesses).
    """

    def __init__(self, children: bool = False) -> None:
        self.children = children
        self.share: float | None = None

    def _busy_and_own(self) -> tuple[float, float] | None:
        try:
            with open("/proc/stat") as stat:
                fields = [float(v) for v in stat.readline().split()[1:]]
            with open("/proc/self/stat") as own:
                own_fields = own.read().rsplit(")", 1)[1].split()
        except (OSError, ValueError, IndexError):
            return None
        busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0.0)  # minus idle and iowait
        own_ticks = float(own_fields[11]) + float(own_fields[12])  # utime + stime, in clock ticks
        if self.children:
            own_ticks += float(own_fields[13]) + float(own_fields[14])  # cutime + cstime
        return busy, own_ticks

    def __enter__(self) -> ForeignLoad:
        self.start = self._busy_and_own()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        end = self._busy_and_own()
        if self.start is None or end is None:
            return
        ticks = os.sysconf("SC_CLK_TCK") * (time.perf_counter() - self.t0) * (os.cpu_count() or 1)
        foreign = (end[0] - self.start[0]) - (end[1] - self.start[1])
        self.share = max(foreign, 0.0) / ticks if ticks > 0 else None


def rounds(items: Sequence[T], repeats: int, warmup: bool = True) -> Iterator[tuple[int, bool, list[T]]]:
    """``(round_index, timed, order)``: an untimed warm-up round (index 0) unless ``warmup`` is
    false, then ``repeats`` timed rounds; the order reverses every other round, so that no method
    always runs first or last."""
    for index in range(repeats + int(warmup)):
        yield index, not (warmup and index == 0), list(items) if index % 2 == 0 else list(reversed(items))


def interleaved_medians(variants: dict[str, Callable[[], Any]], repeats: int, device: torch.device) -> dict[str, float]:
    """Median milliseconds of each variant, the variants interleaved (:func:`rounds`)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _, timed_round, order in rounds(list(variants), repeats):
        for name in order:
            _, seconds = timed(variants[name], device)
            if timed_round:
                times[name].append(1000.0 * seconds)
    return {name: statistics.median(values) for name, values in times.items()}


# --------------------------------------------------------------------------------------- passes
class Method:
    """One way of scoring a pass: :meth:`begin` (untimed set-up), then :meth:`prepare`, :meth:`step`
    per batch and :meth:`finish` (all timed)."""

    key = ""
    label = ""
    precision = "32"
    has_scores = True

    def begin(self) -> None:
        pass

    def prepare(self, batches: Sequence[Any]) -> None:
        """Timed work before the first batch, knowing the whole pass (only where overridden)."""

    def step(self, index: int, batch: Any) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        pass

    def scores(self) -> Tensor | None:
        return None

    def text_forwards(self) -> int | None:
        return None


def has_prepare(method: Method) -> bool:
    return type(method).prepare is not Method.prepare


@dataclass
class Cell:
    """One method in one scenario, and what each timed pass measured."""

    scenario: str  # e.g. "fresh", "upfront", "repeated", or "any" (work that does not depend on it)
    method: Method
    count: int  # images per timed pass
    times: list[float] = field(default_factory=list)
    peaks: list[float | None] = field(default_factory=list)
    scores: list[Tensor | None] = field(default_factory=list)
    forwards: list[int | None] = field(default_factory=list)


def run_round(work: list[tuple[Cell, list[Any]]], device: torch.device, interleave: str) -> list[tuple[float, float | None]]:
    """One pass of every cell over its batches; ``(seconds, peak MiB)`` per cell.

    ``interleave="batch"`` feeds the cells in lockstep (batch 0 of every cell, then batch 1, ...),
    so that a burst of load from elsewhere on a shared machine hits every method alike;
    ``"pass"`` runs each cell's whole pass in turn (no synchronisation between batches).

    The objects alive at the start of the round are frozen out of the garbage collector for the
    round: the collection before every measured call then scans only what the round created,
    instead of the whole heap of loaded models (about half a second each time, more than many
    of the calls it precedes). The next round's full collection frees what became garbage.
    """
    gc.collect()
    gc.freeze()
    try:
        return _run_round(work, device, interleave)
    finally:
        gc.unfreeze()


def _run_round(work: list[tuple[Cell, list[Any]]], device: torch.device, interleave: str) -> list[tuple[float, float | None]]:
    if interleave == "pass":
        results = []
        for c, batches in work:
            c.method.begin()

            def whole(c: Cell = c, batches: list[Any] = batches) -> None:
                c.method.prepare(batches)
                for index, batch in enumerate(batches):
                    c.method.step(index, batch)
                c.method.finish()

            results.append(measured(whole, device))
        return results
    totals = [0.0] * len(work)
    peaks: list[list[float]] = [[] for _ in work]

    def add(slot: int, outcome: tuple[float, float | None]) -> None:
        totals[slot] += outcome[0]
        if outcome[1] is not None:
            peaks[slot].append(outcome[1])

    for slot, (c, batches) in enumerate(work):
        c.method.begin()
        if has_prepare(c.method):
            add(slot, measured(lambda: c.method.prepare(batches), device))
    for index in range(max(len(batches) for _, batches in work)):
        for slot, (c, batches) in enumerate(work):
            if index < len(batches):
                add(slot, measured(lambda: c.method.step(index, batches[index]), device))
    for slot, (c, _) in enumerate(work):
        add(slot, measured(c.method.finish, device))
    return [(total, max(p) if p else None) for total, p in zip(totals, peaks)]

