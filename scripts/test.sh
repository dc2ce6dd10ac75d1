#!/usr/bin/env bash
# Set up (CPU torch first, so pip does not pull CUDA wheels) and run the tests, into and with the active Python (a
# virtual environment: README "Install"). Default: every test not marked slow, within 10 minutes on a quiet 2-core
# machine. `--slow`: the slow end-to-end ones (the README and a model card run as written, the demo, the wheel,
# compiled decoding, the benchmarks' smoke runs). CI runs both. Other arguments go to pytest
# (e.g. `bash scripts/test.sh tests/test_chat.py -k template`).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet torch==2.13.0
python -m pip install --quiet -c scripts/newest-tested-versions.txt -e ".[test]"
selection="not slow"
if [ "${1:-}" = "--slow" ]; then
  selection="slow"
  shift
fi
# pytest's default output: one line per test file with its progress in percent; -ra lists what did not pass.
if [ "$#" -gt 0 ] && [[ "$1" != -* ]]; then
  python -m pytest -m "$selection" "$@"
else
  python -m pytest -m "$selection" tests "$@"
fi
