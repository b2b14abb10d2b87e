#!/usr/bin/env python
"""What importing the package costs next to torchmetrics, and how fast ``clip-metric --help`` answers.

Each figure is the wall time of a fresh Python process (interpreter start-up included) that runs:

* ``python``: ``python -c pass``, the interpreter's own start-up, which every other row includes;
* ``torchmetrics``: ``import torchmetrics``, the peer whose import cost is the yardstick;
* ``ClipScore``: ``from clip_metric import ClipScore``, what a training script adds;
* ``clip_metric``: ``import clip_metric`` (its names load on first use);
* ``lightning``: ``import lightning.pytorch``, what a Lightning training script pays anyway;
* ``cli-help``: the ``clip-metric --help`` console script (``python -m clip_metric.cli --help``
  where the script is not installed).

All run in the same rounds, interleaved (the order reversed every other round), from an empty
working directory, and each figure is the median over ``--repeats`` rounds. The untimed warm-up
round runs every statement under ``python -X importtime``, which says what the heavy modules
(torch, lightning, transformers, ...) cost inside each import. Each timed ``python -c`` statement
ends by printing the names of the loaded modules (well under a millisecond), which is how the
report knows which heavy modules each one imports, and which packages it loads beyond what
``import torchmetrics`` loads; the console script's are taken from the same code run through
``python -c``.

The device only names the machine in the report: nothing runs on an accelerator.

Examples::

    python benchmarks/bench_imports.py --device cpu --json imports.json
    python benchmarks/bench_imports.py --tiny     # one round, no warm-up: checks the plumbing
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from harness.environment import environment, load_average, log
from harness.report import common_arguments, fmt, resolve_device, table, target, targets_table, write_report
from harness.timing import ForeignLoad, rounds

# name: the statement `python -c` runs (None: the console script).
STATEMENTS: dict[str, str | None] = {
    "python": "pass",
    "torchmetrics": "import torchmetrics",
    "ClipScore": "from clip_metric import ClipScore",
    "clip_metric": "import clip_metric",
    "lightning": "import lightning.pytorch",
    "cli-help": None,
}
# What the console script runs, as a statement (to list the modules it loads).
CLI_STATEMENT = (
    "import sys\nsys.argv = ['clip-metric', '--help']\nfrom clip_metric.cli import main\n"
    "try:\n    main()\nexcept SystemExit:\n    pass"
)
HEAVY = (
    "torch", "torchvision", "torchmetrics", "lightning", "pytorch_lightning", "lightning_fabric", "transformers",
    "tokenizers", "huggingface_hub", "safetensors", "numpy", "scipy", "PIL", "tensorboard", "jsonargparse",
    "diffusers", "matplotlib", "wandb", "pandas", "sklearn",
)
LIGHTNING = ("lightning", "pytorch_lightning", "lightning_fabric")
MARK = "@modules"
LISTING = f"\nimport sys\nprint('\\n{MARK}', len(sys.modules), *sorted({{m.partition('.')[0] for m in sys.modules}}))"


def console_script() -> list[str]:
    script = Path(sys.executable).with_name("clip-metric")
    return [str(script), "--help"] if script.is_file() else [sys.executable, "-m", "clip_metric.cli", "--help"]


def command(name: str) -> list[str]:
    statement = STATEMENTS[name]
    return console_script() if statement is None else [sys.executable, "-c", statement + LISTING]


def shown(name: str) -> str:
    """The command as a user would type it."""
    statement = STATEMENTS[name]
    if statement is not None:
        return f"python -c '{statement}'"
    return "python -m clip_metric.cli --help" if console_script()[0] == sys.executable else "clip-metric --help"


def run(argv: Sequence[str], cwd: Path) -> tuple[float, str, str]:
    """Wall seconds, stdout and stderr of one fresh process; an error if it fails."""
    start = time.perf_counter()
    done = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {done.returncode}:\n{done.stderr[-2000:]}")
    return seconds, done.stdout, done.stderr


def modules(stdout: str) -> tuple[int, set[str]] | None:
    """(modules loaded, the top-level names among them) from a run's listing."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARK):
            count, *names = line.split()[1:]
            return int(count), set(names)
    return None


def import_ms(stderr: str) -> dict[str, float]:
    """Cumulative milliseconds of each heavy module's first import, from ``-X importtime``."""
    out = {}
    for line in stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[2].strip() in HEAVY and parts[1].strip().isdigit():
            out[parts[2].strip()] = int(parts[1]) / 1000.0
    return {name: out[name] for name in HEAVY if name in out}


def probe(name: str, cwd: Path, importtime: bool) -> tuple[str, str]:
    """stdout and stderr of ``name``'s statement (the console script's as a statement) with its listing."""
    statement = STATEMENTS[name] if STATEMENTS[name] is not None else CLI_STATEMENT
    flags = ["-X", "importtime"] if importtime else []
    _, stdout, stderr = run([sys.executable, *flags, "-c", statement + LISTING], cwd)
    return stdout, stderr


def measure(args: argparse.Namespace, cwd: Path) -> dict[str, Any]:
    names = list(STATEMENTS)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    listed: dict[str, tuple[int, set[str]] | None] = {}
    attribution: dict[str, dict[str, float]] = {}
    foreign: list[float | None] = []
    for round_index, timed_round, order in rounds(names, args.repeats, warmup=not args.tiny):
        log(f"   round {round_index}{'' if timed_round else ' (warm-up, -X importtime)'}: {', '.join(order)}")
        with ForeignLoad(children=True) as load:
            for name in order:
                if not timed_round:
                    stdout, stderr = probe(name, cwd, importtime=True)
                    attribution[name], listed[name] = import_ms(stderr), modules(stdout)
                    continue
                elapsed, stdout, _ = run(command(name), cwd)
                seconds[name].append(elapsed)
                listed[name] = modules(stdout) or listed.get(name)
        if timed_round:
            foreign.append(load.share)
    if listed.get("cli-help") is None:  # no warm-up: the console script lists nothing itself
        listed["cli-help"] = modules(probe("cli-help", cwd, importtime=False)[0])

    median = {name: statistics.median(values) for name, values in seconds.items()}
    start_up = median["python"]
    peer = (listed["torchmetrics"] or (None, set()))[1]
    variants = {}
    for name in names:
        count, top_level = listed[name] or (None, set())
        variants[name] = {
            "command": shown(name),
            "seconds": median[name],
            "seconds_all": seconds[name],
            "seconds_min": min(seconds[name]),
            "net_seconds": median[name] - start_up,
            "x_torchmetrics": median[name] / median["torchmetrics"],
            "heavy_modules": [module for module in HEAVY if module in top_level],
            "modules_loaded": count,
            # What it loads that `import torchmetrics` does not (top-level packages, standard library aside).
            "beyond_torchmetrics": sorted(
                module for module in top_level - peer
                if module not in sys.stdlib_module_names and not module.startswith("_")
            ),
            "import_ms": attribution.get(name),
        }
    net = lambda name: variants[name]["net_seconds"]  # noqa: E731
    return {
        "variants": variants,
        "ratios": {
            "ClipScore_over_torchmetrics": median["ClipScore"] / median["torchmetrics"],
            "ClipScore_over_torchmetrics_net": net("ClipScore") / net("torchmetrics") if net("torchmetrics") > 0 else None,
        },
        "foreign_cpu_share_per_round": foreign,
    }


def evaluate_targets(variants: dict[str, Any]) -> list[dict[str, Any]]:
    cli, clip_score = variants["cli-help"], variants["ClipScore"]
    return [
        target("`from clip_metric import ClipScore` time / `import torchmetrics` time",
               clip_score["x_torchmetrics"], "<=", 1.0),
        target("`clip-metric --help` seconds", cli["seconds"], "<=", 2.0),
        target("`clip-metric --help`: heavy modules imported", len(cli["heavy_modules"]), "<=", 0),
        target("`from clip_metric import ClipScore`: Lightning modules imported",
               sum(name in LIGHTNING for name in clip_score["heavy_modules"]), "<=", 0),
    ]


def _names(names: list[str], most: int = 6) -> str:
    shown = ", ".join(names[:most]) or "none"
    return shown + (f" (+{len(names) - most} more)" if len(names) > most else "")


def markdown(report: dict[str, Any]) -> str:
    env, settings, variants = report["environment"], report["settings"], report["variants"]
    shares = ", ".join("n/a" if v is None else f"{100 * v:.0f}%" for v in report["foreign_cpu_share_per_round"])
    lines = [
        f"# import cost ({env['device']}: {env['device_name']})",
        "",
        f"- Python {env['python']}, torch {env['torch']}, torchmetrics {env['torchmetrics']}, transformers "
        f"{env['transformers']}, lightning {env['lightning']}, clip-metric {env['clip_metric']} (sources sha256 "
        f"{env['package_sources_sha256']})",
        f"- {env['cpu_count']} logical CPUs; load average (1/5/15 min) at start {env['load_average_at_start']}, at end "
        f"{env.get('load_average_at_end')}; share of the CPUs used by other processes per round: {shares or 'n/a'}",
        f"- command: `{env['command']}`",
        f"- a fresh process per figure, all in the same {settings['repeats']} rounds, interleaved; the median"
        + (", after a warm-up round" if settings["warmup"] else ", no warm-up round"),
    ]
    if settings["tiny"]:
        lines.append("- **--tiny: one round, no warm-up; checks the plumbing, the figures mean nothing**")
    rows = [
        [name, f"`{row['command']}`", fmt(row["seconds"], ".3f"), fmt(row["seconds_min"], ".3f"),
         fmt(row["net_seconds"], ".3f"), fmt(row["x_torchmetrics"], ".2f", "x"),
         ", ".join(row["heavy_modules"]) or "none", "-" if row["modules_loaded"] is None else str(row["modules_loaded"]),
         _names(row["beyond_torchmetrics"])]
        for name, row in variants.items()
    ]
    lines += ["", "## wall time of a fresh process", ""]
    lines += table(["what", "command", "median (s)", "min (s)", "net of start-up (s)", "x torchmetrics",
                    "heavy modules imported", "modules loaded", "packages beyond torchmetrics' (standard library aside)"],
                    rows, "ll" + "rrrr" + "lrl")
    ratios = report["ratios"]
    lines += ["", f"`from clip_metric import ClipScore` / `import torchmetrics`: "
              f"{fmt(ratios['ClipScore_over_torchmetrics'], '.2f')} (net of interpreter start-up: "
              f"{fmt(ratios['ClipScore_over_torchmetrics_net'], '.2f')})."]
    measured = {name: row["import_ms"] for name, row in variants.items() if row["import_ms"]}
    if measured:
        heavy = [name for name in HEAVY if any(name in ms for ms in measured.values())]
        lines += ["", "## what the heavy modules cost inside each import (warm-up run, `-X importtime`, "
                  "cumulative ms of their first import; nested, so they overlap)", ""]
        lines += table(["what", *heavy], [[name, *(fmt(ms.get(m), ".0f") if m in ms else "-" for m in heavy)]
                                          for name, ms in measured.items()])
    lines += ["", "## targets", ""] + targets_table(report["targets"], settings["tiny"])
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_arguments(parser, "1 round, no warm-up: checks the plumbing (the imports still take seconds)")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (median) after a warm-up round")
    args = parser.parse_args(argv)
    resolve_device(parser, args)
    if args.tiny:
        args.repeats = 1
    if args.repeats < 1:
        parser.error("--repeats must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    report: dict[str, Any] = {
        "environment": environment(torch.device(args.device)),
        "settings": {"repeats": args.repeats, "warmup": not args.tiny, "tiny": args.tiny,
                     "python": sys.executable, "console_script": " ".join(console_script())},
    }
    cwd = Path(tempfile.mkdtemp(prefix="clip-imports-"))  # empty: nothing in it shadows an installed module
    try:
        report.update(measure(args, cwd))
    finally:
        shutil.rmtree(cwd, ignore_errors=True)
    report["environment"]["load_average_at_end"] = load_average()
    report["targets"] = evaluate_targets(report["variants"])
    report["markdown"] = markdown(report)
    return write_report(report, args)


if __name__ == "__main__":
    main()
