#!/usr/bin/env bash
# The main job of the README: vanilla, FastV, HiMAP and the pooling baseline at HiMAP's cost (pool_44: the
# testbed's 12 x 12 grid pooled to 8 x 8) on the bundled testbed LLaVA and its three held-out benchmarks
# (ScienceQA-IMG, POPE and TextVQA schemas), through stock lmms-eval. It writes a new sweep folder under
# results/runs/ and ends by printing that sweep's leaderboard: one column per benchmark with its parse rate and
# its difference to vanilla (paired 95 % interval), their mean, agreement, the hard subset, FLOPs ratio and
# latency (the committed reference table in results/reference/ is never touched).
# Offline and CPU-only; pass sweep options to change it, e.g. --presets vanilla,himap_ref --limit 50.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python scripts/sweep.py --model testbed --presets vanilla,fastv_50,fastv_75,himap_ref,himap_25,pool_44 \
  --tasks scienceqa_img_himap_local,pope_synth,textvqa_synth --batch-size 8 "$@"
