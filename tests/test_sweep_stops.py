"""A sweep that is stopped: by Ctrl-C or SIGTERM, by ``kill -9``, by a full disk, by a results folder it cannot
write. Signals go to real sweep processes. Most runs are a stub in place of lmms-eval (it writes a results file
for the presets named in ``STUB_FINISH`` and waits for the others), so that a stop lands mid-run at a known
point; one test stops a real lmms-eval run of the testbed."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from himap_lmms import leaderboard, sweep
from himap_lmms.sweep_manifest import INTERRUPTED, NOT_RUN, OK, RUNNING, SWEEP_MANIFEST, SweepManifest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "sweep.py"
TASK = "pope_synth"
PRESETS = "vanilla,fastv_50,himap_ref"

STUB = """\
import json, os, sys, time
run_dir = sys.argv[1]
os.makedirs(run_dir, exist_ok=True)
with open(os.path.join(run_dir, "stub.pid"), "w") as handle:
    handle.write(str(os.getpid()))
print("stub started", flush=True)
if os.path.basename(run_dir) in os.environ.get("STUB_FINISH", "").split(","):
    os.makedirs(os.path.join(run_dir, "model"))
    payload = {
        "results": {"pope_synth": {"pope_f1_score,none": 0.75}},
        "n-samples": {"pope_synth": {"original": 1, "effective": 1}},
        "config": {"model": "himap_llava", "model_args": sys.argv[2], "limit": 1.0, "batch_size": "1"},
        "date": "20261202_120000",
    }
    with open(os.path.join(run_dir, "model", "20261202_120000_results.json"), "w") as handle:
        json.dump(payload, handle)
else:
    time.sleep(120)
"""

# scripts/sweep.py with the stub in place of lmms-eval.
DRIVER = """\
import runpy, sys
from himap_lmms import sweep
script, stub = sys.argv[1:3]
sweep.lmms_eval_command = lambda plan, run_dir, arguments: [sys.executable, stub, str(run_dir), arguments]
sys.argv = [script, *sys.argv[3:]]
runpy.run_path(script, run_name="__main__")
"""


def stub_sweep(tmp_path: Path, finish: str) -> tuple[list[str], dict[str, str]]:
    (tmp_path / "stub.py").write_text(STUB)
    command = [
        sys.executable,
        "-c",
        DRIVER,
        str(SCRIPT),
        str(tmp_path / "stub.py"),
        "--presets",
        PRESETS,
        "--tasks",
        TASK,
    ]
    command += ["--limit", "1", "--threads", "1", "--results", str(tmp_path / "results")]
    return command, {**os.environ, "STUB_FINISH": finish}


def wait_for(stream, text: str, timeout: float = 240) -> str:
    """Read ``stream`` line by line until a line holds ``text``; everything read so far."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return "".join(seen)
    raise AssertionError(f"{text!r} never came; got:\n{''.join(seen)}")


def the_sweep(tmp_path: Path) -> Path:
    (folder,) = (tmp_path / "results" / "runs").iterdir()
    return folder


def statuses(folder: Path) -> list[str]:
    return [run.status for run in SweepManifest.read(folder / SWEEP_MANIFEST).runs]


def child_is_gone(run_dir: Path) -> bool:
    pid = int((run_dir / "stub.pid").read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def stop_in_second_preset(
    command: list[str], sig: signal.Signals, env=None, after: float = 1, timeout: float = 240
) -> str:
    """Start the sweep, send ``sig`` ``after`` seconds into its second preset (fastv_50), check it exits with
    128 + ``sig``, and return what it printed after that preset started."""
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as process:
        wait_for(process.stdout, "[sweep] fastv_50:", timeout=timeout)
        time.sleep(after)
        process.send_signal(sig)
        rest = process.stdout.read()
        assert process.wait(timeout=120) == 128 + sig
    return rest


def test_sigterm_stops_the_running_preset_and_writes_the_table(tmp_path: Path) -> None:
    command, env = stub_sweep(tmp_path, finish="vanilla")
    rest = stop_in_second_preset(command, signal.SIGTERM, env=env)
    folder = the_sweep(tmp_path)
    assert statuses(folder) == [OK, INTERRUPTED, NOT_RUN]
    assert SweepManifest.read(folder / SWEEP_MANIFEST).outcome == "stopped by SIGTERM"
    table = (folder / "leaderboard.md").read_text()
    assert table in rest
    board = pd.read_csv(folder / "leaderboard.csv", keep_default_na=False)
    assert list(board["status"]) == [OK, INTERRUPTED, NOT_RUN]
    assert child_is_gone(folder / "fastv_50")


def test_sigint_stops_a_sweep_started_in_the_background_of_a_script(tmp_path: Path) -> None:
    """A non-interactive shell starts background jobs with SIGINT ignored; ``kill -INT`` must still stop the sweep."""
    command, env = stub_sweep(tmp_path, finish="")
    pid_file, out = tmp_path / "sweep.pid", tmp_path / "sweep.out"
    script = f'{subprocess.list2cmdline(command)} > {out} 2>&1 & echo $! > {pid_file}; wait $!; echo "rc=$?" >> {out}'
    with subprocess.Popen(["bash", "-c", script], env=env) as shell:
        deadline = time.monotonic() + 120
        while "[sweep] vanilla:" not in (out.read_text() if out.exists() else "") and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)
        os.kill(int(pid_file.read_text()), signal.SIGINT)
        shell.wait(timeout=60)
    assert out.read_text().splitlines()[-1] == f"rc={128 + signal.SIGINT}"
    folder = the_sweep(tmp_path)
    assert statuses(folder) == [INTERRUPTED, NOT_RUN, NOT_RUN]
    assert child_is_gone(folder / "vanilla")


def test_a_killed_sweep_leaves_the_runs_log_and_a_whole_manifest(tmp_path: Path) -> None:
    command, env = stub_sweep(tmp_path, finish="")
    with subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as process:
        wait_for(process.stderr, "stub started")
        process.kill()
        process.wait(timeout=30)
    folder = the_sweep(tmp_path)
    os.kill(int((folder / "vanilla" / "stub.pid").read_text()), signal.SIGKILL)
    assert (folder / "vanilla" / "lmms_eval.log").read_text() == "stub started\n"
    assert statuses(folder) == [RUNNING, NOT_RUN, NOT_RUN]
    board = leaderboard.build_leaderboard(leaderboard.collect_runs([folder]))
    assert list(board["status"]) == [RUNNING, NOT_RUN, NOT_RUN]


@pytest.fixture
def stub_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> sweep.SweepPlan:
    """In-process sweeps whose runs are the stub, every one finishing."""
    (tmp_path / "stub.py").write_text(STUB)
    monkeypatch.setenv("STUB_FINISH", PRESETS)
    monkeypatch.setattr(
        sweep,
        "lmms_eval_command",
        lambda plan, run_dir, args: [sys.executable, str(tmp_path / "stub.py"), str(run_dir), args],
    )
    return sweep.SweepPlan("testbed", tuple(PRESETS.split(",")), (TASK,), limit=1, threads=1, cpu=True)


def test_a_full_disk_fails_the_run_it_hits_names_the_file_and_keeps_the_runs_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stub_runs: sweep.SweepPlan
) -> None:
    opened = Path.open

    def full_disk(self: Path, mode: str = "r", *args, **kwargs):  # the second run's log lies on a full disk
        if self.name == "lmms_eval.log" and self.parent.name == "fastv_50" and "w" in mode:
            return open("/dev/full", mode, *args, **kwargs)
        return opened(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", full_disk)
    monkeypatch.setenv("STUB_FINISH", "vanilla")  # the second run is still under way when its log fails
    outcome = sweep.run_sweep(stub_runs, tmp_path / "results")
    assert outcome.exit_code == sweep.EXIT_STORAGE
    log = outcome.folder / "fastv_50" / "lmms_eval.log"
    expected = f"failed: cannot write the run's output: [Errno {errno.ENOSPC}] No space left on device: '{log}'"
    assert statuses(outcome.folder) == [OK, expected, NOT_RUN]


def test_results_written_before_the_disk_filled_stay_on_the_leaderboard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stub_runs: sweep.SweepPlan
) -> None:
    """The manifest cannot record the first run's end: the previous manifest stays whole, and the results file it
    does not record is still a row."""
    writes = []
    original = sweep.SweepManifest.write

    def fills_up(self: SweepManifest, folder: Path) -> Path:
        writes.append(self.run("vanilla").status)
        if len(writes) > 2:  # the first writes (start, vanilla running) fit; then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", str(folder / SWEEP_MANIFEST))
        return original(self, folder)

    monkeypatch.setattr(sweep.SweepManifest, "write", fills_up)
    outcome = sweep.run_sweep(stub_runs, tmp_path / "results")
    assert outcome.exit_code == sweep.EXIT_STORAGE and outcome.storage_error.errno == errno.ENOSPC
    monkeypatch.undo()
    assert statuses(outcome.folder) == [RUNNING, NOT_RUN, NOT_RUN]  # what the disk took
    board = leaderboard.build_leaderboard(leaderboard.collect_runs([outcome.folder]))
    assert list(board["status"]) == [leaderboard.UNRECORDED, NOT_RUN, NOT_RUN]
    assert board["pope_synth pope_f1_score"].iloc[0] == 0.75


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_a_results_folder_that_cannot_be_written_fails_before_any_run(tmp_path: Path, where: str) -> None:
    blocker = tmp_path / "occupied"
    blocker.write_text("not a folder")
    results = blocker if where == "a file" else blocker / "results"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--presets", "vanilla", "--tasks", TASK, "--results", str(results)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == sweep.EXIT_STORAGE, done.stderr
    assert f"--results {results}: cannot write runs there" in done.stderr and str(blocker) in done.stderr
    assert "Traceback" not in done.stderr and "[sweep]" not in done.stdout


def test_ctrl_c_during_a_real_lmms_eval_run(tmp_path: Path) -> None:
    """The testbed through stock lmms-eval: the first preset finishes, Ctrl-C lands in the second."""
    command = [sys.executable, str(SCRIPT), "--presets", "vanilla,fastv_50,himap_ref", "--tasks", TASK]
    command += ["--limit", "1", "--threads", "1", "--results", str(tmp_path / "results")]
    rest = stop_in_second_preset(command, signal.SIGINT, after=3, timeout=600)
    folder = the_sweep(tmp_path)
    assert statuses(folder) == [OK, INTERRUPTED, NOT_RUN]
    assert (folder / "leaderboard.md").read_text() in rest
    assert (folder / "fastv_50" / "lmms_eval.log").stat().st_size > 0


def test_a_run_that_cannot_start_fails_and_the_sweep_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stub_runs: sweep.SweepPlan
) -> None:
    """No lmms-eval to run is a failed run (exit 1), not an output error: the next preset still runs."""
    stub = sweep.lmms_eval_command
    missing = str(tmp_path / "no-such-lmms-eval")
    monkeypatch.setattr(
        sweep,
        "lmms_eval_command",
        lambda plan, run_dir, args: [missing] if run_dir.name == "fastv_50" else stub(plan, run_dir, args),
    )
    outcome = sweep.run_sweep(stub_runs, tmp_path / "results")
    assert outcome.exit_code == sweep.EXIT_RUN_FAILED
    expected = f"failed: OSError: cannot start {missing}: [Errno {errno.ENOENT}] No such file or directory: '{missing}'"
    assert statuses(outcome.folder) == [OK, expected, OK]
