"""The steps of ``scripts/gpu_check.sh``: run each one, judge it by the files it wrote, report them all.

Every step is a separate process (a crash or a hang loses that step, not the check) whose outputs land under the
output folder; a step passes only if its files say so, never on an exit status alone (lmms-eval exits 0 after a
failed run). The steps on a GPU, sized for 8 minutes of one H100/H200-class card:

1. ``engine-<dtype>-<attention>``: ``tests/test_engine.py`` on the device, in bfloat16 and float32, with each
   attention kernel the engine supports (``SUPPORTED_ATTENTION``: SDPA and eager; FlashAttention takes no 4D mask,
   so the engine refuses it, and PyPI has no binary flash-attn wheel to install offline anyway). Judged by the
   JUnit XML: tests ran, none failed, on the device, dtype and kernel asked for.
2. ``bench-7b``, ``bench-13b``, ``bench-qwen2.5-vl-7b``: ``scripts/bench_cost.py`` at the LLaVA-1.5-7B shape
   (batch 1 and 8), the 13B shape and the grouped-query decoder of Qwen2.5-VL-7B and LLaVA-OneVision-7B (batch
   1), vanilla, the reference setting and 2/144 8/36, with the reference-style mode. Judged by ``bench.json``:
   every batch has every method, and the reference style ran.
3. ``lmms-<preset>``: ``lmms-eval eval --model himap_llava`` on the bundled testbed and data, vanilla and HiMAP,
   batch 8, on the device. Judged by the results JSON: the task's score and the ``throughput`` block are there.

``--dry`` runs the same steps on the CPU at tiny sizes (one test, the ``tiny`` bench shape, 8 documents) so that
CI keeps this script working. ``summary.json`` and ``summary.md`` list every step, its command, its time and why it
failed; the exit status is 1 when any step failed, and the last line names them. They also hold the GPU goals at
the 7B shape and the reference setting, as measured: a missed goal is a result to report, not a failed step.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path

import torch
from packaging.requirements import Requirement

from himap_lmms.bench.goals import GPU_GOALS, check_goals, verdict
from himap_lmms.leaderboard import OK
from himap_lmms.llava_forward import SUPPORTED_ATTENTION
from himap_lmms.presets import REPO, method_presets, resolve_model
from himap_lmms.sweep import judge_run, model_args

TASK = "scienceqa_img_himap_local"
BENCH_METHODS = ("vanilla", "himap_ref", "himap_25")
LMMS_PRESETS = ("vanilla", "himap_ref")
THROUGHPUT_KEYS = ("avg_flops_ratio", "avg_latency", "avg_prefill_s", f"avg_flops_ratio:{TASK}")


@dataclass
class Step:
    """One process of the check and how to tell from its files whether it did its job."""

    name: str
    command: list[str]
    judge: Callable[[], str | None]  # None when the step's files are right, else what is wrong with them
    timeout: float


def engine_steps(out: Path, device: str, dry: bool) -> list[Step]:
    python = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(REPO / "tests" / "test_engine.py")]
    if dry:  # one quick test: enough to show the options reach the fixtures (CI runs them all in float64)
        python += ["-k", "test_none_matches_transformers_generate and not padded"]
    matrix = [("float32", "sdpa")] if dry else [(d, a) for d in ("bfloat16", "float32") for a in SUPPORTED_ATTENTION]
    steps = []
    for dtype, attention in matrix:
        report = out / "engine" / f"{dtype}-{attention}.xml"
        options = ["--engine-device", device, "--engine-dtype", dtype, "--engine-attn", attention]
        steps.append(
            Step(
                f"engine-{dtype}-{attention}",
                [*python, *options, f"--junitxml={report}"],
                partial(judge_junit, report, f"{device} {dtype} {attention}"),
                timeout=120 if dry else 150,
            )
        )
    return steps


def judge_junit(report: Path, target: str) -> str | None:
    """Tests ran, none failed, and on ``target`` ("device dtype attention", recorded by tests/conftest.py)."""
    if not report.is_file():
        return f"no JUnit report at {report}"
    suite = ElementTree.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    tests, failed = int(suite.get("tests", 0)), int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    if tests == 0 or failed:
        return f"{failed} of {tests} tests failed or errored ({report.name})"
    recorded = [prop.get("value") for prop in suite.iter("property") if prop.get("name") == "engine_target"]
    if recorded != [target]:
        return f"the tests ran with engine target {recorded}, not {target!r} ({report.name})"
    return None


def bench_steps(out: Path, device: str, dry: bool) -> list[Step]:
    script = [sys.executable, str(REPO / "scripts" / "bench_cost.py"), "--device", device, "--reference-style"]
    # The equal-FLOPs FastV partners stay out: they would add two runs per round to a check sized for 8 minutes.
    script += ["--methods", ",".join(BENCH_METHODS), "--no-fastv-pairs"]
    if dry:
        runs = {"tiny": "1"}
        script += ["--repeats", "1", "--warmup", "0", "--new-tokens", "2", "--reference-repeats", "1"]
    else:  # five rounds, as the check was sized: its GPU goals are medians, none an interval
        runs = {"7b": "1,8", "13b": "1", "qwen2.5-vl-7b": "1"}
        script += ["--repeats", "5"]
    steps = []
    for shape, batches in runs.items():
        folder = out / "bench" / shape
        steps.append(
            Step(
                f"bench-{shape}",
                [*script, "--shape", shape, "--batch-sizes", batches, "--out", str(folder)],
                partial(judge_bench, folder / "bench.json", batches.split(",")),
                timeout=120 if dry else 300,
            )
        )
    return steps


def judge_bench(path: Path, batches: list[str]) -> str | None:
    if not path.is_file():
        return f"no {path}"
    results = json.loads(path.read_text())
    for batch in batches:
        missing = set(BENCH_METHODS) - set(results["batches"].get(batch, {}))
        if missing:
            return f"batch {batch} lacks {sorted(missing)} in {path}"
    if "reference_style" not in results:
        return f"no reference_style block in {path}"
    return None


def goals(path: Path) -> list[dict]:
    """The GPU goals read off a ``bench.json`` (:data:`GPU_GOALS`, the same check the benchmark records on CUDA).

    Memory compares the CUDA allocator's peak during the runs, or on the CPU the peak of live tensors.
    """
    if not path.is_file():
        return []
    return check_goals(json.loads(path.read_text()), GPU_GOALS)


def lmms_steps(out: Path, device: str, dry: bool) -> list[Step]:
    """The testbed's model preset with the vanilla and HiMAP method presets, as the sweep would run them.

    ``python -m lmms_eval`` rather than the ``lmms-eval`` script, which a wheel installed with ``--target`` leaves in
    a ``bin`` folder off the PATH.
    """
    _, testbed = resolve_model("testbed")
    presets = method_presets(LMMS_PRESETS)
    steps = []
    for preset, method in presets.items():
        folder = out / "lmms" / preset
        arguments = model_args(testbed, method, f"device={device}", f"cost_log={folder / 'costs.jsonl'}")
        command = [sys.executable, "-m", "lmms_eval", "eval", "--model", "himap_llava", "--model_args", arguments]
        command += ["--tasks", TASK, "--include_path", str(REPO / "tasks"), "--batch_size", "8"]
        command += ["--output_path", str(folder), "--log_samples"] + (["--limit", "8"] if dry else [])
        log = out / "logs" / f"lmms-{preset}.log"
        steps.append(Step(f"lmms-{preset}", command, partial(judge_lmms, folder, log), timeout=300))
    return steps


def judge_lmms(folder: Path, log: Path) -> str | None:
    """The sweep's judgement of a run (one results file, the task answered, with its reason from the log when not),
    and the cost metrics in its ``throughput`` block."""
    status, results = judge_run(folder, (TASK,), log)
    if status != OK:
        return status
    throughput = json.loads((folder.parent / results).read_text()).get("throughput", {})
    missing = [key for key in THROUGHPUT_KEYS if key not in throughput]
    return f"{results} lacks throughput keys {missing}" if missing else None


def run_step(step: Step, logs: Path, seconds_left: float) -> dict:
    """Run one step with its output in ``logs/<name>.log``; a step that crashes or times out is judged all the same.

    It gets its own timeout or what is left of the whole check's budget, whichever is less.
    """
    log = logs / f"{step.name}.log"
    timeout = min(step.timeout, seconds_left)
    print(f"[gpu_check] {step.name}: {shlex.join(step.command)}", flush=True)
    started = time.perf_counter()
    returncode = None
    if timeout > 0:
        with log.open("w") as stream:
            try:
                run = subprocess.run(step.command, cwd=REPO, stdout=stream, stderr=subprocess.STDOUT, timeout=timeout)
                returncode = run.returncode
            except subprocess.TimeoutExpired:
                pass
    problem = step.judge() if timeout > 0 else "not run: the check's time budget was spent"
    if problem is None and returncode != 0:
        problem = f"exited with {returncode}" if returncode is not None else f"timed out after {timeout:.0f} s"
    seconds = time.perf_counter() - started
    print(f"[gpu_check] {step.name}: {'ok' if problem is None else 'FAILED: ' + problem} ({seconds:.0f} s)", flush=True)
    return {
        "step": step.name,
        "passed": problem is None,
        "problem": problem,
        "returncode": returncode,
        "seconds": round(seconds, 1),
        "command": shlex.join(step.command),
        "log": str(log.relative_to(logs.parent)),
    }


def unmet_requirements() -> list[str]:
    """himap-lmms's own pins (with the ``eval`` extra) that this Python does not meet, as "name: found, wanted"."""
    try:
        pins = requires("himap-lmms") or []
    except PackageNotFoundError:
        return ["himap-lmms: not installed, so lmms-eval cannot find the himap_llava model"]
    unmet = []
    for line in pins:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": "eval"}):
            continue
        try:
            found = version(requirement.name)
        except PackageNotFoundError:
            found = "not installed"
        if found == "not installed" or not requirement.specifier.contains(found, prereleases=True):
            unmet.append(f"{requirement.name}: {found}, wanted {requirement.specifier or 'any'}")
    return unmet


def environment(device: str) -> dict:
    """Versions and the device, so that the results can be told apart from another machine's."""
    return {
        "python": platform.python_version(),
        **{name: version(name) for name in ("torch", "transformers", "lmms_eval", "datasets")},
        "device": device,
        "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu",
        "attention_kernels": list(SUPPORTED_ATTENTION),
    }


def markdown(summary: dict) -> str:
    lines = ["# GPU check" + (" (dry run, CPU)" if summary["dry"] else ""), ""]
    lines += [f"- {key}: {value}" for key, value in summary["environment"].items()]
    lines += ["", "| step | result | seconds | log |", "|---|---|---|---|"]
    for row in summary["steps"]:
        result = "ok" if row["passed"] else f"FAILED: {row['problem']}"
        lines.append(f"| {row['step']} | {result} | {row['seconds']} | {row['log']} |")
    if summary["goals"]:
        lines += ["", f"## Goals: HiMAP 2/288 8/72 against vanilla, {summary['goals_from']}", "", "```"]
        lines += [f"{verdict(g)}  {g['goal']}: {g['value']}" for g in summary["goals"]]
        lines.append("```")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder for every output (created; files in it are overwritten)")
    parser.add_argument("--dry", action="store_true", help="CPU, tiny sizes: checks the script, measures nothing")
    parser.add_argument(
        "--budget", type=float, default=540, help="seconds for all steps together; steps past it are not run"
    )
    args = parser.parse_args(argv)
    device = "cpu" if args.dry else "cuda"
    if not args.dry and not torch.cuda.is_available():
        parser.error(f"no CUDA device visible to torch {torch.__version__}: run on a GPU machine, or pass --dry")
    unmet = unmet_requirements()
    if unmet:
        parser.error(f"{sys.executable} does not meet himap-lmms's requirements: {'; '.join(unmet)}")
    out = args.out.resolve()
    if out.exists() and any(out.iterdir()):
        parser.error(f"{out} is not empty: give a new or empty folder, so that no step is judged by older files")
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.budget
    goals_from = out / "bench" / ("tiny" if args.dry else "7b") / "bench.json"
    summary = {"dry": args.dry, "environment": environment(device), "steps": [], "goals": []}
    summary["goals_from"] = str(goals_from.relative_to(out))
    steps = [
        *engine_steps(out, device, args.dry),
        *bench_steps(out, device, args.dry),
        *lmms_steps(out, device, args.dry),
    ]
    for step in steps:
        summary["steps"].append(run_step(step, logs, deadline - time.monotonic()))
        summary["goals"] = goals(goals_from)
        # written after every step, so that a check stopped from outside still leaves what it had
        (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        (out / "summary.md").write_text(markdown(summary))
    failed = [row["step"] for row in summary["steps"] if not row["passed"]]
    outcome = f"FAILED steps: {', '.join(failed)}" if failed else "all steps passed"
    print(f"[gpu_check] {outcome}; see {out / 'summary.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
