#!/usr/bin/env bash
# One process, the model split over every visible GPU with device_map=auto (for a model too large for one GPU,
# e.g. LLaVA-1.5-13B in fp32 or on 24 GB cards). The pruning engine runs layer by layer, so it follows the split.
#   scripts/launch_device_map.sh MODEL_ARGS TASKS OUTPUT_DIR [more lmms-eval flags]
#   scripts/launch_device_map.sh pretrained=llava-hf/llava-1.5-13b-hf,method=himap scienceqa_img_himap results/runs/13b_himap
set -euo pipefail
if [ $# -lt 3 ]; then sed -n '2,6p' "$0"; exit 2; fi
model_args=$1 tasks=$2 output=$3
shift 3
repo=$(cd "$(dirname "$0")/.." && pwd)
if [ -e "$output" ]; then echo "output dir $output exists: pick a new one, runs are never overwritten" >&2; exit 2; fi
exec "$repo/.venv/bin/lmms-eval" eval --model himap_llava --model_args "$model_args,device_map=auto" \
  --tasks "$tasks" --include_path "$repo/tasks" --output_path "$output" --log_samples "$@"
