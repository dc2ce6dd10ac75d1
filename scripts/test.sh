#!/usr/bin/env bash
# Set up (CPU torch first, so pip does not pull CUDA wheels) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet torch==2.13.0
python -m pip install --quiet -c scripts/newest-tested-versions.txt -e ".[test]"
python -m pytest -q tests "$@"
