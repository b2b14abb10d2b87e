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
import json
import re
import sys
from pathlib import Path
from typing import Any

from clip_metric.cli._common import CliError, Formatter, launch, positive_int, resolve_model
from clip_metric.cli.score import PRECISIONS
from clip_metric.utilities.constants import DEFAULT_MODEL, SCORES_DIRNAME, STAT_NAMES

# Pipeline dtype for each --precision: "auto" keeps float32 on the CPU and takes bfloat16 on CUDA.
_PIPELINE_DTYPES = {"32": "float32", "bf16-mixed": "bfloat16", "bf16-true": "bfloat16", "16-mixed": "float16",
                    "16-true": "float16"}
_LORA_FILES = ("pytorch_lora_weights.safetensors", "pytorch_lora_weights.bin")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number but got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number but got {text!r}")
    return value


def _size(text: str) -> int:
    value = positive_int(text)
    if value % 8:
        raise argparse.ArgumentTypeError(f"expected a multiple of 8 (the VAE's scale) but got {text}")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "eval", help="render prompts with saved diffusers pipelines and score them", formatter_class=Formatter
    )
    parser.add_argument("pipelines", nargs="+", metavar="PIPELINE",
                        help="pipeline directories or hub ids (with --base: UNet, transformer or LoRA folders)")
    parser.add_argument("--base", help="base pipeline the PIPELINE folders are loaded on top of")
    parser.add_argument("--prompts", default="default",
                        help="prompt library: parti, geneval, default, or a file (.txt, .json, .jsonl, .csv, .tsv)")
    parser.add_argument("--max-prompts", type=positive_int, help="a balanced subset of this many prompts")
    parser.add_argument("--target-ci", type=_positive_float,
                        help="stop each evaluation once the 95%% interval of clip/delta (the first: clip/mean) is at most this")
    parser.add_argument("--model", help=f"CLIP hub id or local directory (e.g. {DEFAULT_MODEL}); default: the embedded demo model")
    parser.add_argument("--output-dir", help="one folder per pipeline with its score file and summary.json (for compare)")
    parser.add_argument("--num-inference-steps", type=positive_int, default=20, help="denoising steps per image")
    parser.add_argument("--guidance-scale", type=float, help="classifier-free guidance (default: the pipeline's)")
    parser.add_argument("--height", type=_size, help="image height (default: the pipeline's)")
    parser.add_argument("--width", type=_size, help="image width (default: the pipeline's)")
    parser.add_argument("--batch-size", type=positive_int, default=4, help="prompts per pipeline call on each device")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="CLIP precision, and the pipeline's dtype (auto: float32 on the CPU, bfloat16 on CUDA)")
    parser.add_argument("--devices", type=positive_int, default=1, help="number of devices (processes)")
    parser.add_argument("--accelerator", default="auto", choices=("auto", "cpu", "cuda", "gpu"), help="where to run")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no loading messages")
    parser.add_argument("--json", action="store_true", help="print one JSON object: every pipeline's statistics")
    parser.set_defaults(run=run)


def _checkpoint_step(path: str, index: int) -> int:
    """``checkpoint-500`` -> 500 (the training step in the name), else the position in the list."""
    match = re.search(r"(?:checkpoint|step|steps|iter)[-_=]?(\d+)\s*$", Path(path.rstrip("/")).name)
    return int(match.group(1)) if match else index


def _output_names(pipelines: list[str]) -> list[str]:
    """One folder name per pipeline: its last path part, made unique."""
    names: list[str] = []
    for pipeline in pipelines:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(pipeline.rstrip("/")).name or "pipeline").strip("-.") or "pipeline"
        name, k = stem, 2
        while name in names:
            name, k = f"{stem}-{k}", k + 1
        names.append(name)
    return names


def _check_inputs(args: argparse.Namespace) -> None:
    """Refuse, before any process starts, what cannot work: missing folders, an output over a file."""
    for source in ([args.base] if args.base else []) + list(args.pipelines):
        path = Path(source).expanduser()
        parts = source.split("/")
        hub_id = len(parts) == 2 and all(parts) and not source.startswith((".", "~")) and not path.exists()
        if not hub_id and not path.is_dir():
            raise CliError(f"{source}: no such pipeline directory (and not a hub id of the form owner/name)")
    if args.base:
        for source in args.pipelines:
            _component_or_lora(Path(source).expanduser())
    if args.output_dir and Path(args.output_dir).exists() and not Path(args.output_dir).is_dir():
        raise CliError(f"--output-dir {args.output_dir} is a file; name a folder")
    if args.prompts not in ("parti", "geneval", "default") and not Path(args.prompts).is_file():
        raise CliError(f"--prompts {args.prompts}: no such file (or use parti, geneval or default)")


def _component_or_lora(folder: Path) -> tuple[str, Path]:
    """``("lora", folder)`` or ``(component name, component folder)`` for a folder on top of ``--base``."""
    if any((folder / name).is_file() for name in _LORA_FILES):
        return "lora", folder
    for name in ("unet", "transformer"):
        if (folder / name / "config.json").is_file():
            return name, folder / name
    config = folder / "config.json"
    if config.is_file():
        try:
            class_name = str(json.loads(config.read_text(encoding="utf-8")).get("_class_name", ""))
        except (OSError, ValueError, AttributeError):
            class_name = ""
        if "Transformer" in class_name:
            return "transformer", folder
        if class_name:
            return "unet", folder
    raise CliError(
        f"{folder}: not a folder diffusers can load on top of --base (expected a unet/ or transformer/ folder, a "
        f"component saved with save_pretrained, or {_LORA_FILES[0]})"
    )


def _pipeline_dtype(precision: str, device: Any) -> Any:
    import torch

    if precision in _PIPELINE_DTYPES:
        return getattr(torch, _PIPELINE_DTYPES[precision])
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _load_pipeline(source: str, args: argparse.Namespace, device: Any) -> Any:
    from diffusers import DiffusionPipeline

    dtype = _pipeline_dtype(args.precision, device)
    if not args.base:
        pipe = DiffusionPipeline.from_pretrained(source, torch_dtype=dtype)
    else:
        pipe = DiffusionPipeline.from_pretrained(args.base, torch_dtype=dtype)
        kind, folder = _component_or_lora(Path(source).expanduser())
        if kind == "lora":
            pipe.load_lora_weights(str(folder))
        else:
            current = getattr(pipe, kind, None)
            if current is None:
                raise CliError(f"{source}: the base pipeline has no {kind} to replace")
            pipe.register_modules(**{kind: type(current).from_pretrained(str(folder), torch_dtype=dtype)})
    return pipe.to(device)


def _eval_worker(fabric: Any, args: argparse.Namespace) -> list[dict] | None:
    from tqdm.auto import tqdm

    from clip_metric.distributed import broadcast_object
    from clip_metric.evaluation import PromptEvaluator
    from clip_metric.lightning.generation import DiffusersGenerator

    rank, world_size = fabric.global_rank, fabric.world_size
    quiet = args.quiet or rank != 0
    if quiet:
        _quiet_libraries()
    evaluator = PromptEvaluator(
        args.model, prompts=args.prompts, max_prompts=args.max_prompts, batch_size=args.batch_size,
        precision=args.precision, target_ci=args.target_ci,
    )
    evaluator.load_encoder(quiet=quiet)
    generator = DiffusersGenerator(
        num_inference_steps=args.num_inference_steps, guidance_scale=args.guidance_scale, height=args.height,
        width=args.width,
    )
    names = _output_names(args.pipelines)
    summaries = []
    for index, (source, name) in enumerate(zip(args.pipelines, names)):
        pipe = _load_pipeline(source, args, fabric.device)
        step = _checkpoint_step(source, index)
        evaluator.scores_dir = Path(args.output_dir, name, SCORES_DIRNAME) if args.output_dir and rank == 0 else None
        bar = tqdm(total=evaluator.shard_size(rank, world_size), desc=f"{name}", unit="prompt", disable=quiet,
                   file=sys.stderr)
        result = evaluator.evaluate(generator.bind(pipe), step=step, device=fabric.device, rank=rank,
                                    world_size=world_size, advance=bar.update,
                                    header={"stage": "eval", "pipeline": source, "base": args.base})
        bar.close()
        del pipe
        summary = {"pipeline": source, "step": step, "rounds": result.rounds, **{
            f"clip/{k}": v for k, v in result.summary.items()}}
        if rank == 0:
            summary["signature"] = str(result.signature)
            summary["score_file"] = None if result.path is None else str(result.path)
            if args.output_dir:
                out = Path(args.output_dir, name, "summary.json")
                out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
                summary["summary_file"] = str(out)
        summaries.append(summary)
    summaries = broadcast_object(summaries)  # rank 0's, with the file names
    return summaries if rank == 0 else None


def _quiet_libraries() -> None:
    """Hide diffusers' and transformers' loading bars and notices (other ranks, or --quiet)."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def run(args: argparse.Namespace) -> int:
    _check_inputs(args)
    try:
        import diffusers  # noqa: F401
    except ImportError:
        raise CliError("clip-metric eval needs diffusers: pip install 'clip-metric[diffusers]'") from None
    if args.output_dir:
        try:
            Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CliError(f"--output-dir {args.output_dir} cannot be created: {err.strerror or err}") from None
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
        print(f"{summary['pipeline']} (step {summary['step']}):")
        for key in STAT_NAMES:
            value = summary[f"clip/{key}"]
            print(f"  clip/{key:<9} {int(value) if key == 'count' else f'{value:.4f}'}")
        if "clip/delta" in summary:
            print(f"  clip/delta     {summary['clip/delta']:+.4f} +/- {summary['clip/delta_ci']:.4f} over "
                  f"{int(summary['clip/delta_count'])} prompts (paired with the pipeline before)")
        if summary.get("score_file"):
            print(f"  scores: {summary['score_file']}")
    print(f"signature: {summaries[-1]['signature']}")
    if args.output_dir:
        print(f"compare them: clip-metric compare {args.output_dir}")
    return 0
