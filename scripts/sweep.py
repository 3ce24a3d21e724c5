"""Run a matrix of pruning presets x tasks through stock lmms-eval, one folder per run, then the leaderboard.

    python scripts/sweep.py --model testbed --presets vanilla,fastv_50,himap_ref \
        --tasks scienceqa_img_himap_local
    python scripts/sweep.py --model llava-1.5-7b --presets vanilla,fastv_50,himap_ref,himap_25 \
        --tasks scienceqa_img_himap,mme,pope --num-processes 8          # data parallel, one process per GPU
    python scripts/sweep.py --model llava-1.5-13b --presets vanilla,himap_ref \
        --tasks scienceqa_img_himap --model-args device_map=auto     # one model over several GPUs

Model and method presets live in configs/models.yaml and configs/methods.yaml; anything in --model-args is
appended to both. Every preset runs as its own lmms-eval process (so a crash loses one run, not the sweep)
into results/runs/<UTC time>_<model>_<preset>/, a folder that never existed before: earlier runs are never
overwritten. Each folder holds lmms-eval's results and samples, the per-example cost log (costs.jsonl) and
the exact command. The leaderboard over every run under results/runs is rebuilt at the end.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def load_presets(path: Path, kind: str, names: list[str]) -> dict[str, dict]:
    presets = yaml.safe_load(path.read_text())
    unknown = [name for name in names if name not in presets]
    if unknown:
        raise SystemExit(f"unknown {kind} preset {unknown[0]!r} in {path}: choose from {', '.join(presets)}")
    return {name: presets[name] for name in names}


def fresh_run_dir(results: Path, model: str, preset: str) -> Path:
    """A new folder for one run; a second run in the same second gets a numbered sibling, never the same one."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = results / "runs" / f"{stamp}_{model}_{preset}"
    candidate, number = base, 1
    while candidate.exists():
        number += 1
        candidate = base.with_name(f"{base.name}-{number}")
    candidate.mkdir(parents=True)
    return candidate


def model_args(*parts: dict | str) -> str:
    """Join preset dicts and raw ``k=v,...`` strings into one lmms-eval model_args string."""
    items = []
    for part in parts:
        if isinstance(part, dict):
            items.extend(f"{key}={value}" for key, value in part.items())
        elif part:
            items.append(part)
    return ",".join(items)


def lmms_eval_command(args: argparse.Namespace, run_dir: Path, arguments: str) -> list[str]:
    """The lmms-eval invocation of one run: a plain process, or one process per device under accelerate."""
    if args.num_processes > 1:
        launcher = [str(BIN / "accelerate"), "launch", f"--num_processes={args.num_processes}"]
        launcher += ["--cpu"] if args.cpu else []
        launcher += ["-m", "lmms_eval"]
    else:
        launcher = [str(BIN / "lmms-eval"), "eval"]
    command = launcher + [
        "--model", "himap_llava",
        "--model_args", arguments,
        "--tasks", args.tasks,
        "--include_path", str(REPO / "tasks"),
        "--batch_size", str(args.batch_size),
        "--output_path", str(run_dir),
        "--log_samples",
    ]  # fmt: skip
    if args.limit:
        command += ["--limit", str(args.limit)]
    return command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="testbed", help="a preset of configs/models.yaml, or a checkpoint dir")
    parser.add_argument("--presets", default="vanilla,fastv_50,himap_ref", help="presets of configs/methods.yaml")
    parser.add_argument("--tasks", default="scienceqa_img_himap_local", help="comma-separated lmms-eval tasks")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-processes", type=int, default=1, help="data-parallel processes (one per GPU)")
    parser.add_argument("--cpu", action="store_true", help="run the accelerate processes on the CPU")
    parser.add_argument("--limit", type=int, default=None, help="first N documents of each task (smoke runs)")
    parser.add_argument(
        "--model-args", default="", help="extra model_args, e.g. device_map=auto,attn_implementation=eager"
    )
    parser.add_argument("--results", type=Path, default=REPO / "results")
    args = parser.parse_args(argv)

    if Path(args.model).is_dir():
        model_name, model_preset = Path(args.model).name, {"pretrained": str(Path(args.model).resolve())}
    else:
        ((model_name, model_preset),) = load_presets(REPO / "configs" / "models.yaml", "model", [args.model]).items()
    methods = load_presets(REPO / "configs" / "methods.yaml", "method", args.presets.split(","))
    failed = []
    for preset, method_args in methods.items():
        run_dir = fresh_run_dir(args.results, model_name, preset)
        arguments = model_args(model_preset, method_args, f"cost_log={run_dir / 'costs.jsonl'}", args.model_args)
        command = lmms_eval_command(args, run_dir, arguments)
        (run_dir / "command.txt").write_text(shlex.join(command) + "\n")
        print(f"[sweep] {preset}: {run_dir}", flush=True)
        if subprocess.run(command, cwd=REPO).returncode != 0:
            failed.append(preset)
    subprocess.run(
        [str(BIN / "python"), "-m", "himap_lmms.leaderboard", str(args.results / "runs"), "--out", str(args.results)],
        cwd=REPO,
        check=True,
    )
    if failed:
        print(f"[sweep] failed runs: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
