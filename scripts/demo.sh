#!/usr/bin/env bash
# Set up (CPU torch first, so pip does not pull CUDA wheels), then run the demo pipeline on the shipped Telugu
# samples. With a recipe argument, run that recipe instead (e.g. a seed run on a GPU machine, where a CUDA torch
# is already installed: set AKSHARA_SKIP_TORCH_INSTALL=1).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${AKSHARA_SKIP_TORCH_INSTALL:-}" ]; then
  python -m pip install --quiet torch==2.13.0
fi
python -m pip install --quiet -e .
akshara-hf demo "$@"
