"""A sweep: pruning presets x tasks through stock lmms-eval, one process per preset, judged by its results.

Every preset runs as its own lmms-eval process (so a crash loses one run, not the sweep) into
``<results>/runs/<sweep id>/<preset>/``. lmms-eval 0.7.3 catches errors, logs them and exits 0, so a run's exit
code says nothing: a run has finished when its folder holds one results file with an entry for every task
asked and at least one document evaluated for each. Otherwise it has failed, with the last error line of its
log. The sweep's manifest (``sweep.json``) records after every run what the runs share (model, tasks, limit,
batch size, device, torch threads, processes) and each run's model_args, status and results file, so an
interrupted sweep keeps what it has done. At the end the sweep's own leaderboard is written into its folder
and printed, and the sweep fails (exit 1) if any run failed.

Torch threads are pinned (``OMP_NUM_THREADS``) so that all runs of a sweep use the same number, and recorded:
latency depends on it as much as on the method.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from himap_lmms.leaderboard import OK, SWEEP_MANIFEST, build_leaderboard, load_sweep, to_markdown, write_outputs

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"
BACKEND = "himap_llava"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EXCEPTION_LINE = re.compile(r"^[\w.]*(Error|Exception)\b.*:")


@dataclass(frozen=True)
class SweepPlan:
    """What every run of a sweep shares. Checked on construction, before any model loads."""

    model: str
    presets: tuple[str, ...]
    tasks: tuple[str, ...]
    batch_size: int = 8
    num_processes: int = 1
    cpu: bool = False
    limit: int | None = None
    threads: int | None = None
    model_args: str = ""

    def __post_init__(self) -> None:
        for name in ("batch_size", "num_processes"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')}={getattr(self, name)} must be >= 1")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit={self.limit} must be >= 1 (leave it out to evaluate every document)")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads={self.threads} must be >= 1")
        for name in ("presets", "tasks"):
            if not getattr(self, name) or not all(getattr(self, name)):
                raise ValueError(f"--{name}={','.join(getattr(self, name))!r} must name at least one, without blanks")

    @property
    def device(self) -> str:
        if self.cpu or not _cuda_available():
            return "cpu" if self.num_processes == 1 else f"cpu x{self.num_processes}"
        return "cuda" if self.num_processes == 1 else f"cuda x{self.num_processes}"

    @property
    def torch_threads(self) -> int:
        """Threads per process: as asked, else the cores shared evenly between the processes."""
        return self.threads or max(1, (os.cpu_count() or 1) // self.num_processes)


def load_presets(path: Path, kind: str, names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    presets = yaml.safe_load(path.read_text())
    unknown = [name for name in names if name not in presets]
    if unknown:
        raise ValueError(f"unknown {kind} preset {unknown[0]!r} in {path}: choose from {', '.join(presets)}")
    return {name: presets[name] for name in names}


def resolve_model(model: str) -> tuple[str, dict[str, Any]]:
    """(display name, model_args) of a model preset or a checkpoint directory; preset paths are repo-relative,
    so a sweep started from any directory finds the bundled checkpoint."""
    if Path(model).is_dir():
        return Path(model).name, {"pretrained": str(Path(model).resolve())}
    ((name, preset),) = load_presets(CONFIGS / "models.yaml", "model", (model,)).items()
    local = REPO / str(preset["pretrained"])
    return name, {**preset, "pretrained": str(local) if local.is_dir() else preset["pretrained"]}


def model_args(*parts: dict[str, Any] | str) -> str:
    """Join preset dicts and raw ``k=v,...`` strings into one lmms-eval model_args string."""
    items = []
    for part in parts:
        if isinstance(part, dict):
            items.extend(f"{key}={value}" for key, value in part.items())
        elif part:
            items.append(part)
    return ",".join(items)


def lmms_eval_command(plan: SweepPlan, run_dir: Path, arguments: str) -> list[str]:
    """One run's command: a plain process, or ``num_processes`` processes under accelerate."""
    bin_dir = Path(sys.executable).parent
    if plan.num_processes > 1:
        # --cpu alone makes accelerate run ONE process; several CPU processes need its multi-process mode,
        # with ACCELERATE_USE_CPU=1 in the environment (see run_environment).
        launcher = [str(bin_dir / "accelerate"), "launch", "--multi_gpu", f"--num_processes={plan.num_processes}"]
        launcher += ["-m", "lmms_eval"]
    else:
        launcher = [str(bin_dir / "lmms-eval"), "eval"]
    command = launcher + [
        "--model", BACKEND,
        "--model_args", arguments,
        "--tasks", ",".join(plan.tasks),
        "--include_path", str(REPO / "tasks"),
        "--batch_size", str(plan.batch_size),
        "--output_path", str(run_dir),
        "--log_samples",
    ]  # fmt: skip
    return command + (["--limit", str(plan.limit)] if plan.limit else [])


def run_environment(plan: SweepPlan) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(plan.torch_threads)}
    if plan.device.startswith("cpu"):
        env["ACCELERATE_USE_CPU"] = "1"
    return env


def run_logged(command: list[str], env: dict[str, str], log: Path) -> None:
    """Run ``command``, its output both shown (progress bars included) and kept in ``log``."""
    with (
        log.open("wb") as kept,
        subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as process,
    ):
        assert process.stdout is not None
        while chunk := process.stdout.read1(4096):
            kept.write(chunk)
            sys.stderr.buffer.write(chunk)
            sys.stderr.flush()


def last_error(log: Path) -> str:
    """The line of a run's log that says why it failed: the last exception line, else the last ERROR line,
    else the last line."""
    lines = [_ANSI.sub("", line).strip() for line in log.read_text(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    for pick in (lambda line: _EXCEPTION_LINE.match(line), lambda line: "ERROR" in line):
        found = [line for line in lines if pick(line)]
        if found:
            return found[-1]
    return lines[-1] if lines else "no output"


def judge_run(run_dir: Path, tasks: tuple[str, ...], log: Path) -> tuple[str, str | None]:
    """(status, results file relative to the sweep folder) of a finished process, from what it wrote."""
    files = sorted(run_dir.rglob("*_results.json"))
    if len(files) != 1:
        reason = last_error(log) if not files else f"{len(files)} results files in {run_dir}"
        return f"failed: {reason}", None
    data = json.loads(files[0].read_text())
    answered = {**data.get("results", {}), **data.get("group_subtasks", {})}
    samples = data.get("n-samples", {})
    for task in tasks:
        if task not in answered:
            return f"failed: no results for task {task} ({last_error(log)})", None
        if task in samples and not samples[task].get("effective"):
            return f"failed: task {task} evaluated no documents", None
    return OK, str(files[0].relative_to(run_dir.parent))


def new_sweep_dir(results: Path, model: str) -> Path:
    """A folder that never existed: a second sweep in the same second gets a numbered sibling."""
    base = results / "runs" / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}_{model}"
    candidate, number = base, 1
    while candidate.exists():
        number += 1
        candidate = base.with_name(f"{base.name}-{number}")
    candidate.mkdir(parents=True)
    return candidate


def run_sweep(plan: SweepPlan, results: Path) -> tuple[Path, list[dict[str, Any]]]:
    """Run every preset of ``plan``; returns the sweep folder and its runs (each with its status)."""
    model_name, model_preset = resolve_model(plan.model)
    methods = load_presets(CONFIGS / "methods.yaml", "method", plan.presets)
    sweep_dir = new_sweep_dir(results, model_name)
    manifest = {
        "sweep_id": sweep_dir.name,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "backend": BACKEND,
        **asdict(plan),
        "device": plan.device,
        "torch_threads": plan.torch_threads,
        "runs": [],
    }
    env = run_environment(plan)
    for preset, method_args in methods.items():
        run_dir = sweep_dir / preset
        run_dir.mkdir()
        arguments = model_args(model_preset, method_args, f"cost_log={run_dir / 'costs.jsonl'}", plan.model_args)
        command = lmms_eval_command(plan, run_dir, arguments)
        print(f"[sweep] {preset}: {run_dir}", flush=True)
        log = run_dir / "lmms_eval.log"
        run_logged(command, env, log)
        status, results_file = judge_run(run_dir, plan.tasks, log)
        print(f"[sweep] {preset}: {status}", flush=True)
        manifest["runs"].append(
            {
                "preset": preset,
                "model_args": arguments,
                "command": shlex.join(command),
                "status": status,
                "results": results_file,
            }
        )
        (sweep_dir / SWEEP_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return sweep_dir, manifest["runs"]


def lmms_eval_config(plan: SweepPlan) -> str:
    """The sweep's runs as an ``lmms-eval eval --config`` YAML file, for those who drive lmms-eval themselves
    (each entry one run; no failure detection, no manifest). The files in configs/lmms_eval/ are made by this,
    so they follow the presets."""
    model_name, model_preset = resolve_model(plan.model)
    shared = {"model": BACKEND, "tasks": ",".join(plan.tasks), "include_path": "tasks"}
    shared |= {"batch_size": plan.batch_size, "log_samples": True}
    runs = [
        {
            **shared,
            "model_args": model_args(model_preset, method_args, plan.model_args),
            "output_path": f"results/runs/{model_name}_{preset}",
        }
        for preset, method_args in load_presets(CONFIGS / "methods.yaml", "method", plan.presets).items()
    ]
    header = f"# lmms-eval eval --config FILE: {', '.join(plan.presets)} on {model_name}. Made by\n"
    header += f"#   python scripts/sweep.py --model {plan.model} --presets {','.join(plan.presets)} "
    header += f"--tasks {','.join(plan.tasks)} --batch-size {plan.batch_size} --lmms-eval-config\n"
    return header + yaml.safe_dump(runs, sort_keys=False, width=200)


def report(sweep_dir: Path) -> str:
    """Write the sweep's own leaderboard into its folder and return it as Markdown."""
    board = build_leaderboard(load_sweep(sweep_dir / SWEEP_MANIFEST))
    write_outputs(board, sweep_dir)
    return to_markdown(board)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
