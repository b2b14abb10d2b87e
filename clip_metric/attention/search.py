"""Where SageAttention (or another replacement of attention) is switched on, in words.

This module only looks and words what it finds (:func:`find_sage_attention`); what to do about
it is :mod:`clip_metric.attention.policy`'s business. The search is bounded in depth and size and
never raises on odd objects.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import re
import sys
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional

from clip_metric.attention.sdpa import MISSING, SDPA_NAME, original_sdpa, sdpa_attention_replacements

__all__ = ["AttentionFinding", "find_sage_attention"]

# Top-level names of the packages that ship SageAttention kernels.
_SAGE_PACKAGES = ("sageattention", "sageattn3", "spas_sage_attn")
# Attributes that hold a diffusers-style attention backend on a module or on its processor.
_BACKEND_ATTRS = ("_attention_backend", "attention_backend", "backend")
# Where diffusers keeps the backend chosen by ``attention_backend(...)`` / DIFFUSERS_ATTN_BACKEND.
_DIFFUSERS_DISPATCH_MODULES = ("diffusers.models.attention_dispatch", "diffusers.attention_dispatch")
# Bounds of the search through a replacement's wrappers, closures and globals.
_MAX_DEPTH = 8
_MAX_VISITS = 2000
_MAX_ITEMS = 64
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
_RESTORE_NOTE = "with attention_policy='restore' CLIP scoring runs with the original"


@dataclass(frozen=True)
class AttentionFinding:
    """One place where SageAttention (or another replacement of attention) is active.

    Args:
        source: where it was found: ``"torch.nn.functional"`` (global SDPA replacement),
            ``"transformers.attention_functions"`` (transformers' ``"sdpa"`` attention function
            replaced), ``"diffusers.attention_dispatch"`` (diffusers' process-wide active
            backend), ``"module"`` (a model's attention backend or processors) or ``"config"``
            (the ``attention_mechanism`` key).
        detail: a human-readable description naming the object and what it is.

    Example:
        >>> AttentionFinding("config", "attention_mechanism='sageattention'")
        AttentionFinding(source='config', detail="attention_mechanism='sageattention'")
    """

    source: str
    detail: str


def find_sage_attention(
    module: torch.nn.Module | None = None, config: Mapping[str, Any] | None = None
) -> list[AttentionFinding]:
    """Find SageAttention (and other replacements of attention) in this process.

    Looks at, in this order:

    * ``torch.nn.functional.scaled_dot_product_attention`` and, once transformers is imported
      (it is never imported here), transformers' ``"sdpa"`` attention function
      (``AttentionInterface.register("sdpa", ...)`` or ``ALL_ATTENTION_FUNCTIONS["sdpa"] = ...``).
      A replacement that is, or reaches, a ``sageattention`` object (through ``__wrapped__``,
      ``functools.partial``, bound methods, callable objects, closures, defaults, globals or
      imports inside the wrapper) is named as such; any other is an unknown replacement;
    * diffusers' process-wide active attention backend, when diffusers is already imported;
    * ``module`` and its submodules (duck-typed, e.g. a diffusers model): Sage attention
      backends in ``_attention_backend`` / ``attention_backend`` / ``backend`` of modules and
      their processors, and processor classes named after Sage or calling it. Names are
      matched as words ("sage", "SageAttn", "_sage_qk_int8_pv_fp16_cuda"; not "message");
    * ``config["attention_mechanism"]`` (or such an attribute) starting with ``"sageattention"``.

    Args:
        module: a model to inspect, or ``None``.
        config: a trainer configuration, or ``None``.

    Returns:
        The findings; empty in a clean process.

    Example:
        >>> [f.detail for f in find_sage_attention(config={"attention_mechanism": "sageattention"})]
        ["attention_mechanism='sageattention' selects SageAttention"]
    """
    findings = []
    current = getattr(torch.nn.functional, SDPA_NAME, MISSING)
    if current is not original_sdpa():
        findings.append(AttentionFinding("torch.nn.functional", _replaced(SDPA_NAME, current)))
    for where, replacement in sdpa_attention_replacements():
        findings.append(AttentionFinding("transformers.attention_functions", _replaced(where, replacement)))
    findings.extend(_diffusers_dispatch_findings())
    if module is not None:
        findings.extend(_module_findings(module))
    if config is not None:
        findings.extend(_config_findings(config))
    return findings


def _replaced(what: str, replacement: Any) -> str:
    if replacement is MISSING:
        return f"{what} is missing (unknown replacement); {_RESTORE_NOTE}"
    module, name = _identity(replacement)
    origin = _SageSearch().find(replacement)
    if origin is None:
        return (
            f"{what} is replaced by an unknown replacement `{name}` (module {module}), not recognised as "
            f"SageAttention; {_RESTORE_NOTE}"
        )
    if _is_sage_name(module):
        return f"{what} is replaced by {origin}"
    return f"{what} is replaced by {origin} wrapper `{name}` (module {module})"


# --------------------------------------------------------------------------------------------
# Safe introspection


def _safe_getattr(obj: Any, name: str, default: Any = None) -> Any:
    try:
        return getattr(obj, name, default)
    except Exception:  # noqa: BLE001 - odd objects may raise anything from __getattr__
        return default


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _is_sage_name(name: Any) -> bool:
    """Whether a module name belongs to a SageAttention package."""
    if not isinstance(name, str):
        return False
    top = name.split(".", 1)[0]
    return top.startswith(_SAGE_PACKAGES[0]) or top in _SAGE_PACKAGES


def _names_sage(text: str) -> bool:
    """Whether a backend or class name mentions Sage as a word (``sage``, ``SageAttn``...)."""
    return any(word.lower().startswith("sage") for word in _WORD.findall(text))


def _name(obj: Any) -> str:
    return _str(_safe_getattr(obj, "__qualname__")) or _str(_safe_getattr(obj, "__name__")) or type(obj).__qualname__


def _describe(obj: Any) -> str:
    """``module.name`` as the object states it (``functools.wraps`` copies both from the kernel)."""
    if isinstance(obj, types.ModuleType):
        return _str(_safe_getattr(obj, "__name__")) or "<module>"
    module = _str(_safe_getattr(obj, "__module__"))
    return f"{module}.{_name(obj)}" if module else _name(obj)


def _identity(obj: Any) -> tuple[str, str]:
    """``(module, name)`` of a replacement; for functions, where they were really defined."""
    if isinstance(obj, functools.partial):
        return "functools", f"functools.partial({_describe(obj.func)})"
    if isinstance(obj, types.FunctionType):
        code = obj.__code__
        module = obj.__globals__.get("__name__") if isinstance(obj.__globals__, dict) else None
        return _str(module) or "unknown", _str(getattr(code, "co_qualname", None)) or code.co_name
    return _str(_safe_getattr(obj, "__module__")) or "unknown", _name(obj)


def _code_names(code: types.CodeType, depth: int = 0) -> set[str]:
    """Global, attribute and imported names a code object and its nested functions use."""
    names = set(code.co_names)
    if depth < _MAX_DEPTH:
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                names |= _code_names(const, depth + 1)
    return names


class _SageSearch:
    """Depth- and size-bounded search for a SageAttention object reachable from a callable."""

    def __init__(self) -> None:
        self._seen: set[int] = set()
        self._visits = 0

    def find(self, obj: Any) -> str | None:
        """A description of the SageAttention object ``obj`` reaches, or ``None``."""
        try:
            return self._find(obj, 0)
        except Exception:  # noqa: BLE001 - introspection must never break scoring
            return None

    def _find(self, obj: Any, depth: int) -> str | None:
        if depth > _MAX_DEPTH or self._visits >= _MAX_VISITS or id(obj) in self._seen:
            return None
        if obj is None or isinstance(obj, (str, bytes, int, float, complex, torch.Tensor)):
            return None
        self._seen.add(id(obj))
        self._visits += 1
        if isinstance(obj, types.ModuleType):
            return _describe(obj) if _is_sage_name(_safe_getattr(obj, "__name__")) else None
        if isinstance(obj, (tuple, list, set, frozenset, dict)):
            return self._first(list(obj.values() if isinstance(obj, dict) else obj), depth)
        if not callable(obj):
            return None
        for owner in (obj, type(obj)):
            if _is_sage_name(_safe_getattr(owner, "__module__")):
                return _describe(owner)
        if isinstance(obj, type):
            return None

        children: list[Any] = [_safe_getattr(obj, "__wrapped__")]
        if isinstance(obj, functools.partial):
            children += [obj.func, obj.args, obj.keywords]
        elif isinstance(obj, types.MethodType):
            children += [obj.__func__, obj.__self__]
        elif isinstance(obj, types.FunctionType):
            names = _code_names(obj.__code__)
            imported = sorted(name for name in names if _is_sage_name(name))
            if imported:
                return imported[0]
            for cell in obj.__closure__ or ():
                with contextlib.suppress(ValueError):  # an empty cell
                    children.append(cell.cell_contents)
            children += [obj.__defaults__, obj.__kwdefaults__]
            globals_ = obj.__globals__ if isinstance(obj.__globals__, dict) else {}
            children += [globals_[name] for name in sorted(names) if name in globals_]
        elif not isinstance(obj, types.BuiltinFunctionType):
            # A callable object: its class's __call__ and what it holds.
            children += [_safe_getattr(type(obj), "__call__"), _safe_getattr(obj, "__dict__")]
        return self._first(children, depth)

    def _first(self, objects: list[Any], depth: int) -> str | None:
        for obj in objects[:_MAX_ITEMS]:
            found = self._find(obj, depth + 1)
            if found is not None:
                return found
        return None


# --------------------------------------------------------------------------------------------
# diffusers backends and processors, trainer configuration


def _backend_text(value: Any) -> str | None:
    if isinstance(value, enum.Enum):
        return _str(_safe_getattr(value, "value")) or _str(_safe_getattr(value, "name"))
    return _str(value)


def _sage_reason(obj: Any, is_processor: bool, class_reasons: dict[type, str | None]) -> str | None:
    """Why a module or processor counts as SageAttention, or ``None``."""
    for attr in _BACKEND_ATTRS:
        text = _backend_text(_safe_getattr(obj, attr))
        if text is not None and _names_sage(text):
            return f"{type(obj).__name__}.{attr} is {text!r}"
    if not is_processor:
        return None
    cls = type(obj)
    if cls not in class_reasons:
        reason = None
        if _names_sage(cls.__name__) or _is_sage_name(_safe_getattr(cls, "__module__")):
            reason = f"processor {_describe(cls)}"
        else:
            call = _safe_getattr(cls, "__call__")
            origin = _SageSearch().find(call) if isinstance(call, types.FunctionType) else None
            reason = f"processor {cls.__name__} calls {origin}" if origin else None
        class_reasons[cls] = reason
    return class_reasons[cls]


def _module_findings(module: Any) -> list[AttentionFinding]:
    candidates: list[tuple[str, Any, bool]] = []
    try:
        named = list(module.named_modules())
    except Exception:  # noqa: BLE001
        named = [("", module)]
    for name, sub in named:
        where = name or type(sub).__name__
        candidates += [(where, sub, False), (where, _safe_getattr(sub, "processor"), True)]
    processors = _safe_getattr(module, "attn_processors")
    if isinstance(processors, Mapping):
        try:
            candidates += [(str(key), processor, True) for key, processor in processors.items()]
        except Exception:  # noqa: BLE001
            pass

    # One finding per reason: hundreds of attention layers with the same backend give one line.
    grouped: dict[str, list[str]] = {}
    seen: set[int] = set()
    class_reasons: dict[type, str | None] = {}
    for where, obj, is_processor in candidates:
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        try:
            reason = _sage_reason(obj, is_processor, class_reasons)
        except Exception:  # noqa: BLE001
            reason = None
        if reason is not None:
            grouped.setdefault(reason, []).append(where)
    findings = []
    for reason, places in grouped.items():
        where = f"`{places[0]}`" if len(places) == 1 else f"`{places[0]}` and {len(places) - 1} more"
        findings.append(AttentionFinding("module", f"{where}: {reason}"))
    return findings


def _diffusers_dispatch_findings() -> list[AttentionFinding]:
    for module_name in _DIFFUSERS_DISPATCH_MODULES:
        dispatch = sys.modules.get(module_name)
        if dispatch is not None:
            registry = _safe_getattr(dispatch, "_AttentionBackendRegistry")
            text = _backend_text(_safe_getattr(registry, "_active_backend"))
            if text is None or not _names_sage(text):
                return []
            how = "attention_backend(...) or DIFFUSERS_ATTN_BACKEND"
            detail = f"the active diffusers attention backend is {text!r} ({how})"
            return [AttentionFinding("diffusers.attention_dispatch", detail)]
    return []


def _config_findings(config: Any) -> list[AttentionFinding]:
    try:
        value = config.get("attention_mechanism") if isinstance(config, Mapping) else config.attention_mechanism
    except Exception:  # noqa: BLE001 - no such key or attribute, or an odd object
        return []
    text = _backend_text(value)
    if text is None or not text.strip().lower().startswith("sageattention"):
        return []
    return [AttentionFinding("config", f"attention_mechanism={text!r} selects SageAttention")]
