"""Attention-disruption sweep: accuracy and agreement when each flow is cut from each start layer.

    .venv/bin/python scripts/disruption_sweep.py --model path/to/llava --data data/scienceqa_img_synth \\
        --flows img2txt,img2img,img2rnd --start-layers 0:32:2 --limit 200 --out results/probes/sweep

Writes ``disruption_sweep.csv``, ``disruption_sweep.md`` (the same table) and ``disruption_heatmap.png``
(accuracy drop in points, flow x start layer) into ``--out``; what is measured:
:mod:`himap_lmms.probes.disruption_sweep`.
Every argument, the checkpoint's layer count and the data are checked before the model loads.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch
from transformers import AutoConfig, AutoProcessor, LlavaForConditionalGeneration

from himap_lmms.cli import existing_directory, integer_at_least, output_directory
from himap_lmms.compat import dtype_argument
from himap_lmms.probes.disruption import FLOWS
from himap_lmms.probes.disruption_sweep import parse_layers, plan_sweep, run_sweep, write_outputs
from himap_lmms.scienceqa import load_local_split
from himap_lmms.testbed import DATA_PATH

DTYPES = ("auto", "float16", "bfloat16", "float32")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=existing_directory, required=True, help="LLaVA checkpoint directory")
    parser.add_argument("--data", type=existing_directory, default=DATA_PATH, help="ScienceQA-IMG-schema dir")
    parser.add_argument("--config", default="ScienceQA-IMG", help="dataset config name")
    parser.add_argument("--split", default="test")
    parser.add_argument("--flows", default=",".join(FLOWS), help=f"comma-separated, from {', '.join(FLOWS)}")
    parser.add_argument("--start-layers", default="all", help='"all", "0,4,8" or "start:stop[:step]"')
    parser.add_argument("--end-layer", type=int, default=None, help="last cut layer (default: the last layer)")
    parser.add_argument("--limit", type=integer_at_least(1), default=None, help="use the first N examples")
    parser.add_argument("--seed", type=int, default=0, help="seed of img2rnd's random rows")
    parser.add_argument("--max-new-tokens", type=integer_at_least(1), default=8)
    parser.add_argument("--dtype", default="auto", choices=DTYPES)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    parser.add_argument("--out", type=output_directory, default="results/probes/disruption_sweep")
    args = parser.parse_args(argv)

    try:
        num_layers = AutoConfig.from_pretrained(args.model).get_text_config().num_hidden_layers
    except (OSError, ValueError) as error:  # no config.json, or one transformers cannot read
        parser.error(f"--model {str(args.model)!r} is not a transformers checkpoint: {error}")
    flows = [flow.strip() for flow in args.flows.split(",") if flow.strip()]
    try:
        start_layers = parse_layers(args.start_layers, num_layers)
        plan_sweep(flows, start_layers, args.end_layer, args.seed, num_layers)
    except ValueError as error:
        parser.error(str(error))
    try:
        dataset = load_local_split(args.data, args.config, args.split)
    except ValueError as error:
        parser.error(f"--data: {error}")
    if args.limit is not None:
        dataset = dataset.select(range(min(args.limit, len(dataset))))

    dtype = args.dtype if args.dtype == "auto" else getattr(torch, args.dtype)
    model = LlavaForConditionalGeneration.from_pretrained(
        args.model, **dtype_argument(dtype), attn_implementation=args.attn
    )
    model = model.to(args.device).eval()
    processor = AutoProcessor.from_pretrained(args.model)
    rows = run_sweep(
        model,
        processor,
        dataset,
        flows=flows,
        start_layers=start_layers,
        end_layer=args.end_layer,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
    )
    paths = write_outputs(rows, args.out)
    print(paths["markdown"].read_text())
    print("wrote " + ", ".join(str(path) for path in paths.values()), file=sys.stderr)


if __name__ == "__main__":
    main()
