#!/usr/bin/env bash
# Downloads the wheels of scripts/gpu_requirements.txt into DIR (default .whl), and builds this project's own, for
# scripts/gpu_check.sh to install on a GPU machine that has a CUDA PyTorch but no registry. Run it where the registry
# is reachable. Binary wheels only, for that machine's CPython (GPU_PYTHON, default 3.12) on x86-64 Linux; no
# dependencies are resolved: the list names each package that machine lacks. The project's wheel carries the
# lmms-eval entry point and the pins that himap_lmms/gpu_check.py checks; its code is taken from the working tree at run time.
#
#   bash scripts/fetch_gpu_wheels.sh .whl
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.whl}
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
  platforms+=(--platform "${tag}_x86_64")
done
python3 -m pip download -q --no-deps --only-binary=:all: --implementation cp \
  --python-version "${GPU_PYTHON:-3.12}" "${platforms[@]}" -d "$dest" -r scripts/gpu_requirements.txt
python3 -m pip wheel -q --no-deps -w "$dest" .
rm -rf build himap_lmms.egg-info
du -sh "$dest"
