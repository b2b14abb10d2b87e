"""Where SageAttention (or another replacement of torch's attention) is switched on.

SageAttention is usually switched on in one of three ways:

* globally, by replacing :func:`torch.nn.functional.scaled_dot_product_attention` with a wrapper
  around ``sageattention.sageattn``;
* per diffusers model, with ``model.set_attention_backend("sage")`` (or one of the other Sage
  backend names) or the ``diffusers.attention_dispatch.attention_backend(...)`` context manager;
* through a trainer's ``attention_mechanism`` setting (values starting with ``"sageattention"``).

This module only looks and words what it finds (:func:`find_sage_attention`); what to do about
it is :mod:`clip_metric.attention.policy`'s business. The search is bounded in depth and size and
never raises on odd objects.
"""

from __future__ import annotations

import dis
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

from clip_metric.attention.sdpa import MISSING as _MISSING
from clip_metric.attention.sdpa import SDPA_NAME as _SDPA_NAME
from clip_metric.attention.sdpa import original_sdpa

__all__ = ["AttentionFinding", "find_sage_attention"]


_SDPA_SOURCE = "torch.nn.functional"
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


@dataclass(frozen=True)
class AttentionFinding:
    """One place where SageAttention (or another replacement of torch's attention) is active.

    Args:
        source: where it was found: ``"torch.nn.functional"`` (global SDPA replacement),
            ``"module"`` (a model's attention backend or processors),
            ``"diffusers.attention_dispatch"`` (diffusers' process-wide active backend) or
            ``"config"`` (the ``attention_mechanism`` key).
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
    """Find SageAttention (and other replacements of torch's attention) in this process.

    Looks at:

    * ``torch.nn.functional.scaled_dot_product_attention``: replaced by a function from a
      ``sageattention`` package or by a wrapper that reaches one (through ``__wrapped__``
      chains, ``functools.partial``, bound methods, callable objects, closure cells, default
      arguments, referenced globals and imports inside the wrapper). A replacement that is not
      recognised as SageAttention is reported as an unknown replacement, since CLIP scoring
      restores torch's original either way;
    * diffusers' process-wide active attention backend, when diffusers is already imported
      (it is never imported here);
    * ``module`` and its submodules (duck-typed, e.g. a diffusers model): attention backends in
      ``_attention_backend`` / ``attention_backend`` / ``backend`` attributes of modules and
      their ``processor`` / ``attn_processors``, and processor classes with "Sage" in their name
      or calling SageAttention. Names are matched as words ("sage", "SageAttn",
      "_sage_qk_int8_pv_fp16_cuda"), so e.g. "message" does not match;
    * ``config["attention_mechanism"]`` starting with ``"sageattention"`` (any case); an object
      with an ``attention_mechanism`` attribute is accepted as well.

    Odd objects never make this raise; what cannot be inspected is skipped.

    Args:
        module: a model to inspect, or ``None``.
        config: a trainer configuration, or ``None``.

    Returns:
        The findings, in the order above; empty in a clean process.

    Example:
        >>> [f.detail for f in find_sage_attention(config={"attention_mechanism": "sageattention"})]
        ["attention_mechanism='sageattention' selects SageAttention"]
    """
    findings: list[AttentionFinding] = []
    sdpa_finding = _sdpa_finding()
    if sdpa_finding is not None:
        findings.append(sdpa_finding)
    findings.extend(_diffusers_dispatch_findings())
    if module is not None:
        findings.extend(_module_findings(module))
    if config is not None:
        config_finding = _config_finding(config)
        if config_finding is not None:
            findings.append(config_finding)
    return findings


# --------------------------------------------------------------------------------------------
# Safe introspection helpers


def _safe_getattr(obj: Any, name: str, default: Any = None) -> Any:
    try:
        return getattr(obj, name, default)
    except Exception:  # noqa: BLE001 - odd objects may raise anything from __getattr__
        return default


def _safe_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _is_sage_module_name(name: Any) -> bool:
    if not isinstance(name, str):
        return False
    top = name.split(".", 1)[0]
    return top.startswith(_SAGE_PACKAGES[0]) or top in _SAGE_PACKAGES


def _describe(obj: Any) -> str:
    if isinstance(obj, types.ModuleType):
        return _safe_str(_safe_getattr(obj, "__name__")) or "<module>"
    module = _safe_str(_safe_getattr(obj, "__module__"))
    name = _safe_str(_safe_getattr(obj, "__qualname__")) or _safe_str(_safe_getattr(obj, "__name__"))
    if name is None:
        name = type(obj).__qualname__
    return f"{module}.{name}" if module else name


def _code_objects(code: types.CodeType, depth: int = 0) -> list[types.CodeType]:
    codes = [code]
    if depth < _MAX_DEPTH:
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                codes.extend(_code_objects(const, depth + 1))
    return codes


def _imported_sage_module(codes: list[types.CodeType]) -> str | None:
    """The SageAttention module a function imports in its body, if any."""
    for code in codes:
        try:
            instructions = list(dis.get_instructions(code))
        except Exception:  # noqa: BLE001
            continue
        for instruction in instructions:
            if instruction.opname == "IMPORT_NAME" and _is_sage_module_name(instruction.argval):
                return instruction.argval
    return None


def _identity(obj: Any) -> tuple[str, str]:
    """``(name, module)`` of a callable; for Python functions, where it was really defined.

    ``functools.wraps`` copies ``__name__``/``__module__`` from the wrapped function, so for
    functions the code object and the globals' ``__name__`` are preferred.
    """
    if isinstance(obj, functools.partial):
        return f"functools.partial({_describe(obj.func)})", "functools"
    if isinstance(obj, types.FunctionType):
        code = obj.__code__
        name = _safe_str(getattr(code, "co_qualname", None)) or code.co_name
        module = _safe_str(obj.__globals__.get("__name__")) if isinstance(obj.__globals__, dict) else None
        return name, module or "unknown"
    name = (
        _safe_str(_safe_getattr(obj, "__qualname__"))
        or _safe_str(_safe_getattr(obj, "__name__"))
        or type(obj).__qualname__
    )
    return name, _safe_str(_safe_getattr(obj, "__module__")) or "unknown"


class _SageSearch:
    """Depth- and size-bounded search for a SageAttention object reachable from a callable."""

    def __init__(self) -> None:
        self._seen: set[int] = set()
        self._visits = 0

    def find(self, obj: Any, depth: int = 0) -> str | None:
        """Return a description of the SageAttention object ``obj`` reaches, or ``None``."""
        try:
            return self._find(obj, depth)
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
            name = _safe_getattr(obj, "__name__")
            return name if _is_sage_module_name(name) else None
        if isinstance(obj, (tuple, list, set, frozenset)):
            return self._first(list(obj)[:_MAX_ITEMS], depth + 1)
        if isinstance(obj, dict):
            return self._first(list(obj.values())[:_MAX_ITEMS], depth + 1)
        if not callable(obj):
            return None
        if _is_sage_module_name(_safe_getattr(obj, "__module__")):
            return _describe(obj)
        if isinstance(obj, type):
            return None

        children: list[Any] = []
        wrapped = _safe_getattr(obj, "__wrapped__", _MISSING)
        if wrapped is not _MISSING:
            children.append(wrapped)
        if isinstance(obj, functools.partial):
            children.extend([obj.func, obj.args, obj.keywords])
        if isinstance(obj, types.MethodType):
            children.extend([obj.__func__, obj.__self__])
        if isinstance(obj, types.FunctionType):
            found = self._in_function(obj, depth)
            if found is not None:
                return found
        elif not isinstance(obj, (types.BuiltinFunctionType, types.MethodType, functools.partial)):
            # A callable object: its class's __call__ and what it holds.
            if _is_sage_module_name(_safe_getattr(type(obj), "__module__")):
                return _describe(type(obj))
            call = _safe_getattr(type(obj), "__call__")
            if isinstance(call, types.FunctionType):
                children.append(call)
            attributes = _safe_getattr(obj, "__dict__")
            if isinstance(attributes, dict):
                children.extend(list(attributes.values())[:_MAX_ITEMS])
        return self._first(children, depth + 1)

    def _in_function(self, fn: types.FunctionType, depth: int) -> str | None:
        children: list[Any] = []
        for cell in fn.__closure__ or ():
            try:
                children.append(cell.cell_contents)
            except ValueError:  # empty cell
                continue
        children.extend(fn.__defaults__ or ())
        children.extend((fn.__kwdefaults__ or {}).values())
        codes = _code_objects(fn.__code__)
        imported = _imported_sage_module(codes)
        if imported is not None:
            return imported
        names = set().union(*(code.co_names for code in codes))
        fn_globals = fn.__globals__ if isinstance(fn.__globals__, dict) else {}
        children.extend(fn_globals[name] for name in sorted(names) if name in fn_globals)
        return self._first(children, depth + 1)

    def _first(self, objects: list[Any], depth: int) -> str | None:
        for obj in objects:
            found = self._find(obj, depth)
            if found is not None:
                return found
        return None


def _sage_origin(obj: Any) -> str | None:
    return _SageSearch().find(obj)


# --------------------------------------------------------------------------------------------
# (a) the global torch function


def _sdpa_finding() -> AttentionFinding | None:
    current = getattr(torch.nn.functional, _SDPA_NAME, _MISSING)
    if current is original_sdpa():
        return None
    if current is _MISSING:
        return AttentionFinding(
            _SDPA_SOURCE,
            f"{_SDPA_NAME} is missing (unknown replacement); with attention_policy='restore' CLIP scoring "
            "runs with torch's original",
        )
    name, module = _identity(current)
    origin = _sage_origin(current)
    if origin is not None:
        if _is_sage_module_name(module):
            return AttentionFinding(_SDPA_SOURCE, f"{_SDPA_NAME} is replaced by {origin}")
        if isinstance(current, functools.partial) and name == f"functools.partial({origin})":
            return AttentionFinding(_SDPA_SOURCE, f"{_SDPA_NAME} is replaced by {name}")
        where = "" if isinstance(current, functools.partial) else f" (module {module})"
        return AttentionFinding(_SDPA_SOURCE, f"{_SDPA_NAME} is replaced by {origin} wrapper `{name}`{where}")
    return AttentionFinding(
        _SDPA_SOURCE,
        f"{_SDPA_NAME} is replaced by an unknown replacement `{name}` (module {module}), not recognised "
        "as SageAttention; with attention_policy='restore' CLIP scoring runs with torch's original",
    )


# --------------------------------------------------------------------------------------------
# (b) diffusers backends and processors


_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")


def _names_sage(text: str) -> bool:
    """Whether a backend or class name mentions Sage as a word (``sage``, ``SageAttn``...)."""
    return any(word.lower().startswith("sage") for word in _WORD.findall(text))


def _backend_text(value: Any) -> str | None:
    if isinstance(value, enum.Enum):
        inner = _safe_getattr(value, "value")
        return inner if isinstance(inner, str) else _safe_str(_safe_getattr(value, "name"))
    return value if isinstance(value, str) else None


def _sage_backend(obj: Any) -> tuple[str, str] | None:
    for attr in _BACKEND_ATTRS:
        text = _backend_text(_safe_getattr(obj, attr))
        if text is not None and _names_sage(text):
            return attr, text
    return None


def _processor_class_reason(cls: type) -> str | None:
    cls_name = cls.__name__
    if _names_sage(cls_name):
        return f"processor {cls_name}"
    if _is_sage_module_name(_safe_getattr(cls, "__module__")):
        return f"processor {_describe(cls)}"
    call = _safe_getattr(cls, "__call__")
    origin = _sage_origin(call) if isinstance(call, types.FunctionType) else None
    if origin is not None:
        return f"processor {cls_name} calls {origin}"
    return None


def _processor_reason(processor: Any, class_reasons: dict[type, str | None]) -> str | None:
    if processor is None:
        return None
    cls = type(processor)
    backend = _sage_backend(processor)
    if backend is not None:
        return f"processor {cls.__name__} has attention backend {backend[1]!r}"
    if cls not in class_reasons:
        class_reasons[cls] = _processor_class_reason(cls)
    return class_reasons[cls]


def _named_modules(module: Any) -> list[tuple[str, Any]]:
    named = _safe_getattr(module, "named_modules")
    if callable(named):
        try:
            return list(named())
        except Exception:  # noqa: BLE001
            pass
    return [("", module)]


def _module_findings(module: Any) -> list[AttentionFinding]:
    # Group identical reasons so a model with hundreds of attention layers gives one line each.
    grouped: dict[str, list[str]] = {}
    seen_processors: set[int] = set()
    class_reasons: dict[type, str | None] = {}

    def note(reason: str, where: str) -> None:
        grouped.setdefault(reason, []).append(where)

    for name, sub in _named_modules(module):
        where = name or type(sub).__name__
        try:
            backend = _sage_backend(sub)
            if backend is not None:
                note(f"{type(sub).__name__}.{backend[0]} is {backend[1]!r}", where)
            processor = _safe_getattr(sub, "processor")
            if processor is not None and id(processor) not in seen_processors:
                seen_processors.add(id(processor))
                reason = _processor_reason(processor, class_reasons)
                if reason is not None:
                    note(reason, where)
        except Exception:  # noqa: BLE001
            continue

    processors = _safe_getattr(module, "attn_processors")
    if isinstance(processors, Mapping):
        try:
            items = list(processors.items())
        except Exception:  # noqa: BLE001
            items = []
        for key, processor in items:
            if id(processor) in seen_processors:
                continue
            seen_processors.add(id(processor))
            try:
                reason = _processor_reason(processor, class_reasons)
            except Exception:  # noqa: BLE001
                reason = None
            if reason is not None:
                note(reason, str(key))

    findings = []
    for reason, places in grouped.items():
        where = f"`{places[0]}`" if len(places) == 1 else f"`{places[0]}` and {len(places) - 1} more"
        findings.append(AttentionFinding("module", f"{where}: {reason}"))
    return findings


def _diffusers_dispatch_findings() -> list[AttentionFinding]:
    for module_name in _DIFFUSERS_DISPATCH_MODULES:
        dispatch = sys.modules.get(module_name)
        if dispatch is None:
            continue
        registry = _safe_getattr(dispatch, "_AttentionBackendRegistry")
        text = _backend_text(_safe_getattr(registry, "_active_backend"))
        if text is not None and _names_sage(text):
            return [
                AttentionFinding(
                    "diffusers.attention_dispatch",
                    f"the active diffusers attention backend is {text!r} "
                    "(attention_backend(...) or DIFFUSERS_ATTN_BACKEND)",
                )
            ]
        return []
    return []


# --------------------------------------------------------------------------------------------
# (c) trainer configuration


def _config_finding(config: Any) -> AttentionFinding | None:
    try:
        if isinstance(config, Mapping):
            value = config.get("attention_mechanism")
        else:
            value = _safe_getattr(config, "attention_mechanism")
    except Exception:  # noqa: BLE001
        return None
    text = _backend_text(value)
    if text is not None and text.strip().lower().startswith("sageattention"):
        return AttentionFinding("config", f"attention_mechanism={text!r} selects SageAttention")
    return None
