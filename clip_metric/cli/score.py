"""``clip-metric score``: score image files against their captions."""

from __future__ import annotations

import argparse
import math
import os
import shutil
import stat
import sys
import tempfile
import warnings
from collections.abc import Sequence
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
from clip_metric.cli._names import shown
from clip_metric.prompts import bundled_library_name
from clip_metric.utilities.constants import DEFAULT_MODEL, STAT_NAMES

PRECISIONS = ("auto", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true")
OUTPUT_EXTENSIONS = (".jsonl", ".csv")
"""What ``--output`` writes: a JSON Lines score file, or CSV."""


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, as torch's DataLoader counts them)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # no affinity masks (macOS, Windows)
        return os.cpu_count() or 1


# Decoding a large PNG costs more than scoring it with CLIP on a GPU: decode beside the scoring.
# No more workers than usable CPUs: torch's DataLoader warns above that, and they would only
# take turns.
DEFAULT_WORKERS = min(4, usable_cpus())


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
                        help="processes decoding images beside each scoring process (0: decode in it; "
                        "default: 4, or the usable CPUs if fewer)")
    parser.add_argument("--devices", type=positive_int, default=1, help="number of devices (processes) to score on")
    parser.add_argument("--accelerator", default="auto", choices=("auto", "cpu", "cuda", "gpu", "mps"), help="where to score")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no loading messages")
    parser.add_argument("--json", action="store_true", help="print one JSON object (statistics, interval, signature)")
    parser.set_defaults(run=run)


_KINDS = (
    (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"),
)


def _not_regular(output: str) -> str | None:
    """What the existing path ``output`` is when not a regular file (or a link to one), else None."""
    try:
        info = os.stat(output)
    except FileNotFoundError:
        return "a dangling symbolic link" if os.path.islink(output) else None
    except OSError as err:
        # A link that cannot be followed (a loop) would be replaced by the renamed file, as a
        # dangling one would; a file where a folder should be is named by check_output.
        if os.path.islink(output):
            return f"a symbolic link that cannot be followed ({err.strerror or err})"
        return None
    if stat.S_ISREG(info.st_mode):
        return None
    return next((kind for test, kind in _KINDS if test(info.st_mode)), "not a regular file")


def _usable_workers(requested: int, images: int, batch_size: int, devices: int) -> int:
    """The decoding workers worth starting: no more than batches to decode, nor than the CPUs each
    scoring process has (more only take turns, and torch's DataLoader warns of them)."""
    batches = math.ceil(images / batch_size)
    return min(requested, batches, max(1, usable_cpus() // devices))


def _not_a_folder_above(path: Path) -> Path | None:
    """The first existing path above ``path`` that is not a directory (a file, a FIFO, a device), if any."""
    for parent in reversed(path.parents):  # from the top down: the first one that blocks is named
        if not os.path.lexists(parent):
            return None  # nothing below it exists yet: mkdir creates the rest
        if not os.path.isdir(parent):
            return parent
    return None


def _estimated_size(images: Sequence[Path], prompts: Sequence[str]) -> int:
    """About the bytes of the output: each row holds its prompt, its path twice (id and file) and a score."""
    return 4096 + sum(len(p.encode("utf-8", "replace")) + 2 * len(os.fsencode(i)) + 120 for i, p in zip(images, prompts))


def check_output(output: str, pairs: Any) -> Path:
    """Refuse, before any scoring, an ``--output`` that would overwrite an input or cannot be written.

    The file is written to a temporary file renamed into place, which would replace a device or
    a named pipe with a regular file: only a regular file (or a link to one) is overwritten.
    """
    path = Path(output)
    kind = _not_regular(output)
    if kind is not None:
        raise CliError(f"--output {shown(output)} is {kind}, not a regular file; name a {' or '.join(OUTPUT_EXTENSIONS)} "
                       "file (it is written to a new file renamed into place)")
    if os.path.exists(output):
        target = os.stat(output)
        for kind, inputs in (("one of the input images", pairs.images), ("a captions file read", pairs.sources)):
            for source in inputs:
                try:
                    other = os.stat(source)
                except OSError:
                    continue
                if (other.st_dev, other.st_ino) == (target.st_dev, target.st_ino):
                    raise CliError(f"--output {shown(output)} is {kind} ({shown(source)}); it would be overwritten")
    if path.suffix.lower() not in OUTPUT_EXTENSIONS:
        raise CliError(f"--output {shown(output)}: expected a file name ending in {' or '.join(OUTPUT_EXTENSIONS)} but "
                       f"got {path.suffix or 'no extension'!r}")
    blocking = _not_a_folder_above(path)
    if blocking is not None:
        raise CliError(f"--output {shown(output)} cannot be written: {str(blocking)!r} above it is not a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".clip-metric-", suffix=".probe") as probe:
            probe.write(b"\0" * 4096)
            probe.flush()
        free = shutil.disk_usage(path.parent).free
    except OSError as err:
        raise CliError(f"--output {shown(output)} cannot be written: {err.strerror or err}") from None
    needed = _estimated_size(pairs.images, pairs.prompts)
    if free < needed:
        raise CliError(f"--output {shown(output)} cannot be written: {free} bytes free on its file system but the "
                       f"scores need about {needed}")
    return path


def _load_image(path: Path) -> Any:
    """The decoded image at ``path``, opened only once it is known to be a regular file.

    The file was checked when listed, but may have been replaced since (by a named pipe, whose
    open would block until someone writes to it): it is opened without blocking and checked on
    the open descriptor, so there is no window between the check and the read.
    """
    from PIL import Image, UnidentifiedImageError

    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    descriptor = os.open(path, flags)
    with os.fdopen(descriptor, "rb") as handle:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            kind = next((kind for test, kind in _KINDS if test(mode)), "a special file")
            raise OSError(f"not a regular file ({kind}); it was replaced after the images were listed")
        try:
            image = Image.open(handle)
        except UnidentifiedImageError:  # named by path, not by the descriptor it was read from
            raise UnidentifiedImageError(f"cannot identify image file {os.fspath(path)!r}") from None
        with image:
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
    workers = _usable_workers(args.workers, len(indices), args.batch_size, args.devices)
    if workers < args.workers and not quiet:
        stderr(f"note: --workers {args.workers}: {workers} decoding worker(s) used ({len(indices)} image(s) in "
               f"batches of {args.batch_size}, {usable_cpus()} usable CPU(s) for {args.devices} scoring process(es))")
    loader = DataLoader(_DecodedImages(images, indices), batch_size=args.batch_size, num_workers=workers,
                        collate_fn=_as_list)
    threads = torch.get_num_threads()
    if workers and fabric.device.type == "cpu":
        # Scoring threads and decoding workers share the cores: more threads than cores slows both.
        torch.set_num_threads(max(1, usable_cpus() // args.devices - workers))
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
    from clip_metric.functional import summarize_clustered_scores
    from clip_metric.signature import signature_of

    library = bundled_library_name(args.prompts) or "captions"
    # Several images of one prompt share its difficulty: the mean and its interval are over
    # per-prompt means (every prompt weighs the same), the other statistics over the images.
    clustered = summarize_clustered_scores(scores, [args.keys_found[i] for i in ids.tolist()])
    summary.update({k: float(v) for k, v in clustered.items()})
    # Unreadable images are not in the signature; several images of one prompt are one prompt.
    scored, per_prompt = prompts_scored(sorted(set(ids.tolist())), args.keys_found, prompts)
    signature = signature_of(encoder, scale=metric.scale, library=library, texts=scored, images_per_prompt=per_prompt)
    return {
        "summary": summary, "ids": ids.tolist(), "scores": scores.tolist(), "unreadable": all_unreadable,
        "signature": signature.as_dict(), "signature_string": str(signature),
    }


def prompts_scored(indices: Sequence[int], keys: Sequence[str], prompts: Sequence[str]) -> tuple[list[str], int | str]:
    """The distinct prompts of the images ``indices`` (in image order) and the images per prompt.

    The count is a number when every prompt has as many images, else ``"<min>-<max>"``.

    Example:
        >>> prompts_scored([0, 1, 2], ["p1", "p1", "p2"], ["a fox", "a fox", "a cat"])
        (['a fox', 'a cat'], '1-2')
    """
    counts: dict[str, int] = {}
    texts: list[str] = []
    for index in indices:
        if keys[index] not in counts:
            counts[keys[index]] = 0
            texts.append(prompts[index])
        counts[keys[index]] += 1
    low, high = min(counts.values(), default=1), max(counts.values(), default=1)
    return texts, low if low == high else f"{low}-{high}"


def _score_batches(loader: Any, images: list[Path], prompts: list[str], metric: Any, unreadable: list, bar: Any) -> None:
    for decoded in loader:
        for index, _, _, problem in decoded:
            if problem is not None:
                raise ValueError(f"{shown(images[index])}: {problem}")
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
    nested: dict[Path, int] = {}
    images = find_images(args.images, skipped, nested)
    pairs = pair_images_with_captions(images, args.prompts)
    for image, reason in skipped + pairs.skipped:
        stderr(f"skipped {shown(image)}: {reason}")
    for folder, count in nested.items():
        stderr(f"not searched: {count} image(s) in subfolders of {shown(folder)} (folders are not searched "
               f"recursively; give the subfolders too, e.g. {shown(os.path.join(folder, '*', ''))})")
    if pairs.missing_captions:
        stderr(f"skipped {len(pairs.missing_captions)} image(s) without a caption: {names(pairs.missing_captions)}")
    if pairs.missing_images:
        stderr(f"{len(pairs.missing_images)} caption(s) name no given image: {names(pairs.missing_images)}")
    if not images:
        where = f"; {sum(nested.values())} in subfolders, which are not searched" if nested else ""
        raise CliError(f"no images found (PNG, JPEG or WebP files, folders of them, or glob patterns){where}")
    if not pairs.images:
        raise CliError("no image has a caption (use --prompts FILE, x.txt beside x.png, or metadata.jsonl)")
    output = check_output(args.output, pairs) if args.output else None
    args.model = resolve_model(args.model)
    if args.accelerator in ("cuda", "gpu"):
        import torch

        if not torch.cuda.is_available():
            raise CliError(f"--accelerator {args.accelerator}: no CUDA device is available on this machine")

    args.images_found, args.prompts_found, args.keys_found = pairs.images, pairs.prompts, pairs.keys
    result = launch(_score_worker, args)
    if result is None:  # pragma: no cover - only rank 0 returns
        return 0
    for name, reason in result["unreadable"]:
        stderr(f"skipped unreadable image {shown(name)}: {reason}")
    if result["unreadable"]:
        stderr(f"skipped {len(result['unreadable'])} unreadable image(s)")
    summary = result["summary"]
    scores = result["scores"]
    if not scores:
        raise CliError("no image could be scored")
    failure = None
    if output is not None:
        library = bundled_library_name(args.prompts)
        try:
            check_output(args.output, pairs)  # again: the path may have changed while scoring ran
            _write(output, result["ids"], scores, pairs, result["signature"], library, summary)
        except (OSError, CliError) as err:
            # The scores took a while: the summary is printed all the same, the error after it.
            failure = f"--output {shown(output)} could not be written ({getattr(err, 'strerror', None) or err}); " \
                "the summary above was not saved"
            output = None
    _print_summary(args, summary, result, output)
    if failure is not None:
        raise CliError(failure)
    return 0


def _print_summary(args: argparse.Namespace, summary: dict, result: dict, output: Path | None) -> None:
    import math

    mean, half = summary["clip/mean"], summary["clip/mean_ci"]
    # One interval: clip/mean_ci's Student t interval, also given as its two ends.
    interval = None if not math.isfinite(half) else [mean - half, mean + half]
    if args.json:
        import json

        report = {
            "model": args.model, **{k: (v if math.isfinite(v) else None) for k, v in summary.items()},
            "clip/count": int(summary["clip/count"]), "clip/prompts": int(summary["clip/prompts"]), "ci95": interval,
            "signature": result["signature"], "signature_string": result["signature_string"],
            "output": None if output is None else str(output),
        }
        print(json.dumps(report))
        return
    print(f"model: {shown(args.model)}")
    for key in STAT_NAMES[:-1]:
        value = summary[f"clip/{key}"]
        few = "prompts" if key == "mean_ci" and summary["clip/count"] >= 2 else "images"
        text = f"{value:.4f}" if math.isfinite(value) else f"n/a (fewer than 2 {few})"
        print(f"clip/{key:<6} {text}")
    print(f"clip/count  {int(summary['clip/count'])}")
    print(f"clip/prompts {int(summary['clip/prompts'])}")
    print(f"signature: {result['signature_string']}")
    if output is not None:
        print(f"per-image scores: {shown(output)}")


def _write(path: Path, ids: list[int], scores: list[float], pairs: Any, signature: dict, library: str | None,
           summary: dict) -> None:
    from clip_metric.records import ScoreRecord, write_scores

    # Ids that pair across render folders: the library's prompt id, else the path below the
    # folders' common parent (the file name for one folder).
    root = os.path.commonpath([os.path.dirname(os.fspath(image)) for image in pairs.images])
    records = sorted(
        (ScoreRecord(_prompt_id(pairs.images[i], root, library), pairs.prompts[i], s, file=os.fspath(pairs.images[i]))
         for i, s in zip(ids, scores)),
        key=lambda r: r.prompt_id,
    )
    # The summary as printed (mean and interval over per-prompt means), beside rows that keep
    # one id per image.
    header_summary = {k: (v if math.isfinite(v) else None) for k, v in summary.items()}
    header_summary.update({k: int(summary[k]) for k in ("clip/count", "clip/prompts")})
    write_scores(path, records, step=0, header={"scale": "cosine", "signature": signature, "summary": header_summary})


def _prompt_id(image: Path, root: str, library: str | None) -> str:
    if library is not None:
        return image.stem  # named after the library's prompt id (a -<k> suffix kept: one row per image)
    return os.path.relpath(os.fspath(image), root)
