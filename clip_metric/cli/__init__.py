"""The ``clip-metric`` command: one module per sub-command (``demo``, ``score``, ``eval``, ``compare``).

Building the parser imports neither torch nor Lightning, so ``clip-metric --help`` answers at
once; each sub-command imports what it needs when it runs. Every failure a user can cause is
``error: ...`` on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from clip_metric.cli import compare, demo, score
from clip_metric.cli import eval as eval_command
from clip_metric.cli._common import CliError, stderr

SUBCOMMANDS = (demo, score, eval_command, compare)


def build_parser() -> argparse.ArgumentParser:
    from clip_metric import __version__

    parser = argparse.ArgumentParser(prog="clip-metric", description="CLIP scores for text-to-image models")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except CliError as err:
        stderr(f"error: {err}")
        return 2
    except MemoryError:
        stderr("error: out of memory; use a smaller --batch-size, fewer or smaller images, or a machine with more memory")
        return 2
    except (FileNotFoundError, ValueError, TypeError, OSError, ImportError, RuntimeError) as err:
        stderr(f"error: {err}")
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
