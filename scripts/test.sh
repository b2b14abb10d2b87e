#!/usr/bin/env bash
# Set up a virtual environment in .venv (CPU torch; see scripts/setup.sh) and run the test suite.
#   VENV=DIR             use another virtual environment directory
#   EXTRA_REQUIREMENTS   extra pip requirements installed with the package, e.g. "transformers>=4.57,<5"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${VENV:-.venv}
"$VENV/bin/python" -m pytest -q "$@"
