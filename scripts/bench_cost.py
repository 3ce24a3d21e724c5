"""Cost benchmark: the method presets of configs/methods.yaml on a random-weight LLaVA shape (:mod:`himap_lmms.bench`).

Usage::

    python scripts/bench_cost.py --shape scaled --reference-style               # CPU, batch 1 and 2, 9 rounds
    python scripts/bench_cost.py --shape 7b --device cuda --reference-style     # GPU, batch 1 and 8

Writes bench.json, bench.md and bench.png to --out (default results/bench/<shape>-<device>/).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import torch

from himap_lmms.bench import DEFAULT_METHODS, BenchSettings, markdown, reassess, run_benchmark, write_outputs
from himap_lmms.model_shapes import LLAVA_SHAPES
from himap_lmms.presets import add_presets_file_option

REPO = Path(__file__).resolve().parent.parent


def int_list(text: str) -> tuple[int, ...]:
    """``"1,8"`` -> ``(1, 8)``; anything else is an argparse error that names the value."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 1,8") from None


def device_slug(device: str) -> str:
    """``cpu``, or the GPU's name in lower case with dashes (``nvidia-h100-80gb-hbm3``)."""
    if not device.startswith("cuda"):
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(torch.device(device)).lower()).strip("-")


def read_results(path: Path) -> dict[str, Any]:
    """A ``bench.json`` written by this script; anything else is a ValueError that names the file."""
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"--report {path}: cannot read it as JSON ({error})") from None
    if not isinstance(results, dict) or not {"settings", "batches"} <= set(results):
        raise ValueError(f"--report {path}: not a bench.json (no settings and batches)")
    return results


def parse_args(argv: list[str] | None) -> tuple[BenchSettings | dict[str, Any], Path]:
    """The run's settings and its output folder; with ``--report``, the recorded results to reassess instead."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(LLAVA_SHAPES), default="scaled")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--batch-sizes", type=int_list, help="comma-separated; default 1,2 on the CPU, 1,8 on CUDA")
    parser.add_argument(
        "--repeats", type=int, default=BenchSettings.repeats, help="timed rounds (each runs every method once)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds after the counting pass")
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument(
        "--methods", default=",".join(DEFAULT_METHODS), help="comma-separated presets of configs/methods.yaml"
    )
    add_presets_file_option(parser)
    parser.add_argument(
        "--fastv-pairs",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time each pruned method that is not FastV against FastV at the same FLOPs ratio (default on)",
    )
    parser.add_argument("--reference-style", action="store_true", help="also time the authors' way (no KV cache)")
    parser.add_argument("--reference-repeats", type=int, default=3)
    # One thread by default on the CPU: on this project's 2 cores shared with other jobs, 2 threads made the scaled
    # shape's prefill 5x slower (10.5 s against 2.0 s; a decoding step 20x), each op's threads waiting at its
    # barrier for the one whose core another job holds. On a dedicated machine, pass --threads <cores>.
    parser.add_argument("--threads", type=int, help="torch threads; default 1 on the CPU, torch's on CUDA")
    parser.add_argument("--out", type=Path, help="default results/bench/<shape>-<device>/")
    parser.add_argument(
        "--report",
        type=Path,
        metavar="BENCH_JSON",
        help="run nothing: recompute the equal-FLOPs comparisons and goals of a recorded run from its rounds and "
        "rewrite its bench.md, bench.png and bench.json (in its folder unless --out)",
    )
    args = parser.parse_args(argv)
    if args.report is not None:
        try:
            return read_results(args.report), args.out or args.report.parent
        except ValueError as error:
            parser.error(str(error))
    cuda = args.device.startswith("cuda")
    try:
        settings = BenchSettings(
            shape=args.shape,
            device=args.device,
            dtype=args.dtype,
            batch_sizes=args.batch_sizes or ((1, 8) if cuda else (1, 2)),
            repeats=args.repeats,
            warmup=args.warmup,
            new_tokens=args.new_tokens,
            reference_style=args.reference_style,
            reference_repeats=args.reference_repeats,
            threads=args.threads if args.threads is not None or cuda else 1,
            methods=tuple(args.methods.split(",")),
            preset_files=tuple(str(path.resolve()) for path in args.presets_file),
            fastv_pairs=args.fastv_pairs,
        )
    except ValueError as error:
        parser.error(str(error))
    return settings, args.out or REPO / "results" / "bench" / f"{settings.shape}-{device_slug(settings.device)}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    job, out = parse_args(argv)
    results = reassess(job) if isinstance(job, dict) else run_benchmark(job)
    write_outputs(results, out)
    print(markdown(results))
    print(f"written to {out}")
    return results


if __name__ == "__main__":
    main()
