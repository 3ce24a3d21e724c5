"""A sweep: pruning presets x tasks through stock lmms-eval, one process per preset, judged by its results.

Every preset runs as its own lmms-eval process (so a crash loses one run, not the sweep) into
``<results>/runs/<sweep id>/<preset>/``, its output shown and kept, written through, in ``lmms_eval.log``.
lmms-eval 0.7.3 catches errors, logs them and exits 0, so a run's exit code says nothing: a run has finished when
its folder holds one results file with an entry for every task asked and at least one document evaluated for each.
Otherwise it has failed, with the last error line of its log.

The sweep's manifest (``sweep.json``, :mod:`himap_lmms.sweep_manifest`) records what the runs share (model,
tasks, limit, batch size, device, torch threads, processes) and each run's model_args, status and results file.
It is written, atomically, before the first run (every preset ``not run``) and at every change of state, so a
sweep that ends early keeps what it has done. SIGINT (Ctrl-C) and SIGTERM stop the running preset
(``interrupted``) and leave the rest ``not run`` (:class:`StopSignals`); an output that cannot be written (a full
disk) stops the sweep with the path named, keeping runs already written. At the end the sweep's own leaderboard
is written into its folder and printed. Exit codes (:attr:`SweepOutcome.exit_code`) and the rest of what a user
sees are in docs/sweeps.md.

Torch threads are pinned (``OMP_NUM_THREADS``) so that all runs of a sweep use the same number, and recorded:
latency depends on it as much as on the method.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from himap_lmms.leaderboard import build_leaderboard, load_sweep, parse_model_args, to_markdown, write_outputs
from himap_lmms.presets import REPO, method_presets, model_backend, resolve_model
from himap_lmms.sweep_manifest import (
    INTERRUPTED,
    OK,
    RUNNING,
    SWEEP_MANIFEST,
    RunEntry,
    SweepManifest,
    failed,
    naming,
)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EXCEPTION_LINE = re.compile(r"^[\w.]*(Error|Exception)\b.*:")
EXIT_RUN_FAILED = 1
EXIT_STORAGE = 3


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
    preset_files: tuple[str, ...] = ()  # a user's method presets, besides configs/methods.yaml

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
        if len(set(self.presets)) < len(self.presets):
            raise ValueError(f"--presets={','.join(self.presets)!r} names a preset twice")
        if "batch_size" in parse_model_args(self.model_args):
            raise ValueError(
                f"--model-args={self.model_args!r} sets batch_size: give it as --batch-size (lmms-eval passes that "
                "to the model itself)"
            )

    @property
    def device(self) -> str:
        if self.cpu or not _cuda_available():
            return "cpu" if self.num_processes == 1 else f"cpu x{self.num_processes}"
        return "cuda" if self.num_processes == 1 else f"cuda x{self.num_processes}"

    @property
    def torch_threads(self) -> int:
        """Threads per process: as asked, else the cores shared evenly between the processes."""
        return self.threads or max(1, (os.cpu_count() or 1) // self.num_processes)


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
        "--model", model_backend(plan.model),
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


class StopSignals:
    """While active, SIGINT (Ctrl-C) and SIGTERM stop the sweep instead of killing it with a traceback.

    The first signal is recorded (:attr:`signal`) and passed on to the running lmms-eval process group (each run
    starts in its own session, so a terminal's Ctrl-C reaches the sweep only, and the sweep decides); a run that
    has not ended :data:`GRACE_S` seconds later, or at a second signal, is killed. The handlers are installed
    explicitly, so a sweep started in the background of a non-interactive shell (which starts it with SIGINT
    ignored) can still be stopped with ``kill -INT``.
    """

    GRACE_S = 20.0
    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signal: int | None = None
        self.child: subprocess.Popen | None = None
        self._previous: dict[int, Any] = {}
        self._timer: threading.Timer | None = None

    def __enter__(self) -> StopSignals:
        self._previous = {number: signal.signal(number, self._handle) for number in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        if self._timer is not None:
            self._timer.cancel()

    def watch(self, child: subprocess.Popen | None) -> None:
        """Make ``child`` the run to stop (``None``: the run has ended). A signal that came while the run was being
        started stops it at once."""
        if child is None and self._timer is not None:  # the run has ended: its process group id may be reused
            self._timer.cancel()
        self.child = child
        if child is not None and self.signal is not None:
            self._stop_child(self.signal, first=True)

    def _handle(self, number: int, frame: object) -> None:
        first = self.signal is None
        self.signal = self.signal or number
        self._stop_child(number, first)

    def _stop_child(self, number: int, first: bool) -> None:
        child = self.child
        if child is None or child.poll() is not None:
            return
        print(f"[sweep] {signal.Signals(number).name}: stopping the running preset", file=sys.stderr, flush=True)
        if first:
            signal_group(child, number)
            self._timer = threading.Timer(self.GRACE_S, signal_group, (child, signal.SIGKILL))
            self._timer.daemon = True
            self._timer.start()
        else:
            signal_group(child, signal.SIGKILL)


def signal_group(process: subprocess.Popen, number: int) -> None:
    """Send ``number`` to ``process`` and everything it started (accelerate's workers), if still there."""
    try:
        os.killpg(process.pid, number)
    except (ProcessLookupError, PermissionError):
        pass


def run_logged(command: list[str], env: dict[str, str], log: Path, stop: StopSignals) -> None:
    """Run ``command``, its output both shown (progress bars included) and kept in ``log``.

    The log is unbuffered, so what the run printed is on disk even if the sweep is killed (``kill -9``) a moment
    later. If the log cannot be written (a full disk), the run is killed before the ``OSError`` goes on: no
    process is left running unobserved.
    """
    with log.open("wb", buffering=0) as kept:
        try:
            process = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
            )
        except OSError as error:  # no lmms-eval to run: the run fails, with this line as its reason
            kept.write(f"OSError: cannot start {command[0]}: {error}\n".encode())
            return
        try:
            with process:
                stop.watch(process)
                _copy_output(process, kept, log)
        finally:  # the process has been waited for
            stop.watch(None)


def _copy_output(process: subprocess.Popen, kept: BinaryIO, log: Path) -> None:
    """Copy the run's output to ``kept`` and to stderr until it ends; kill the run if that fails."""
    assert process.stdout is not None
    try:
        while chunk := process.stdout.read1(4096):
            try:
                kept.write(chunk)
            except OSError as error:
                raise naming(error, log) from error
            sys.stderr.buffer.write(chunk)
            sys.stderr.flush()
    except BaseException:
        signal_group(process, signal.SIGKILL)
        raise


def last_error(log: Path) -> str:
    """The line of a run's log that says why it failed: the last exception line, else the last ERROR line,
    else the last line."""
    try:
        text = log.read_text(errors="replace")
    except OSError as error:
        return f"no log ({error})"
    lines = [_ANSI.sub("", line).strip() for line in text.splitlines()]
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
        return failed(reason), None
    try:
        data = json.loads(files[0].read_text())
    except (OSError, ValueError) as error:  # a run killed while writing it
        return failed(f"its results file {files[0]} is unreadable: {error}"), None
    answered = {**data.get("results", {}), **data.get("group_subtasks", {})}
    samples = data.get("n-samples", {})
    for task in tasks:
        if task not in answered:
            return failed(f"no results for task {task} ({last_error(log)})"), None
        if task in samples and not samples[task].get("effective"):
            return failed(f"task {task} evaluated no documents"), None
    return OK, str(files[0].relative_to(run_dir.parent))


def check_writable(results: Path) -> None:
    """Make sure runs can be written under ``results`` before any model loads: ``OSError`` naming the path when
    ``results/runs`` cannot be created or written (a file in the way, no permission, a read-only or full disk)."""
    runs = results / "runs"
    for path in (results, runs):
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "exists and is not a folder", str(path))
    runs.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=runs, prefix=".write-check-") as probe:
        probe.write(b"x" * 4096)
        probe.flush()
        os.fsync(probe.fileno())


def new_sweep_dir(results: Path, model: str) -> Path:
    """A folder that never existed: a second sweep in the same second gets a numbered sibling."""
    base = results / "runs" / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}_{model}"
    candidate, number = base, 1
    while candidate.exists():
        number += 1
        candidate = base.with_name(f"{base.name}-{number}")
    candidate.mkdir(parents=True)
    return candidate


@dataclass(frozen=True)
class SweepOutcome:
    """How a sweep ended: its folder and manifest, the signal that stopped it, or the write that failed."""

    folder: Path
    manifest: SweepManifest
    signal: int | None = None
    storage_error: OSError | None = None

    @property
    def exit_code(self) -> int:
        """0 all runs ok, 1 a run failed, 3 an output could not be written, 128 + N stopped by signal N."""
        if self.storage_error is not None:
            return EXIT_STORAGE
        if self.signal is not None:
            return 128 + self.signal
        return 0 if all(run.status == OK for run in self.manifest.runs) else EXIT_RUN_FAILED


def run_sweep(plan: SweepPlan, results: Path) -> SweepOutcome:
    """Run every preset of ``plan``, one at a time, until all have run, a signal stops the sweep or an output
    cannot be written (see the module docstring); the manifest is rewritten at every change of state."""
    model_name, model_preset = resolve_model(plan.model)
    methods = method_presets(plan.presets, plan.preset_files)
    folder = new_sweep_dir(results, model_name)
    shared = {name: value for name, value in asdict(plan).items() if name not in ("presets", "tasks")}
    manifest = SweepManifest(
        sweep_id=folder.name,
        started=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        backend=model_backend(plan.model),
        **shared,
        presets=list(plan.presets),
        tasks=list(plan.tasks),
        device=plan.device,
        torch_threads=plan.torch_threads,
        runs=[
            RunEntry(
                preset, model_args(model_preset, args, f"cost_log={folder / preset / 'costs.jsonl'}", plan.model_args)
            )
            for preset, args in methods.items()
        ],
    )
    env = run_environment(plan)
    with StopSignals() as stop:
        try:
            manifest.write(folder)
            for entry in manifest.runs:
                if stop.signal is not None:
                    break
                run_preset(plan, folder, manifest, entry, env, stop)
        except OSError as error:
            manifest.outcome = f"stopped: {error}"
            return _record_storage_error(folder, manifest, error)
        manifest.outcome = "finished" if stop.signal is None else f"stopped by {signal.Signals(stop.signal).name}"
        try:
            manifest.write(folder)
        except OSError as error:
            return _record_storage_error(folder, manifest, error)
        return SweepOutcome(folder, manifest, signal=stop.signal)


def run_preset(
    plan: SweepPlan, folder: Path, manifest: SweepManifest, entry: RunEntry, env: dict[str, str], stop: StopSignals
) -> None:
    """Run one preset and record its status. A write that fails (the run's folder, its log) leaves the run judged
    by what it wrote, so results already on disk count, and the ``OSError`` goes on: the sweep stops."""
    run_dir = folder / entry.preset
    log = run_dir / "lmms_eval.log"
    command = lmms_eval_command(plan, run_dir, entry.model_args)
    entry.command, entry.status = shlex.join(command), RUNNING
    try:
        manifest.write(folder)
        run_dir.mkdir()
        print(f"[sweep] {entry.preset}: {run_dir}", flush=True)
        run_logged(command, env, log, stop)
    except OSError as error:
        status, entry.results = judge_run(run_dir, plan.tasks, log)
        entry.status = status if status == OK else failed(f"cannot write the run's output: {error}")
        raise
    status, entry.results = judge_run(run_dir, plan.tasks, log)
    entry.status = INTERRUPTED if status != OK and stop.signal is not None else status
    print(f"[sweep] {entry.preset}: {entry.status}", flush=True)
    manifest.write(folder)


def _record_storage_error(folder: Path, manifest: SweepManifest, error: OSError) -> SweepOutcome:
    """Keep what can be kept when an output could not be written: the manifest, if the disk still takes it (else
    the previous one stays whole, and the leaderboard lists results files it lacks)."""
    print(f"[sweep] stopped: an output could not be written: {error}", file=sys.stderr, flush=True)
    try:
        manifest.write(folder)
    except OSError:
        pass
    return SweepOutcome(folder, manifest, storage_error=error)


def lmms_eval_config(plan: SweepPlan) -> str:
    """The sweep's runs as an ``lmms-eval eval --config`` YAML file, for those who drive lmms-eval themselves
    (each entry one run; no failure detection, no manifest). The files in configs/lmms_eval/ are made by this,
    so they follow the presets."""
    model_name, model_preset = resolve_model(plan.model)
    shared = {"model": model_backend(plan.model), "tasks": ",".join(plan.tasks), "include_path": "tasks"}
    shared |= {"batch_size": plan.batch_size, "log_samples": True}
    runs = [
        {
            **shared,
            "model_args": model_args(model_preset, method_args, plan.model_args),
            "output_path": f"results/runs/{model_name}_{preset}",
        }
        for preset, method_args in method_presets(plan.presets, plan.preset_files).items()
    ]
    header = f"# lmms-eval eval --config FILE: {', '.join(plan.presets)} on {model_name}. Made by\n"
    header += f"#   python scripts/sweep.py --model {plan.model} --presets {','.join(plan.presets)} "
    header += "".join(f"--presets-file {path} " for path in plan.preset_files)
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
