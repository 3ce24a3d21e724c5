#!/usr/bin/env bash
# GPU verification in one command, offline: the engine tests on CUDA (bfloat16 and float32, SDPA and eager), the
# cost benchmark at the LLaVA-1.5-7B (batch 1 and 8) and 13B (batch 1) shapes with random weights, and lmms-eval
# runs of the bundled testbed on CUDA (vanilla and HiMAP, batch 8). Sized for 8 minutes of one H100/H200-class GPU.
# Every output goes under OUT, a new or empty folder (summary.md first, with the GPU goals as measured); the exit
# status is non-zero when a step failed, and the last line names the failed steps. The steps and how each is
# judged: himap_lmms/gpu_check.py.
#
#   bash scripts/gpu_check.sh OUT          # on a machine with one CUDA GPU
#   bash scripts/gpu_check.sh --dry OUT    # CPU, tiny sizes, to keep this script working (tests/test_gpu_check.py)
#
# Python: the repo's .venv when it has lmms-eval installed (scripts/setup_venv.sh), else the machine's python3,
# which must bring torch with CUDA. Onto that one, the wheels in WHEELS (default .whl in the repo root: the pins of
# scripts/gpu_requirements.txt and the project's own, for its lmms-eval entry point) are installed into a scratch
# folder on PYTHONPATH, no registry needed. Fetch them beforehand where the registry is reachable:
# `bash scripts/fetch_gpu_wheels.sh .whl`.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
WHEELS=${WHEELS:-$repo/.whl}

if [ -x .venv/bin/python ] && .venv/bin/python -c "import lmms_eval" 2>/dev/null; then
  python=.venv/bin/python
  export PYTHONPATH=$repo
else
  python=${PYTHON:-python3}
  site=$(mktemp -d /tmp/himap-gpu-site.XXXXXX)
  if compgen -G "$WHEELS/*.whl" >/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$WHEELS"/*.whl
  else
    echo "[gpu_check] no wheels in $WHEELS: using $python's packages as they are" >&2
  fi
  # the repo first, so its code is what runs; the scratch folder for the wheels and the entry point's metadata
  export PYTHONPATH=$repo:$site
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
exec "$python" -m himap_lmms.gpu_check "$@"
