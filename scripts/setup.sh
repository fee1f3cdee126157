#!/usr/bin/env bash
# Create .venv and install koel with its test tools. Safe to run again (it only adds what is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# CPU torch first: otherwise pip resolves koel's torch requirement to a multi-GB CUDA build.
# For a GPU machine, install the CUDA build of torch yourself before running this script.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet "torch==2.13.0" ${KOEL_TORCH_INDEX:+--index-url "$KOEL_TORCH_INDEX"}
fi
.venv/bin/python -m pip install --quiet -e ".[dev]"
