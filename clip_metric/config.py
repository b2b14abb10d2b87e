"""The CLIP-evaluation keys of a training ``config.json`` (SimpleTuner's names).

Keys read: ``evaluation_type`` (``"clip"`` enables, ``"none"``/null disables: then no prompt
library is read), ``pretrained_evaluation_model_name_or_path``, ``report_to`` (``"all"``,
``"tensorboard"``, ``"wandb"``, ``"none"``; null, ``""`` and ``[]`` mean none; a list reads like a
comma-separated string; a tracker the package does not
drive, such as ``"comet_ml"`` or ``"mlflow"``, is ignored with a warning, and a comma-separated
list keeps the trackers it drives), ``validation_prompt_library`` (true for the built-in
library, or a path) and ``user_prompt_library`` (a path; combined with
``validation_prompt_library`` when both are set, their ids prefixed ``user:`` and
``validation:``; with neither, the built-in library). Keys may carry SimpleTuner's
command-line ``--`` prefix (``"--report_to"``). Other keys are ignored.

Booleans may be strings, as configs converted from a command line hold them, read as
SimpleTuner reads them: ``"true"``/``"yes"``/``"1"`` and ``"false"``/``"no"``/``"0"``, in any
case (``validation_prompt_library: "false"``), and the integers ``1`` and ``0`` as ``"1"`` and
``"0"``; any other string there is a path.

The same keys build the Lightning callback (:meth:`ClipScoreCallback.from_config
<clip_metric.ClipScoreCallback.from_config>`) and the loop without Lightning
(:meth:`PromptEvaluator.from_config <clip_metric.evaluation.PromptEvaluator.from_config>`, for
accelerate and plain training scripts).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clip_metric.prompts import Prompt, load_prompt_library
from clip_metric.utilities.constants import DEFAULT_MODEL, REPORT_TO
from clip_metric.utilities.readers import parse_json, read_text

KEYS = (
    "evaluation_type",
    "pretrained_evaluation_model_name_or_path",
    "report_to",
    "validation_prompt_library",
    "user_prompt_library",
)


def read_config(config: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """The evaluation keys of a config (path or mapping), ``--`` prefixes removed.

    Raises:
        FileNotFoundError: if the config file does not exist.
        ValueError: for a file that is not a UTF-8 JSON object, or a key given both with and
            without ``--`` with different values.
    """
    where = "the given config"
    if not isinstance(config, Mapping):
        path = Path(config)
        where = str(path)
        config = parse_json(read_text(path, "config"), path)
        if not isinstance(config, Mapping):
            raise ValueError(f"Expected a JSON object in config {path} but got {type(config).__name__}")
    keys: dict[str, Any] = {}
    for raw, value in config.items():
        key = raw[2:] if isinstance(raw, str) and raw.startswith("--") else raw
        if key not in KEYS:
            continue
        if key in keys and keys[key] != value:
            raise ValueError(f"{where}: {key!r} is given twice (with and without '--') with different values")
        keys[key] = value
    return keys


# Trackers accelerate (and so SimpleTuner) can report to that the package writes nothing for.
OTHER_TRACKERS = ("comet_ml", "mlflow", "aim", "clearml", "dvclive", "swanlab", "trackio")

_TRUE_WORDS = ("true", "yes", "1")
_FALSE_WORDS = ("false", "no", "0")


def config_bool(name: str, value: Any) -> bool | None:
    """A boolean key's value as SimpleTuner reads it; None when ``value`` is no boolean at all.

    ``True``/``False``, or a string ``"true"``/``"yes"``/``"1"`` or ``"false"``/``"no"``/``"0"``
    in any case, surrounding spaces ignored.

    Example:
        >>> config_bool("validation_prompt_library", " False"), config_bool("x", "prompts.json")
        (False, None)
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        value = str(value)  # JSON's 1 and 0 read as "1" and "0", as a command line writes them
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    return None


def _report_to(value: Any) -> str:
    """The trackers the package drives, from ``report_to``; others are ignored with a warning."""
    if value is None:
        return "none"
    # A list (as accelerate's own report_to takes) reads like a comma-separated string.
    parts = value if isinstance(value, (list, tuple)) else [value]
    if not all(isinstance(part, str) for part in parts):
        raise ValueError(f"Expected `report_to` to be one of {REPORT_TO}, a list of them, or null but got {value!r}")
    names = [name.strip() for part in parts for name in part.split(",") if name.strip()]
    if not names:  # "" or [] names no tracker
        return "none"
    unknown = [name for name in names if name not in REPORT_TO and name not in OTHER_TRACKERS]
    if unknown:
        raise ValueError(f"Expected `report_to` to be one of {REPORT_TO} (or null) but got {value!r}")
    ignored = [name for name in names if name in OTHER_TRACKERS]
    if ignored:
        warnings.warn(
            f"report_to={value!r}: clip-metric writes nothing for {', '.join(ignored)} (it reports to "
            "tensorboard and wandb); ignored",
            UserWarning,
            stacklevel=3,
        )
    kept = [name for name in names if name in REPORT_TO and name != "none"]
    if not kept:
        return "none"
    if "all" in kept or {"tensorboard", "wandb"} <= set(kept):
        return "all"
    return kept[0]


def _path_or_none(name: str, value: Any) -> str | os.PathLike | None:
    if name == "validation_prompt_library" and config_bool(name, value) is not None:
        value = config_bool(name, value)
    if value is None or value is False:
        return None
    if value is True and name == "validation_prompt_library":
        return "default"
    if isinstance(value, (str, os.PathLike)) and os.fspath(value).strip():
        return value
    raise ValueError(f"Expected `{name}` to be a path{' or true/false' if name.startswith('validation') else ''} but got {value!r}")


def callback_kwargs(config: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """``ClipScoreCallback`` keyword arguments from a config's evaluation keys.

    Raises:
        ValueError: for unknown values of these keys, naming the key and value.
    """
    keys = read_config(config)
    evaluation_type = keys.get("evaluation_type", "clip")
    if evaluation_type not in ("clip", "none", None) or isinstance(evaluation_type, bool):
        raise ValueError(f"Expected `evaluation_type` to be 'clip' or 'none' but got {evaluation_type!r}")
    report_to = _report_to(keys.get("report_to", "all"))
    model = keys.get("pretrained_evaluation_model_name_or_path")
    if model is None:
        model = DEFAULT_MODEL
    elif not isinstance(model, (str, os.PathLike)) or not os.fspath(model).strip():
        raise ValueError(f"Expected `pretrained_evaluation_model_name_or_path` to be a hub id or a path but got {model!r}")
    enabled = evaluation_type == "clip"
    library = _path_or_none("validation_prompt_library", keys.get("validation_prompt_library"))
    user_library = _path_or_none("user_prompt_library", keys.get("user_prompt_library"))
    kwargs: dict[str, Any] = {"model_name_or_path": model, "report_to": report_to, "enabled": enabled}
    if not enabled:
        return kwargs  # evaluation is off: no library is read (a missing file is no error)
    if user_library is not None and library is not None:
        # Both libraries may number their prompts the same way (line-1, ...): ids say which one.
        kwargs["prompts"] = [
            Prompt(f"{source}:{prompt.id}", prompt.text, tags=prompt.tags)
            for source, path in (("user", user_library), ("validation", library))
            for prompt in load_prompt_library(path)
        ]
    elif user_library is not None or library is not None:
        kwargs["prompts"] = user_library if user_library is not None else library
    elif config_bool("validation_prompt_library", keys.get("validation_prompt_library")) is False:
        raise ValueError(
            "validation_prompt_library is false and no user_prompt_library is set: CLIP evaluation needs prompts"
        )
    return kwargs


def evaluator_kwargs(config: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any] | None:
    """``PromptEvaluator`` keyword arguments from a config's evaluation keys; None when evaluation is off.

    ``report_to`` is checked (trackers the package does not drive are ignored with a warning)
    but not returned: without Lightning, the training script's own trackers
    (``accelerator.log``) report. With evaluation off, no prompt library is read.

    Raises:
        ValueError: for unknown values of these keys, naming the key and value.
    """
    kwargs = callback_kwargs(config)
    if not kwargs.pop("enabled"):
        return None
    kwargs.pop("report_to")
    return kwargs
