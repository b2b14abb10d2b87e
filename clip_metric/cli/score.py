"""``clip-metric score``: score image files against their captions."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
import tempfile
from pathlib import Path
from typing import Any

from clip_metric.cli._common import (
    CliError,
    Formatter,
    launch,
    names,
    non_negative_int,
    positive_int,
    resolve_model,
    stderr,
)
from clip_metric.prompts import bundled_library_name
from clip_metric.utilities.constants import DEFAULT_MODEL, STAT_NAMES

PRECISIONS = ("auto", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true")
# Decoding a large PNG costs more than scoring it with CLIP on a GPU: decode beside the scoring.
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("score", help="score images against their captions", formatter_class=Formatter)
    parser.add_argument("images", nargs="+", help="image files, folders or glob patterns (PNG, JPEG, WebP)")
    parser.add_argument(
        "--prompts", help="captions: .jsonl/.json/.csv/.tsv keyed by file_name, .txt one per image, or a bundled "
        "library (parti, geneval, default) for images named after its prompt ids "
        "(default: metadata.jsonl or x.txt beside x.png)"
    )
    parser.add_argument("--model", help=f"hub id or local directory (e.g. {DEFAULT_MODEL}); default: the embedded demo model")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="images per CLIP forward pass")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help="CLIP precision")
    parser.add_argument("--output", help="write per-image scores (.jsonl score file, or .csv)")
    parser.add_argument("--workers", type=non_negative_int, default=DEFAULT_WORKERS,
                        help="processes decoding images beside each scoring process (0: decode in it)")
    parser.add_argument("--devices", type=positive_int, default=1, help="number of devices (processes) to score on")
    parser.add_argument("--accelerator", default="auto", choices=("auto", "cpu", "cuda", "gpu", "mps"), help="where to score")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no loading messages")
    parser.add_argument("--json", action="store_true", help="print one JSON object (statistics, interval, signature)")
    parser.set_defaults(run=run)


def check_output(output: str, images: list[Path]) -> Path:
    """Refuse, before any scoring, an ``--output`` that would overwrite an input or cannot be written."""
    path = Path(output)
    if path.is_dir():
        raise CliError(f"--output {output} is a directory; name a .jsonl or .csv file")
    target = path.resolve()
    inputs = {image.resolve() for image in images}
    if target in inputs:
        raise CliError(f"--output {output} is one of the input images; it would be overwritten")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".clip-metric-", suffix=".probe"):
            pass
    except OSError as err:
        raise CliError(f"--output {output} cannot be written: {err.strerror or err}") from None
    return path


def _load_image(path: Path) -> Any:
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return image.copy()


class _DecodedImages:
    """A map-style dataset of ``(index, image tensor, read error, conversion error)``.

    The image is converted as the metric converts a PIL image (:func:`~clip_metric.images.pil_to_tensor`)
    in the worker, so it travels to the scoring process as a tensor in shared memory, not as a
    pickled image. A file that cannot be read is reported by name and skipped; an image that
    cannot be converted is an error, as it is when the metric is given it directly.
    """

    def __init__(self, paths: list[Path], indices: list[int]) -> None:
        self.paths, self.indices = paths, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[int, Any, str | None, str | None]:
        from clip_metric.images import pil_to_tensor

        index = self.indices[k]
        try:
            image = _load_image(self.paths[index])
        except Exception as err:  # reported by name, never silently dropped
            return index, None, f"{type(err).__name__}: {err}", None
        try:
            return index, pil_to_tensor(image), None, None
        except ValueError as err:
            return index, None, None, str(err)


def _as_list(batch: list) -> list:
    return batch


def _score_worker(fabric: Any, args: argparse.Namespace) -> dict | None:
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from clip_metric.encoder import ClipEncoder
    from clip_metric.metric import ClipScore

    images, prompts = args.images_found, args.prompts_found
    quiet = args.quiet or fabric.global_rank != 0
    encoder = ClipEncoder.from_pretrained(args.model, precision=args.precision, quiet=quiet)
    metric = ClipScore(encoder, keep_scores=True).to(fabric.device)
    indices = list(range(fabric.global_rank, len(images), fabric.world_size))
    if indices:
        metric.encoder.cache_prompts([prompts[i] for i in indices])
    unreadable: list[tuple[str, str]] = []
    bar = tqdm(total=len(indices), desc="scoring", unit="img", disable=fabric.global_rank != 0 or args.quiet,
               file=sys.stderr)
    # Worker processes decode the next batches while this one scores (as clean-fid does).
    loader = DataLoader(_DecodedImages(images, indices), batch_size=args.batch_size, num_workers=args.workers,
                        collate_fn=_as_list)
    threads = torch.get_num_threads()
    if args.workers and fabric.device.type == "cpu":
        # Scoring threads and decoding workers share the cores: more threads than cores slows both.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.devices - args.workers))
    try:
        _score_batches(loader, images, prompts, metric, unreadable, bar)
    finally:
        torch.set_num_threads(threads)
    bar.close()
    with warnings.catch_warnings():
        # A rank (or a run) without a readable image: the command says so itself, by file name.
        warnings.filterwarnings("ignore", message=".*was called before the ``update`` method.*")
        warnings.filterwarnings("ignore", message=".*found no samples on any rank.*")
        summary = {k: float(v) for k, v in metric.compute().items()}
        ids, scores = metric.per_sample()
    all_unreadable = _gather_objects(fabric, unreadable)
    if fabric.global_rank != 0:
        return None
    from clip_metric.signature import signature_of

    library = bundled_library_name(args.prompts) or "captions"
    scored = [prompts[i] for i in sorted(set(ids.tolist()))]  # unreadable images are not in the signature
    signature = signature_of(encoder, scale=metric.scale, library=library, texts=scored)
    return {
        "summary": summary, "ids": ids.tolist(), "scores": scores.tolist(), "unreadable": all_unreadable,
        "signature": signature.as_dict(), "signature_string": str(signature),
    }


def _score_batches(loader: Any, images: list[Path], prompts: list[str], metric: Any, unreadable: list, bar: Any) -> None:
    for decoded in loader:
        for index, _, _, problem in decoded:
            if problem is not None:
                raise ValueError(f"{images[index]}: {problem}")
        batch = [(index, image) for index, image, error, _ in decoded if error is None]
        unreadable += [(str(images[index]), error) for index, _, error, _ in decoded if error is not None]
        if batch:
            ids = [index for index, _ in batch]
            metric.update([image for _, image in batch], [prompts[i] for i in ids], ids=ids)
        bar.update(len(decoded))


def _gather_objects(fabric: Any, items: list) -> list:
    import torch.distributed as dist

    if fabric.world_size == 1 or not dist.is_available() or not dist.is_initialized():
        return list(items)
    out: list[Any] = [None] * fabric.world_size
    dist.all_gather_object(out, items)
    return [item for part in out for item in part]


def run(args: argparse.Namespace) -> int:
    from clip_metric.cli.captions import find_images, pair_images_with_captions

    skipped: list = []
    images = find_images(args.images, skipped)
    pairs = pair_images_with_captions(images, args.prompts)
    for image, reason in skipped + pairs.skipped:
        stderr(f"skipped {image}: {reason}")
    if pairs.missing_captions:
        stderr(f"skipped {len(pairs.missing_captions)} image(s) without a caption: {names(pairs.missing_captions)}")
    if pairs.missing_images:
        stderr(f"{len(pairs.missing_images)} caption(s) name no given image: {names(pairs.missing_images)}")
    if not images:
        raise CliError("no images found (PNG, JPEG or WebP files, folders of them, or glob patterns)")
    if not pairs.images:
        raise CliError("no image has a caption (use --prompts FILE, x.txt beside x.png, or metadata.jsonl)")
    output = check_output(args.output, pairs.images) if args.output else None
    args.model = resolve_model(args.model)
    if args.accelerator in ("cuda", "gpu"):
        import torch

        if not torch.cuda.is_available():
            raise CliError(f"--accelerator {args.accelerator}: no CUDA device is available on this machine")

    args.images_found, args.prompts_found = pairs.images, pairs.prompts
    result = launch(_score_worker, args)
    if result is None:  # pragma: no cover - only rank 0 returns
        return 0
    for name, reason in result["unreadable"]:
        stderr(f"skipped unreadable image {name}: {reason}")
    if result["unreadable"]:
        stderr(f"skipped {len(result['unreadable'])} unreadable image(s)")
    summary = result["summary"]
    scores = result["scores"]
    if not scores:
        raise CliError("no image could be scored")
    from clip_metric.compare import mean_interval

    interval = mean_interval(scores)
    if output is not None:
        library = bundled_library_name(args.prompts)
        _write(output, result["ids"], scores, pairs, result["signature"], library)
    if args.json:
        import json

        report = {
            "model": args.model, **{k: summary[k] for k in summary}, "clip/count": int(summary["clip/count"]),
            "ci95": None if interval is None else list(interval), "signature": result["signature"],
            "signature_string": result["signature_string"], "output": None if output is None else str(output),
        }
        print(json.dumps(report))
        return 0
    print(f"model: {args.model}")
    for key in STAT_NAMES[:-1]:
        print(f"clip/{key:<6} {summary[f'clip/{key}']:.4f}")
    print(f"clip/count  {int(summary['clip/count'])}")
    if interval is None:
        print("95% CI of the mean: n/a (fewer than 2 images)")
    else:
        print(f"95% CI of the mean: [{interval[0]:.4f}, {interval[1]:.4f}]")
    print(f"signature: {result['signature_string']}")
    if output is not None:
        print(f"per-image scores: {output}")
    return 0


def _write(path: Path, ids: list[int], scores: list[float], pairs: Any, signature: dict, library: str | None) -> None:
    from clip_metric.records import ScoreRecord, write_scores

    # Ids that pair across render folders: the library's prompt id, else the path below the
    # folders' common parent (the file name for one folder).
    root = os.path.commonpath([os.path.dirname(os.fspath(image)) for image in pairs.images])
    records = sorted(
        (ScoreRecord(_prompt_id(pairs.images[i], root, library), pairs.prompts[i], s, file=os.fspath(pairs.images[i]))
         for i, s in zip(ids, scores)),
        key=lambda r: r.prompt_id,
    )
    write_scores(path, records, step=0, header={"scale": "cosine", "signature": signature})


def _prompt_id(image: Path, root: str, library: str | None) -> str:
    if library is not None:
        return image.stem  # named after the library's prompt id (a -<k> suffix kept: one row per image)
    return os.path.relpath(os.fspath(image), root)
