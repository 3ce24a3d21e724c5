"""Scores of every pruning method at several budgets on the testbed's three benchmarks, plus their blank-image
controls and saliency.

    python scripts/pruning_study.py --threads 1        # testbed + shipped held-out splits -> results/testbed/
    python scripts/pruning_study.py --benchmark pope --limit 100 --saliency-examples 10 --out /tmp/study

What the budgets and methods are: :mod:`himap_lmms.pruning_study`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

from himap_lmms.cli import existing_directory, integer_at_least, output_directory
from himap_lmms.compat import dtype_argument
from himap_lmms.pruning_study import run_study
from himap_lmms.synthetic import BENCHMARKS, load_split
from himap_lmms.testbed import DATA_ROOT, TESTBED_PATH

REPO = Path(__file__).resolve().parent.parent


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=existing_directory, default=TESTBED_PATH, help="LLaVA checkpoint directory")
    parser.add_argument("--data", type=existing_directory, default=DATA_ROOT, help="folder of the benchmarks' splits")
    parser.add_argument("--benchmark", choices=list(BENCHMARKS), action="append", help="repeatable (default: all)")
    parser.add_argument("--out", type=output_directory, default=REPO / "results" / "testbed")
    parser.add_argument("--limit", type=integer_at_least(1), default=None, help="the first N questions of each")
    parser.add_argument("--batch-size", type=integer_at_least(1), default=25)
    parser.add_argument("--saliency-examples", type=integer_at_least(0), default=40)
    parser.add_argument("--threads", type=integer_at_least(1), help="torch threads (default: torch's own count)")
    args = parser.parse_args(argv)
    try:
        splits = {name: load_split(name, args.data)[: args.limit] for name in args.benchmark or list(BENCHMARKS)}
    except ValueError as error:
        parser.error(f"--data: {error}")

    if args.threads:
        torch.set_num_threads(args.threads)
    model = LlavaForConditionalGeneration.from_pretrained(args.model, **dtype_argument(torch.float32)).eval()
    processor = AutoProcessor.from_pretrained(args.model)
    print(run_study(model, processor, splits, args.out, args.batch_size, args.saliency_examples))


if __name__ == "__main__":
    main()
