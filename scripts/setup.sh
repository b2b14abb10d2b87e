#!/usr/bin/env bash
# Create a virtual environment in .venv (CPU torch) with the package and its test requirements.
#   VENV=DIR             use another virtual environment directory
#   EXTRA_REQUIREMENTS   extra pip requirements installed with the package, e.g. "transformers>=4.57,<5"
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
# The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
python -m pip install -q "torch==2.13.0" || python -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
read -ra extra <<< "${EXTRA_REQUIREMENTS:-}"
python -m pip install -q -e ".[dev]" ${extra[@]+"${extra[@]}"}
