"""Numeric precision of the CLIP forward pass.

Names follow Lightning's (``"32"``, ``"bf16-mixed"``, ``"16-mixed"``, ``"bf16-true"``,
``"16-true"``), plus ``"auto"``: bf16 autocast where the hardware runs it fast (CUDA GPUs with
bf16, CPUs with AMX or AVX512-BF16), fp16 autocast on older CUDA GPUs, fp32 elsewhere. Mixed
modes run the matrix products of both towers in half precision; layer norms, softmax, the
residual stream and the embeddings' normalisation and comparison stay fp32.

Under a mixed precision the linear and convolution weights are stored in half precision once,
instead of being cast by autocast at every call (autocast only caches casts of weights that
require grad, which a frozen encoder's do not). The numbers are those of autocast: it rounds the
same weights the same way. Moving such an encoder to a device whose ``"auto"`` is fp32 upcasts
those weights again; they keep their half-precision rounding (use ``precision="32"`` for
bit-exact fp32).

The encoder runs in its own precision whatever the caller has open: a training script's
``torch.autocast`` (diffusers' validation, accelerate's ``mixed_precision``, Lightning's mixed
plugins) is switched off around the CLIP forward and the precision's own autocast entered
(:func:`own_precision`), so ``precision="32"`` is fp32 and what the signature records.

What the default costs in accuracy is measured, not assumed: ``benchmarks/bench_throughput.py``
reports the largest per-sample difference from fp32 on the ViT-B/32 and ViT-L/14-336
architectures, and the tests check the embedded trained model; both stay within 2e-3 of fp32.
"""

from __future__ import annotations

import contextlib
import functools
from typing import ContextManager, Iterator

import torch

PRECISIONS = ("auto", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true")
_ALIASES = {"32-true": "32", "fp32": "32", 32: "32", "bf16": "bf16-mixed", "16": "16-mixed", 16: "16-mixed"}


def check_precision(precision: str | int) -> str:
    """Validate and canonicalise a precision name.

    Raises:
        ValueError: if the name is unknown.

    Example:
        >>> check_precision("32-true")
        '32'
    """
    # Only strings and ints name a precision: 32.0 == 32 and True == 1 must not pass as aliases,
    # and an unhashable value is refused like any other unknown name.
    valid_type = isinstance(precision, str) or (isinstance(precision, int) and not isinstance(precision, bool))
    canonical = _ALIASES.get(precision, precision) if valid_type else None
    if canonical not in PRECISIONS:
        raise ValueError(f"Expected `precision` to be one of {PRECISIONS} but got {precision!r}")
    return canonical


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has native bf16 matrix instructions (AMX or AVX512-BF16)."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_precision(precision: str, device: torch.device) -> str:
    """Turn ``"auto"`` into a concrete precision for ``device``; other names pass through."""
    precision = check_precision(precision)
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    if device.type == "cpu" and cpu_has_fast_bf16():
        return "bf16-mixed"
    return "32"


def weight_dtype(precision: str) -> torch.dtype:
    """The dtype the model's weights are kept in under a resolved precision."""
    return {"bf16-true": torch.bfloat16, "16-true": torch.float16}.get(precision, torch.float32)


HALF_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def cast_matmul_weights(module: torch.nn.Module, dtype: torch.dtype) -> int:
    """Store the weights of ``module``'s linear and convolution layers in ``dtype``.

    Returns:
        The number of layers cast.
    """
    count = 0
    for layer in module.modules():
        if isinstance(layer, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)):
            layer.to(dtype)
            count += 1
    return count


def autocast_context(precision: str, device: torch.device) -> ContextManager:
    """An autocast context for mixed precisions, a null context otherwise."""
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "16-mixed":
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


@functools.lru_cache(maxsize=None)
def _autocast_device_types() -> tuple[str, ...]:
    """The device types torch can autocast on here (``"cpu"``, ``"cuda"``, ..., a private backend)."""
    from torch.amp.autocast_mode import is_autocast_available

    names = ("cpu", "cuda", "xpu", "mps", "hpu", "mtia", "maia", "xla", "ipu", torch._C._get_privateuse1_backend_name())
    return tuple(name for name in dict.fromkeys(names) if is_autocast_available(name))


def open_autocasts() -> dict[str, torch.dtype]:
    """The autocasts enabled in the calling code, as ``{device_type: dtype}`` (empty when none)."""
    return {
        name: torch.get_autocast_dtype(name) for name in _autocast_device_types() if torch.is_autocast_enabled(name)
    }


@contextlib.contextmanager
def own_precision(precision: str, device: torch.device) -> Iterator[None]:
    """Run the block in ``precision`` alone: every autocast the caller has open is switched off
    (on every device type, not only ``device``'s), then ``precision``'s own autocast entered.

    A caller's ``torch.autocast(dtype=torch.bfloat16)`` would otherwise run a ``"32"`` encoder's
    matrix products in bf16 (or a ``"16-mixed"`` one's in bf16), while the score signature says
    otherwise.

    Example:
        >>> with torch.autocast("cpu", dtype=torch.bfloat16), own_precision("32", torch.device("cpu")):
        ...     torch.is_autocast_enabled("cpu")
        False
    """
    with contextlib.ExitStack() as stack:
        for name in open_autocasts():
            stack.enter_context(torch.autocast(name, enabled=False))
        if precision == "32" and device.type == "cuda":
            stack.enter_context(_no_tf32())
        stack.enter_context(autocast_context(precision, device))
        yield


@contextlib.contextmanager
def _no_tf32() -> Iterator[None]:
    """True fp32 matrix products and convolutions for the block, the caller's TF32 flags given back.

    Training scripts turn TF32 on for the whole process (diffusers' ``--allow_tf32``); a ``"32"``
    encoder would otherwise run its products with 10-bit mantissas while the signature says 32.
    """
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
