#!/usr/bin/env bash
# The one-GPU benchmark: one table (d20 train step tok/s and MFU, padding-free vs pad-to-longest SFT, compiled
# decoding, projected hours of the seeds' runs) in under 8 minutes on an H100-class card. Extra arguments go to
# bench/gpu.py (e.g. --tiny for the CPU smoke run, --skip decode, --batch 8).
# Run from anywhere; needs this package installed (pip install -e .) and a CUDA torch.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# 480 s: the budget this script promises on a GPU; a slower card stops here rather than running on. The CPU smoke
# run (--tiny) promises nothing about time (a shared CPU can be many times slower), so it has no limit.
limit=480
for arg in "$@"; do
  if [ "$arg" = "--tiny" ]; then limit=0; fi  # timeout 0: no limit
done
timeout "$limit" python bench/gpu.py "$@"
