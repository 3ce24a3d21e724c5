#!/usr/bin/env bash
# The test command of the README: sets up (or reuses) .venv, then lint and the test suite.
# Everything runs offline: the tests build their own tiny models and datasets.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/pytest -q "$@"
