"""Where and on what a run was taken: hardware, package versions, the measured sources, the load."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import importlib.metadata
import os
import platform
import sys
import warnings
from pathlib import Path
from typing import Any

import torch


def package_hash() -> str:
    """A short hash of the benchmarked package's Python sources (which revision was measured)."""
    import clip_metric

    root = Path(clip_metric.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _version(distribution: str) -> str | None:
    # From the installed metadata: no import (lightning alone takes seconds to import).
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return model


def environment(device: torch.device) -> dict[str, Any]:
    """The record every report starts with; add ``load_average_at_end`` when the run is done."""
    cpu = cpu_model()
    env = {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_amx": bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()),
        "cpu_avx512_bf16": bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "torchmetrics": _version("torchmetrics"),
        "lightning": _version("lightning"),
        "clip_metric": _version("clip-metric"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python"] + sys.argv),
        "load_average_at_start": load_average(),
        "package_sources_sha256": package_hash(),
    }
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
        env["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
        env["tf32_cudnn"] = torch.backends.cudnn.allow_tf32
    return env


def quiet_transformers() -> None:
    """No transformers warnings, progress bars or FutureWarnings in a benchmark's output."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
