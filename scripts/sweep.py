"""Run pruning presets x tasks through stock lmms-eval, one folder per run, then the sweep's leaderboard.

    python scripts/sweep.py --model testbed --presets vanilla,fastv_50,himap_ref   # the testbed's three benchmarks
    python scripts/sweep.py --model llava-1.5-7b --presets vanilla,fastv_50,himap_ref,himap_25 \\
        --tasks scienceqa_img_himap,mme,pope --num-processes 8          # data parallel, one process per GPU
    python scripts/sweep.py --model testbed --num-processes 2 --cpu   # two CPU processes
    python scripts/sweep.py --model llava-1.5-13b --presets vanilla,himap_ref \\
        --tasks scienceqa_img_himap --model-args device_map=auto     # one model over several GPUs

Model and method presets live in configs/models.yaml and configs/methods.yaml (--presets-file adds a user's
method presets, docs/sweeps.md); --model-args is appended to both. The runs land in
results/runs/<sweep id>/<preset>/ with the sweep's manifest and leaderboard beside them (see himap_lmms/sweep.py
and docs/sweeps.md). Ctrl-C or SIGTERM stops the running preset, marks it
interrupted and the rest not run, and writes the table of what finished.

Exit status: 0 every run ok; 1 a run failed; 2 bad arguments; 3 an output could not be written (the results
folder before any run, or a full disk during the sweep); 130 stopped by SIGINT (Ctrl-C); 143 by SIGTERM.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from himap_lmms.presets import REPO, add_presets_file_option, method_presets, resolve_model
from himap_lmms.sweep import EXIT_STORAGE, SweepPlan, check_writable, lmms_eval_config, report, run_sweep
from himap_lmms.sweep_manifest import FAILED, INTERRUPTED, NOT_RUN
from himap_lmms.task_data import check_data_files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="testbed", help="a preset of configs/models.yaml, or a checkpoint dir")
    parser.add_argument("--presets", default="vanilla,fastv_50,himap_ref", help="presets of configs/methods.yaml")
    add_presets_file_option(parser)
    parser.add_argument(
        "--tasks",
        default="scienceqa_img_himap_local,pope_synth,textvqa_synth",
        help="comma-separated lmms-eval tasks (default: the bundled synthetic benchmarks)",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-processes", type=int, default=1, help="data-parallel processes (one per GPU)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even where a GPU is present")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per process (default: cores/processes)"
    )
    parser.add_argument("--limit", type=int, default=None, help="first N documents of each task (smoke runs)")
    parser.add_argument("--model-args", default="", help="extra model_args, e.g. device_map=auto")
    parser.add_argument("--results", type=Path, default=REPO / "results", help="runs go to RESULTS/runs/")
    parser.add_argument(
        "--lmms-eval-config", action="store_true", help="print the runs as an lmms-eval --config file; run nothing"
    )
    args = parser.parse_args(argv)
    try:
        plan = SweepPlan(
            model=args.model,
            presets=tuple(args.presets.split(",")),
            tasks=tuple(args.tasks.split(",")),
            batch_size=args.batch_size,
            num_processes=args.num_processes,
            cpu=args.cpu,
            limit=args.limit,
            threads=args.threads,
            model_args=args.model_args,
            preset_files=tuple(str(path.resolve()) for path in args.presets_file),
        )
        resolve_model(plan.model)
        method_presets(plan.presets, plan.preset_files)
        check_data_files(plan.tasks, cwd=REPO)
    except ValueError as error:
        parser.error(str(error))
    if args.lmms_eval_config:
        print(lmms_eval_config(plan), end="")
        return 0
    try:
        check_writable(args.results)
    except OSError as error:
        print(f"sweep.py: error: --results {args.results}: cannot write runs there: {error}", file=sys.stderr)
        return EXIT_STORAGE
    try:
        outcome = run_sweep(plan, args.results)
    except OSError as error:  # before the sweep's folder and manifest exist (after them, run_sweep records it)
        print(f"sweep.py: error: cannot start the sweep: {error}", file=sys.stderr)
        return EXIT_STORAGE
    try:
        print(report(outcome.folder), end="")
    except OSError as error:
        print(f"[sweep] the sweep's table could not be written: {error}", file=sys.stderr)
        return EXIT_STORAGE
    print(f"[sweep] {outcome.folder}")
    runs = outcome.manifest.runs
    failed = [f"{run.preset} ({run.status})" for run in runs if run.status.startswith(FAILED)]
    unfinished = [f"{run.preset} ({run.status})" for run in runs if run.status in (INTERRUPTED, NOT_RUN)]
    for what, listed in (("failed runs", failed), ("not finished", unfinished)):
        if listed:
            print(f"[sweep] {what}: " + "; ".join(listed), file=sys.stderr)
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
