"""``scripts/gpu_check.sh --dry``: every step of the GPU check runs on the CPU at tiny sizes and writes its files.

CI has no GPU, so this is what keeps the one-command GPU check working: the same script, steps, file layout and
judges, with the CPU, the ``tiny`` bench shape and 8 documents. The judges themselves are checked on files that
must fail them, so a check that passes everything would not pass here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from himap_lmms import gpu_check
from himap_lmms.bench.goals import CPU_GOALS, GPU_GOALS, check_goals, goal_set_for

pytestmark = pytest.mark.slow  # the whole GPU check, dry, in a subprocess

REPO = Path(__file__).resolve().parent.parent

STEPS = ["engine-float32-sdpa", "bench-tiny", "lmms-vanilla", "lmms-himap_ref"]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("gpu_check")
    command = ["bash", str(REPO / "scripts" / "gpu_check.sh"), "--dry", str(out)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600), out


def test_every_step_runs_and_passes(dry_run) -> None:
    run, out = dry_run
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.rstrip().splitlines()[-1].startswith("[gpu_check] all steps passed")
    summary = json.loads((out / "summary.json").read_text())
    assert [row["step"] for row in summary["steps"]] == STEPS
    assert all(row["passed"] and row["returncode"] == 0 for row in summary["steps"])
    assert summary["environment"]["transformers"].startswith("5.24.")
    table = (out / "summary.md").read_text()
    assert all(f"| {step} | ok |" in table for step in STEPS)
    assert all((out / row["log"]).stat().st_size > 0 for row in summary["steps"])


def test_engine_tests_ran_on_the_requested_target(dry_run) -> None:
    _, out = dry_run
    report = out / "engine" / "float32-sdpa.xml"
    assert gpu_check.judge_junit(report, "cpu float32 sdpa") is None
    assert "engine target" in gpu_check.judge_junit(report, "cuda bfloat16 sdpa")


def test_bench_has_every_method_and_sane_flops_ratios(dry_run) -> None:
    _, out = dry_run
    bench = json.loads((out / "bench" / "tiny" / "bench.json").read_text())
    assert bench["settings"]["device"] == "cpu"
    rows = bench["batches"]["1"]
    assert list(rows) == list(gpu_check.BENCH_METHODS)
    ratios = {name: row["flops_ratio_formula_swiglu"] for name, row in rows.items()}
    assert ratios["vanilla"] == 1.0
    assert 0 < ratios["himap_25"] < ratios["himap_ref"] < 1
    for row in rows.values():
        assert row["flops_ratio_counted"] == pytest.approx(row["flops_ratio_formula_swiglu"], rel=0.05)
    assert bench["reference_style"]["speedup_total"]["median"] > 0
    assert (out / "bench" / "tiny" / "bench.md").is_file()


def test_summary_reports_the_goals_measured_on_the_bench(dry_run) -> None:
    _, out = dry_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["goals_from"] == "bench/tiny/bench.json"
    assert summary["goals"] == gpu_check.goals(out / "bench" / "tiny" / "bench.json")
    assert [goal["goal"].split(":")[0] for goal in summary["goals"]] == ["batch 1"] * 3  # no end-to-end goal at 1
    assert "## Goals: HiMAP 2/288 8/72 against vanilla" in (out / "summary.md").read_text()


def test_goals_at_batch_8_include_end_to_end(tmp_path: Path) -> None:
    def row(efficiency: float, total: float, peak: int) -> dict:
        return {
            "prefill_efficiency": efficiency,
            "prefill_speedup": {"median": 3.0 * efficiency},
            "inverse_flops_ratio": 3.0,
            "overhead_share": {"median": 0.01},
            "total_speedup": {"median": total},
            "cuda_peak_bytes": {"max": peak},
        }

    bench = {
        "settings": {"new_tokens": 8},
        "batches": {"8": {"vanilla": row(1, 1, 2**30), "himap_ref": row(0.9, 2.6, 2**29)}},
    }
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    assert [(goal["goal"], goal["passed"]) for goal in gpu_check.goals(tmp_path / "bench.json")] == [
        ("batch 8: prefill speed-up >= 0.95 x the FLOPs bound (1/FLOPs ratio, swiglu)", False),
        ("batch 8: pruning overhead (scoring + top-k + compaction) < 2% of the prefill", True),
        ("batch 8: end-to-end speed-up, 8 new tokens >= 2.5x", True),
        ("batch 8: peak memory below vanilla's", True),
    ]


def test_one_goal_check_with_named_thresholds_for_the_bench_and_the_gpu_check(dry_run) -> None:
    """The bench records the goals of its device's set; the GPU check reads the same file with the GPU set, so a
    goal's text (which names its threshold) means one thing wherever it is printed."""
    _, out = dry_run
    bench = json.loads((out / "bench" / "tiny" / "bench.json").read_text())
    assert bench["goal_set"] == "cpu" and goal_set_for("cpu") is CPU_GOALS and goal_set_for("cuda:0") is GPU_GOALS
    assert bench["goals"] == check_goals(bench, CPU_GOALS)
    by_text = {g["goal"]: g["passed"] for g in check_goals(bench, CPU_GOALS)}
    for goal in gpu_check.goals(out / "bench" / "tiny" / "bench.json"):
        assert by_text.get(goal["goal"], goal["passed"]) == goal["passed"]
    assert {GPU_GOALS.prefill_efficiency, CPU_GOALS.prefill_efficiency} == {0.95, 0.85}


@pytest.mark.parametrize("preset", gpu_check.LMMS_PRESETS)
def test_lmms_eval_runs_have_the_task_and_the_cost_metrics(dry_run, preset) -> None:
    _, out = dry_run
    (path,) = (out / "lmms" / preset).rglob("*_results.json")
    results = json.loads(path.read_text())
    assert 0 <= results["results"][gpu_check.TASK]["exact_match,none"] <= 1
    throughput = results["throughput"]
    assert throughput["avg_prefill_s"] > 0
    if preset == "vanilla":
        assert throughput["avg_flops_ratio"] == pytest.approx(1.0)
    else:
        assert 0 < throughput["avg_flops_ratio"] < 1
    assert len((out / "lmms" / preset / "costs.jsonl").read_text().splitlines()) == 8


def test_judges_name_what_is_wrong(tmp_path: Path) -> None:
    run, log = tmp_path / "run", tmp_path / "run.log"
    log.write_text("Traceback (most recent call last):\nValueError: dtype='float13' is not a torch dtype\n")
    assert gpu_check.judge_lmms(run, log) == "failed: ValueError: dtype='float13' is not a torch dtype"
    run.mkdir()
    results = {"results": {gpu_check.TASK: {}}, "n-samples": {gpu_check.TASK: {"effective": 8}}, "throughput": {}}
    (run / "x_results.json").write_text(json.dumps(results))
    assert gpu_check.judge_lmms(run, log).startswith("run/x_results.json lacks throughput keys ['avg_flops_ratio'")
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"batches": {"1": {"vanilla": {}}}, "reference_style": {}}))
    assert gpu_check.judge_bench(bench, ["1"]) == f"batch 1 lacks ['himap_25', 'himap_ref'] in {bench}"
    report = tmp_path / "report.xml"
    report.write_text('<testsuites><testsuite tests="3" failures="1" errors="0"/></testsuites>')
    assert gpu_check.judge_junit(report, "cpu float32 sdpa") == "1 of 3 tests failed or errored (report.xml)"


def test_a_failing_step_fails_the_check_and_is_named(tmp_path: Path, monkeypatch, capsys) -> None:
    """A step whose files are wrong fails even when its process exits 0 (as lmms-eval does after a failed run)."""
    exits_zero = gpu_check.Step("quiet-failure", [sys.executable, "-c", "pass"], lambda: "no results", timeout=60)
    crashes = gpu_check.Step("crash", [sys.executable, "-c", "raise SystemExit(3)"], lambda: None, timeout=60)
    fine = gpu_check.Step("fine", [sys.executable, "-c", "pass"], lambda: None, timeout=60)
    monkeypatch.setattr(gpu_check, "engine_steps", lambda *args: [exits_zero, crashes, fine])
    monkeypatch.setattr(gpu_check, "bench_steps", lambda *args: [])
    monkeypatch.setattr(gpu_check, "lmms_steps", lambda *args: [])
    assert gpu_check.main(["--dry", str(tmp_path)]) == 1
    assert (
        capsys.readouterr().out.rstrip().splitlines()[-1].startswith("[gpu_check] FAILED steps: quiet-failure, crash;")
    )
    rows = json.loads((tmp_path / "summary.json").read_text())["steps"]
    assert [(row["step"], row["passed"], row["problem"]) for row in rows] == [
        ("quiet-failure", False, "no results"),
        ("crash", False, "exited with 3"),
        ("fine", True, None),
    ]


def test_an_output_folder_in_use_is_refused(tmp_path: Path, capsys) -> None:
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(SystemExit):
        gpu_check.main(["--dry", str(tmp_path)])
    assert f"{tmp_path} is not empty" in capsys.readouterr().err


def test_steps_past_the_budget_are_not_run(tmp_path: Path) -> None:
    step = gpu_check.Step("late", [sys.executable, "-c", "raise SystemExit(1)"], lambda: None, timeout=60)
    row = gpu_check.run_step(step, tmp_path, seconds_left=0)
    assert (row["passed"], row["problem"]) == (False, "not run: the check's time budget was spent")
    slow = gpu_check.Step("slow", [sys.executable, "-c", "import time; time.sleep(30)"], lambda: None, timeout=60)
    row = gpu_check.run_step(slow, tmp_path, seconds_left=1)
    assert (row["passed"], row["problem"]) == (False, "timed out after 1 s")


def test_the_gpu_bench_steps_time_llava_and_the_grouped_query_decoder_at_shapes_the_benchmark_knows(tmp_path) -> None:
    """Not run here (no GPU): the steps' command lines, parsed as bench_cost.py parses them."""
    from himap_lmms.model_shapes import LLAVA_SHAPES

    steps = gpu_check.bench_steps(tmp_path, "cuda", dry=False)
    assert [step.name for step in steps] == ["bench-7b", "bench-13b", "bench-qwen2.5-vl-7b"]
    for step in steps:
        shape = step.command[step.command.index("--shape") + 1]
        assert shape in LLAVA_SHAPES and LLAVA_SHAPES[shape].layers >= 28, step.name
    assert LLAVA_SHAPES["qwen2.5-vl-7b"].kv_heads == 4
