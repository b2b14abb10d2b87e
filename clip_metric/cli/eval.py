"""``clip-metric eval``: render a prompt library with saved diffusers pipelines and score it.

Each ``PIPELINE`` is a ``DiffusionPipeline.from_pretrained`` directory or hub id, or, with
``--base``, a folder diffusers can load on top of the base pipeline: a component saved with
``save_pretrained`` (a ``unet/`` or ``transformer/`` folder, or a folder holding one, such as an
accelerate ``checkpoint-500``), or LoRA weights (``pytorch_lora_weights.safetensors``). The
checkpoints are evaluated in the order given, each after the first paired with the one before
it (``clip/delta``), as during training. The rendering and scoring loop is
:class:`~clip_metric.evaluation.PromptEvaluator`'s, on one or more devices through Lightning
Fabric; each prompt gets the same noise on any device, so 1 and N devices give the same scores.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import re
import stat
import tempfile
import sys
from pathlib import Path
from typing import Any

from clip_metric.cli._common import CliError, Formatter, launch, non_negative_int, positive_int, resolve_model
from clip_metric.cli._names import shown
from clip_metric.cli.score import PRECISIONS
from clip_metric.utilities.constants import (
    DEFAULT_MIN_PROMPTS,
    DEFAULT_MODEL,
    DEFAULT_ROUND_SIZE,
    SCORES_DIRNAME,
    STAT_NAMES,
)

# Pipeline dtype for each --precision: "auto" keeps float32 on the CPU and takes bfloat16 on CUDA.
_PIPELINE_DTYPES = {"32": "float32", "bf16-mixed": "bfloat16", "bf16-true": "bfloat16", "16-mixed": "float16",
                    "16-true": "float16"}
_LORA_FILES = ("pytorch_lora_weights.safetensors", "pytorch_lora_weights.bin")
# The denoiser a component folder replaces on top of --base.
_COMPONENTS = ("unet", "transformer")
# Larger than any diffusers model renders; a typo there would render for hours.
_MAX_SIZE = 16384
# Pipeline-call arguments the command sets (from its options or for scoring): not in --pipeline-kwargs.
_SET_BY_EVAL = ("prompt", "generator", "output_type", "latents", "num_inference_steps", "guidance_scale", "height",
                "width", "num_images_per_prompt", "negative_prompt")
# Seeds are 31-bit (clip_metric.signature.SEED_RULE); an offset wraps around within them.
_SEED_SPACE = 2**31


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number but got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number but got {text!r}")
    return value


def _guidance(text: str) -> float:
    """A finite guidance scale of at least 0 (NaN or Inf would render NaN images)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number of at least 0 but got {text!r}")
    return value


def _at_most(kind: Any, maximum: int, why: str) -> Any:
    def parse(text: str) -> int:
        value = kind(text)
        if value > maximum:
            raise argparse.ArgumentTypeError(f"expected at most {maximum} ({why}) but got {text}")
        return value

    parse.__name__ = getattr(kind, "__name__", "int")
    return parse


def _size(text: str) -> int:
    value = positive_int(text)
    if value % 8:
        raise argparse.ArgumentTypeError(f"expected a multiple of 8 (the VAE's scale) but got {text}")
    if value > _MAX_SIZE:
        raise argparse.ArgumentTypeError(f"expected at most {_MAX_SIZE} pixels but got {text}")
    return value


def _pipeline_kwargs(text: str) -> dict:
    """A JSON object of further pipeline-call arguments, none of those the command sets itself.

    Non-finite numbers (``NaN``, ``Infinity``, or a literal such as ``1e999`` that overflows to
    infinity) and duplicate keys, at any depth, are refused: each would render, then fail or
    silently drop a value.
    """
    def refuse(constant: str) -> None:  # NaN and Infinity: Python's json takes them, JSON files cannot hold them
        raise ValueError(f"{constant} is not a JSON number")

    def finite(literal: str) -> float:
        value = float(literal)
        if not math.isfinite(value):
            raise ValueError(f"{literal} is not a finite number")
        return value

    def unique(pairs: list[tuple[str, Any]]) -> dict:
        result: dict = {}
        for key, value in pairs:
            if key in result:
                raise ValueError(f"duplicate key {key!r}")
            result[key] = value
        return result

    try:
        value = json.loads(text, parse_constant=refuse, parse_float=finite, object_pairs_hook=unique)
    except (ValueError, RecursionError) as err:
        raise argparse.ArgumentTypeError(f"expected a JSON object but got {text!r} ({err})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object but got {text!r}")
    taken = sorted(set(value) & set(_SET_BY_EVAL))
    if taken:
        raise argparse.ArgumentTypeError(
            f"{', '.join(taken)} {'is' if len(taken) == 1 else 'are'} set by clip-metric eval itself (use its options)"
        )
    return value


def _check_call_arguments(source: str, cls: Any, kwargs: dict) -> None:
    """Every ``--pipeline-kwargs`` name is an explicit parameter of ``cls.__call__``.

    A pipeline whose call also takes ``**kwargs`` ignores names it does not know (a typo such as
    ``guidence_scale`` would render with the default): those are refused too.
    """
    import inspect

    if not kwargs:
        return
    try:
        parameters = inspect.signature(cls.__call__).parameters
    except (TypeError, ValueError):  # no signature to check against: the pipeline's call decides
        return
    named = [n for n, p in parameters.items() if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(kwargs) - set(named))
    if unknown:
        swallowed = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
        raise CliError(
            f"--pipeline-kwargs: {cls.__name__} (of {shown(source)}) takes no argument "
            f"{', '.join(map(repr, unknown))}"
            f"{' (its **kwargs would ignore it silently)' if swallowed else ''}; it takes: "
            f"{', '.join(n for n in named if n not in _SET_BY_EVAL)}"
        )


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "eval", help="render prompts with saved diffusers pipelines and score them", formatter_class=Formatter
    )
    parser.add_argument("pipelines", nargs="+", metavar="PIPELINE",
                        help="pipeline directories or hub ids (with --base: UNet, transformer or LoRA folders)")
    parser.add_argument("--base", help="base pipeline the PIPELINE folders are loaded on top of")
    parser.add_argument("--prompts", default="default",
                        help="prompt library: parti, geneval, default, or a file (.txt, .json, .jsonl, .csv, .tsv)")
    parser.add_argument("--max-prompts", type=positive_int, help="a subset of this many prompts, each category in proportion to its share")
    parser.add_argument("--target-ci", type=_positive_float,
                        help="stop each evaluation once the 95%% interval of clip/delta (the first: clip/mean) is at most this")
    parser.add_argument("--min-prompts", type=positive_int, default=DEFAULT_MIN_PROMPTS,
                        help="with --target-ci: prompts scored before the first check")
    parser.add_argument("--round-size", type=positive_int, default=DEFAULT_ROUND_SIZE,
                        help="with --target-ci: prompts added per round, over all devices")
    parser.add_argument("--model", help=f"CLIP hub id or local directory (e.g. {DEFAULT_MODEL}); default: the embedded demo model")
    parser.add_argument("--output-dir", help="one folder per pipeline with its score file and summary.json (for compare)")
    parser.add_argument("--num-inference-steps", type=_at_most(positive_int, 10000, "denoising steps"), default=20,
                        help="denoising steps per image")
    parser.add_argument("--guidance-scale", type=_guidance, help="classifier-free guidance (default: the pipeline's)")
    parser.add_argument("--height", type=_size, help="image height (default: the pipeline's)")
    parser.add_argument("--width", type=_size, help="image width (default: the pipeline's)")
    parser.add_argument("--negative-prompt", metavar="TEXT", help="the negative prompt of every image (default: none)")
    parser.add_argument("--pipeline-kwargs", type=_pipeline_kwargs, default={}, metavar="JSON",
                        help='further pipeline-call arguments, a JSON object (e.g. \'{"eta": 0.5}\')')
    parser.add_argument("--seed-offset", type=_at_most(non_negative_int, _SEED_SPACE - 1, "seeds are 31-bit"),
                        default=0, help="added to every prompt's seed: other noise for the same prompts")
    parser.add_argument("--batch-size", type=positive_int, default=4, help="prompts per pipeline call on each device")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="CLIP precision, and the pipeline's dtype. auto: CLIP bf16-mixed on CUDA (16-mixed without bf16) and on "
                             "CPUs with AMX or AVX512-BF16, else 32; the pipeline bfloat16 on CUDA (float16 without bf16), "
                             "float32 on the CPU")
    parser.add_argument("--devices", type=positive_int, default=1, help="number of devices (processes)")
    parser.add_argument("--accelerator", default="auto", choices=("auto", "cpu", "cuda", "gpu"), help="where to run")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no loading messages")
    parser.add_argument("--json", action="store_true", help="print one JSON object: every pipeline's statistics")
    parser.set_defaults(run=run)


def _named_folder(path: str) -> Path:
    """The folder a pipeline is named after: a component's parent (``checkpoint-500/unet``)."""
    folder = Path(path.rstrip("/"))
    return folder.parent if folder.name in _COMPONENTS and folder.parent.name else folder


def _checkpoint_step(path: str, index: int) -> int:
    """``checkpoint-500`` (or ``checkpoint-500/unet``) -> 500, else the position in the list, from 0."""
    match = re.search(r"(?:checkpoint|step|steps|iter)[-_=]?(\d+)\s*$", _named_folder(path).name)
    return int(match.group(1)) if match else index


def _output_names(pipelines: list[str]) -> list[str]:
    """One folder name per pipeline: its last path part (a component's parent), made unique."""
    names: list[str] = []
    for pipeline in pipelines:
        raw = _named_folder(pipeline).name or "pipeline"
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-.") or "pipeline"
        name, k = stem, 2
        while name in names:
            name, k = f"{stem}-{k}", k + 1
        names.append(name)
    return names


def _is_hub_id(source: str) -> bool:
    """``owner/name`` with no local file or folder of that name, nor of its first part."""
    parts = source.split("/")
    return (
        len(parts) == 2 and all(parts) and not source.startswith((".", "~"))
        and not Path(source).expanduser().exists() and not Path(parts[0]).expanduser().exists()
    )


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CliError(f"{path}: not readable JSON ({err})") from None
    if not isinstance(data, dict):
        raise CliError(f"{path}: expected a JSON object")
    return data


def _check_pipeline_folder(source: str, role: str) -> dict | None:
    """A local pipeline folder's ``model_index.json`` (None for a hub id); an error naming the fix otherwise."""
    if _is_hub_id(source):
        return None
    path = Path(source).expanduser()
    if not path.exists():
        raise CliError(f"{source}: no such {role} directory (and not a hub id of the form owner/name)")
    if not path.is_dir():
        raise CliError(f"{source}: is a file; name a {role} directory")
    if not (path / "model_index.json").is_file():
        hint = " (a component folder such as unet/ goes on top of a pipeline: --base PIPELINE)" if (
            (path / "config.json").is_file() or any((path / name).is_dir() for name in _COMPONENTS)
        ) else ""
        raise CliError(f"{source}: not a diffusers pipeline directory (no model_index.json){hint}")
    return _read_json(path / "model_index.json")


def _kind_of(path: Path) -> str:
    """What a path that exists but is not a regular file or folder is, for an error message."""
    mode = path.stat().st_mode
    for test, kind in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISDIR, "a directory"), (stat.S_ISREG, "a file")):
        if test(mode):
            return kind
    return "not a regular file"


def _check_inputs(args: argparse.Namespace) -> None:
    """Refuse, before anything is loaded or rendered, what cannot work: every pipeline is checked."""
    indexes = []
    loras = []
    if args.base:
        index = _check_pipeline_folder(args.base, "base pipeline")
        indexes.append((args.base, index))
        for source in args.pipelines:
            kind, _ = _component_or_lora(source, index)
            if kind == "lora":
                loras.append(source)
    else:
        for source in args.pipelines:
            indexes.append((source, _check_pipeline_folder(source, "pipeline")))
    if args.prompts not in ("parti", "geneval", "default"):
        prompts = Path(args.prompts)
        if not prompts.exists():
            raise CliError(f"--prompts {args.prompts}: no such file (or use parti, geneval or default)")
        if not prompts.is_file() or not stat.S_ISREG(prompts.stat().st_mode):
            raise CliError(f"--prompts {args.prompts}: is {_kind_of(prompts)}, not a regular file of prompts")
    try:
        import diffusers
    except ImportError:
        raise CliError("clip-metric eval needs diffusers: pip install 'clip-metric[diffusers]'") from None
    for source, index in indexes:
        _check_pipeline_class(source, index, diffusers)
        _check_steps(source, index, args.num_inference_steps)
        name = None if index is None else index.get("_class_name")
        if isinstance(name, str):  # a hub id or a custom class: checked once loaded
            _check_call_arguments(source, getattr(diffusers, name), args.pipeline_kwargs)
    if loras:
        import importlib.util

        if importlib.util.find_spec("peft") is None:
            raise CliError(
                f"{loras[0]}: LoRA weights need peft, which is not installed: pip install 'clip-metric[lora]' "
                "(or pip install peft)"
            )
    if args.output_dir:
        _check_output_folders(Path(args.output_dir), _output_names(args.pipelines))


def _check_pipeline_class(source: str, index: dict | None, diffusers: Any) -> None:
    """A pipeline's ``_class_name`` that diffusers has (a custom ``[module, class]`` one is diffusers' to load)."""
    name = None if index is None else index.get("_class_name")
    if isinstance(name, str) and not hasattr(diffusers, name):
        raise CliError(
            f"{source}: model_index.json names the pipeline class {name!r}, which diffusers {diffusers.__version__} "
            "does not have (a newer diffusers, or a misspelt _class_name?)"
        )


def _check_steps(source: str, index: dict | None, steps: int) -> None:
    """``--num-inference-steps`` within the scheduler's training timesteps (schedulers refuse more when called)."""
    if index is None:
        return
    config = Path(source).expanduser() / "scheduler" / "scheduler_config.json"
    if not config.is_file():
        return
    timesteps = _read_json(config).get("num_train_timesteps")
    if isinstance(timesteps, int) and steps > timesteps:
        raise CliError(f"--num-inference-steps {steps}: expected at most the {timesteps} timesteps the scheduler of "
                       f"{source} was trained with")


def _check_output_folders(root: Path, names: list[str]) -> None:
    """Create ``root/<name>/clip_scores`` for every pipeline now: one that cannot be is an error before rendering."""
    for folder in (root, *(root / name for name in names), *(root / name / SCORES_DIRNAME for name in names)):
        if folder.exists() and not folder.is_dir():
            raise CliError(f"--output-dir: {folder} is {_kind_of(folder)}; name a folder")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CliError(f"--output-dir: {folder} cannot be created: {err.strerror or err}") from None


def _component_or_lora(source: str, base_index: dict | None) -> tuple[str, Path]:
    """``("lora", folder)`` or ``(component, folder)`` for a folder loaded on top of ``--base``.

    A component's class must be the one the base pipeline holds under that name (from its
    ``model_index.json``; any class for a hub base, where diffusers checks on loading).
    """
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise CliError(f"{source}: {'is a file' if folder.exists() else 'no such folder'}; with --base, name a "
                       f"unet/ or transformer/ folder, a folder holding one, or a folder of {_LORA_FILES[0]}")
    if any((folder / name).is_file() for name in _LORA_FILES):
        return "lora", folder
    candidates = [(name, folder / name) for name in _COMPONENTS if (folder / name / "config.json").is_file()]
    if (folder / "config.json").is_file():
        class_name = str(_read_json(folder / "config.json").get("_class_name", ""))
        if base_index is None and class_name:  # a hub base: diffusers checks the class when it loads
            return ("transformer" if "Transformer" in class_name else "unet"), folder
        for name in _COMPONENTS:
            expected = base_index.get(name) if base_index else None
            if isinstance(expected, list) and expected[-1] == class_name:
                return name, folder
        held = {n: v[-1] for n, v in (base_index or {}).items() if n in _COMPONENTS and isinstance(v, list)}
        raise CliError(
            f"{source}: holds a {class_name or 'component without a class name'}, which is not the base pipeline's "
            f"denoiser ({', '.join(f'{n}: {c}' for n, c in held.items()) or 'unknown'})"
        )
    if candidates:
        return candidates[0]
    raise CliError(
        f"{source}: not a folder diffusers can load on top of --base (expected a unet/ or transformer/ folder, a "
        f"component saved with save_pretrained, or {_LORA_FILES[0]})"
    )


def _pipeline_dtype(precision: str, device: Any) -> Any:
    import torch

    if precision in _PIPELINE_DTYPES:
        return getattr(torch, _PIPELINE_DTYPES[precision])
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _from_pretrained(cls: Any, source: str, dtype: Any) -> Any:
    """``cls.from_pretrained(source, torch_dtype=dtype)``, with load failures named after ``source``."""
    import warnings

    with warnings.catch_warnings():
        # Newer transformers rename the argument; older diffusers know only this name.
        warnings.filterwarnings("ignore", message=".*torch_dtype.* is deprecated", category=FutureWarning)
        try:
            return cls.from_pretrained(source, torch_dtype=dtype)
        except (OSError, ValueError, EnvironmentError, AttributeError, ImportError) as err:
            # AttributeError: a class named in model_index.json that diffusers or transformers lacks.
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CliError(f"{source}: cannot be loaded ({first})") from None


def _load_pipeline(source: str, args: argparse.Namespace, device: Any) -> Any:
    from diffusers import DiffusionPipeline

    dtype = _pipeline_dtype(args.precision, device)
    if not args.base:
        pipe = _from_pretrained(DiffusionPipeline, source, dtype)
    else:
        pipe = _from_pretrained(DiffusionPipeline, args.base, dtype)
        held = {name: ["", type(module).__name__] for name, module in pipe.components.items() if module is not None}
        kind, folder = _component_or_lora(source, held)
        if kind == "lora":
            try:
                pipe.load_lora_weights(str(folder))
            except (OSError, ValueError) as err:
                raise CliError(f"{source}: LoRA weights cannot be loaded ({err})") from None
        else:
            current = getattr(pipe, kind, None)
            if current is None:
                raise CliError(f"{source}: the base pipeline has no {kind} to replace")
            pipe.register_modules(**{kind: _from_pretrained(type(current), str(folder), dtype)})
    _check_call_arguments(args.base or source, type(pipe), args.pipeline_kwargs)
    return pipe.to(device)


class _Render:
    """``generate(prompts, seeds)`` of one loaded pipeline, with its rendering settings as ``rendering``.

    A negative prompt goes to the pipeline as one per prompt (diffusers wants a list beside a list).
    """

    def __init__(self, generator: Any, pipe: Any, args: argparse.Namespace) -> None:
        self.generator, self.pipe = generator, pipe
        self.seed_offset, self.negative_prompt = args.seed_offset, args.negative_prompt
        self.rendering = _rendering(generator, pipe, args)
        self._bound: dict[int, Any] = {}

    def __call__(self, prompts: list, seeds: list) -> Any:
        if self.seed_offset:
            seeds = [(int(seed) + self.seed_offset) % _SEED_SPACE for seed in seeds]
        count = len(prompts)
        if count not in self._bound:
            generator = self.generator
            if self.negative_prompt is not None:
                generator = copy.copy(generator)
                generator.call_kwargs = {**generator.call_kwargs, "negative_prompt": [self.negative_prompt] * count}
            self._bound[count] = generator.bind(self.pipe)
        return self._bound[count](prompts, seeds)


def _rendering(generator: Any, pipe: Any, args: argparse.Namespace) -> dict:
    """The rendering settings of ``pipe`` with ``generator``: the generator's, the classes and dtype, the seed offset."""
    rendering = dict(generator.rendering)
    rendering["negative_prompt"] = args.negative_prompt
    scheduler = getattr(pipe, "scheduler", None)
    rendering.update(
        pipeline=type(pipe).__name__, scheduler=None if scheduler is None else type(scheduler).__name__,
        dtype=str(getattr(pipe, "dtype", "")).replace("torch.", "") or None, seed_offset=args.seed_offset,
    )
    return rendering


def _eval_worker(fabric: Any, args: argparse.Namespace) -> list[dict] | None:
    from tqdm.auto import tqdm

    from clip_metric.distributed import broadcast_object
    from clip_metric.lightning.generation import DiffusersGenerator

    rank, world_size = fabric.global_rank, fabric.world_size
    quiet = args.quiet or rank != 0
    if quiet:
        _quiet_libraries()
    from clip_metric.evaluation import PromptEvaluator

    # Each pipeline's rendering settings reach the header and the signature through render.rendering.
    evaluator = PromptEvaluator(
        model_name_or_path=args.model, prompts=args.prompts, max_prompts=args.max_prompts,
        batch_size=args.batch_size, precision=args.precision, target_ci=args.target_ci, min_prompts=args.min_prompts,
        round_size=args.round_size,
    )
    evaluator.load_encoder(quiet=quiet)
    generator = DiffusersGenerator(
        num_inference_steps=args.num_inference_steps, guidance_scale=args.guidance_scale, height=args.height,
        width=args.width, pipeline_kwargs=args.pipeline_kwargs,
    )
    names = _output_names(args.pipelines)
    summaries = []
    for index, (source, name) in enumerate(zip(args.pipelines, names)):
        pipe = _load_pipeline(source, args, fabric.device)
        step = _checkpoint_step(source, index)
        render = _Render(generator, pipe, args)
        evaluator.scores_dir = Path(args.output_dir, name, SCORES_DIRNAME) if args.output_dir and rank == 0 else None
        bar = tqdm(total=evaluator.shard_size(rank, world_size), desc=f"{name}", unit="prompt", disable=quiet,
                   file=sys.stderr)
        result = evaluator.evaluate(render, step=step, device=fabric.device, rank=rank,
                                    world_size=world_size, advance=bar.update,
                                    header={"stage": "eval", "pipeline": source, "base": args.base,
                                            "rendering": render.rendering})
        bar.close()
        del pipe
        summary = {"pipeline": source, "step": step, "rounds": result.rounds, **{
            f"clip/{k}": v for k, v in result.summary.items()}, "rendering": render.rendering}
        if rank == 0:
            summary["signature"] = str(result.signature)
            summary["score_file"] = None if result.path is None else str(result.path)
            if args.output_dir:
                summary["summary_file"] = str(_write_summary(Path(args.output_dir, name), summary))
        summaries.append(summary)
    summaries = broadcast_object(summaries)  # rank 0's, with the file names
    return summaries if rank == 0 else None


def _write_summary(folder: Path, summary: dict) -> Path:
    """``summary.json`` in ``folder``, or ``summary-1.json``, ...: an earlier run's is never replaced.

    The text is written to a temporary file first and linked under its name once whole, so a
    full disk leaves no empty or partial summary behind.
    """
    text = json.dumps(summary, indent=2) + "\n"
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=".summary-", suffix=".tmp")
    try:
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as err:
            raise CliError(f"{folder / 'summary.json'} cannot be written: {err.strerror or err}") from None
        for attempt in range(1000):
            path = folder / ("summary.json" if attempt == 0 else f"summary-{attempt}.json")
            try:
                os.link(temporary, path)  # fails, rather than replaces, where a summary exists
                return path
            except FileExistsError:
                continue
            except OSError as err:
                raise CliError(f"{path} cannot be written: {err.strerror or err}") from None
        raise CliError(f"too many summaries in {folder}")
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def _quiet_libraries() -> None:
    """Hide diffusers' and transformers' loading bars and notices (other ranks, or --quiet)."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


@contextlib.contextmanager
def _library_notices(quiet: bool) -> Any:
    """With ``quiet``, diffusers' and transformers' notices are off for the whole command (their
    checks before loading import pipeline modules, which log), and their levels restored after."""
    if not quiet:
        yield
        return
    try:
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging
    except ImportError:  # refused by the checks, with the reason
        yield
        return
    levels = [(module, module.get_verbosity()) for module in (diffusers_logging, transformers_logging)]
    for module, _ in levels:
        module.set_verbosity_error()
    try:
        yield
    finally:
        for module, level in levels:
            module.set_verbosity(level)


def run(args: argparse.Namespace) -> int:
    with _library_notices(args.quiet):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    _check_inputs(args)
    args.model = resolve_model(args.model)
    if args.accelerator in ("cuda", "gpu"):
        import torch

        if not torch.cuda.is_available():
            raise CliError(f"--accelerator {args.accelerator}: no CUDA device is available on this machine")
    summaries = launch(_eval_worker, args)
    if summaries is None:  # pragma: no cover - only rank 0 returns
        return 0
    if args.json:
        print(json.dumps({"pipelines": summaries, "prompts": args.prompts, "model": args.model}))
        return 0
    for summary in summaries:
        print(f"{shown(summary['pipeline'])} (step {summary['step']}):")
        for key in STAT_NAMES:
            value = summary[f"clip/{key}"]
            print(f"  clip/{key:<9} {int(value) if key == 'count' else f'{value:.4f}'}")
        if "clip/delta" in summary:
            print(f"  clip/delta     {summary['clip/delta']:+.4f} +/- {summary['clip/delta_ci']:.4f} over "
                  f"{int(summary['clip/delta_count'])} prompts (paired with the pipeline before)")
        if summary.get("score_file"):
            print(f"  scores: {shown(summary['score_file'])}")
    print(f"signature: {summaries[-1]['signature']}")
    if args.output_dir:
        print(f"compare them: clip-metric compare {shown(args.output_dir)}")
    return 0
