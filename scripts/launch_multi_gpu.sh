#!/usr/bin/env bash
# Data-parallel evaluation: one lmms-eval process per GPU under accelerate; lmms-eval shards the documents.
#   scripts/launch_multi_gpu.sh NUM_GPUS MODEL_ARGS TASKS OUTPUT_DIR [more lmms-eval flags]
#   scripts/launch_multi_gpu.sh 8 pretrained=llava-hf/llava-1.5-7b-hf,method=himap,k1=2,keep1=288,k2=8,keep2=72 \
#       scienceqa_img_himap results/runs/7b_himap_8gpu --batch_size 8
# On a machine without GPUs, set ACCELERATE_EXTRA=--cpu to run the processes on the CPU (what the tests do).
set -euo pipefail
if [ $# -lt 4 ]; then sed -n '2,7p' "$0"; exit 2; fi
num_gpus=$1 model_args=$2 tasks=$3 output=$4
shift 4
repo=$(cd "$(dirname "$0")/.." && pwd)
if [ -e "$output" ]; then echo "output dir $output exists: pick a new one, runs are never overwritten" >&2; exit 2; fi
exec "$repo/.venv/bin/accelerate" launch --num_processes="$num_gpus" ${ACCELERATE_EXTRA:-} -m lmms_eval \
  --model himap_llava --model_args "$model_args" --tasks "$tasks" --include_path "$repo/tasks" \
  --output_path "$output" --log_samples "$@"
