#!/usr/bin/env bash
# Creates (or reuses) the virtual environment at .venv in the repo root and installs the project into it.
# torch and torchvision are pinned first so that pip takes the builds that lie on this machine's disk
# instead of resolving a newer CUDA build from the registry.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.himap-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q "torch==2.14.1" "torchvision==0.29.1"
  # The development environment runs the newest tested transformers (pyproject.toml has no upper bound);
  # scripts/test_transformers_matrix.sh runs the others.
  .venv/bin/pip install -q -e ".[dev]" "transformers==5.24.0"
  # the stock lmms-eval classes the Qwen2.5-VL / LLaVA-OneVision reference tests run (decord: a py3 manylinux
  # wheel); optional, so a platform without that wheel still gets a working environment
  .venv/bin/pip install -q -e ".[stock]" "transformers==5.24.0" || echo "setup_venv: optional extra 'stock'" \
    "(decord) did not install; tests/test_stock_vlm_classes.py will be skipped" >&2
  touch "$stamp"
fi
