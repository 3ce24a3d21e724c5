"""The sweep's pieces that decide what a run did: its judgement of a run folder, the error it reports, and the
lmms-eval config files it generates from the presets. (Real sweeps run in test_cli_end_to_end.py.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from himap_lmms import presets, sweep

TASK = "scienceqa_img_himap_local"
FAILED_LOG = """\
\x1b[32m2026-12-01 15:14:32\x1b[0m | INFO | lmms_eval.__main__:cli_evaluate_single:731 - Selected Tasks: ['x']
Traceback (most recent call last):
  File "/x/lmms_model.py", line 103, in __init__
ValueError: k1 is not an argument of method=none (it takes no pruning arguments)
\x1b[31m2026-12-01 15:14:33 | ERROR | lmms_eval.__main__:cli_evaluate:614 - Error during evaluation: k1 is not...\x1b[0m
"""


def write_results(run_dir: Path, results: dict, samples: dict) -> Path:
    path = run_dir / "model" / "20261201_101500_results.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"results": results, "group_subtasks": {}, "n-samples": samples}))
    return path


def test_a_run_without_results_failed_with_its_exception_line(tmp_path: Path) -> None:
    log = tmp_path / "lmms_eval.log"
    log.write_text(FAILED_LOG)
    status, results = sweep.judge_run(tmp_path / "vanilla", (TASK,), log)
    assert status == "failed: ValueError: k1 is not an argument of method=none (it takes no pruning arguments)"
    assert results is None


def test_a_run_needs_an_entry_and_documents_for_every_task(tmp_path: Path) -> None:
    log = tmp_path / "lmms_eval.log"
    log.write_text("ERROR | something broke\n")
    run = tmp_path / "sweep" / "himap"
    path = write_results(run, {TASK: {"exact_match,none": 0.5}}, {TASK: {"original": 400, "effective": 400}})
    assert sweep.judge_run(run, (TASK,), log) == ("ok", str(path.relative_to(run.parent)))
    assert sweep.judge_run(run, (TASK, "pope"), log)[0] == "failed: no results for task pope (ERROR | something broke)"
    path.write_text(json.dumps({"results": {TASK: {}}, "n-samples": {TASK: {"original": 400, "effective": 0}}}))
    assert sweep.judge_run(run, (TASK,), log)[0] == f"failed: task {TASK} evaluated no documents"


def test_a_results_file_cut_short_is_a_failed_run(tmp_path: Path) -> None:
    """A run killed while lmms-eval wrote its results leaves a partial file; the sweep must not crash on it."""
    log = tmp_path / "lmms_eval.log"
    log.write_text("")
    run = tmp_path / "sweep" / "himap"
    path = write_results(run, {TASK: {"exact_match,none": 0.5}}, {TASK: {"original": 400, "effective": 400}})
    path.write_text(path.read_text()[:20])
    status, results = sweep.judge_run(run, (TASK,), log)
    assert status.startswith(f"failed: its results file {path} is unreadable: ") and results is None


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"limit": 0}, "--limit=0 must be >= 1"),
        ({"num_processes": 0}, "--num-processes=0 must be >= 1"),
        ({"threads": 0}, "--threads=0 must be >= 1"),
        ({"tasks": ()}, "--tasks='' must name at least one"),
        ({"presets": ("vanilla", "vanilla")}, "--presets='vanilla,vanilla' names a preset twice"),
        ({"model_args": "batch_size=0"}, "sets batch_size: give it as --batch-size"),
    ],
)
def test_a_plan_is_checked_when_made(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        sweep.SweepPlan(**{"model": "testbed", "presets": ("vanilla",), "tasks": (TASK,), **settings})


def test_the_bundled_model_is_found_from_any_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    name, args = presets.resolve_model("testbed")
    assert name == "testbed" and Path(args["pretrained"]).is_dir() and Path(args["pretrained"]).is_absolute()
    assert presets.resolve_model("llava-1.5-7b")[1]["pretrained"] == "llava-hf/llava-1.5-7b-hf"  # a hub id stays


def test_the_qwen_preset_and_checkpoints_run_through_their_own_lmms_eval_model(tmp_path: Path) -> None:
    name, args = presets.resolve_model("qwen2.5-vl-7b")
    assert args == {"pretrained": "Qwen/Qwen2.5-VL-7B-Instruct", "dtype": "bfloat16"}  # `model` is no model_arg
    plan = sweep.SweepPlan("qwen2.5-vl-7b", ("vanilla",), (TASK,))
    command = sweep.lmms_eval_command(plan, Path("/tmp/run"), "method=none")
    assert command[command.index("--model") + 1] == "himap_qwen2_5_vl"
    (tmp_path / "config.json").write_text('{"model_type": "qwen2_5_vl"}')
    assert presets.model_backend(str(tmp_path)) == "himap_qwen2_5_vl"
    assert presets.model_backend("testbed") == "himap_llava"


def test_several_cpu_processes_use_accelerates_multi_process_mode() -> None:
    plan = sweep.SweepPlan("testbed", ("vanilla",), (TASK,), num_processes=2, cpu=True, threads=1)
    command = sweep.lmms_eval_command(plan, Path("/tmp/run"), "method=none")
    assert command[1:4] == ["launch", "--multi_gpu", "--num_processes=2"]
    assert sweep.run_environment(plan)["ACCELERATE_USE_CPU"] == "1"
    assert sweep.run_environment(plan)["OMP_NUM_THREADS"] == "1"


@pytest.mark.parametrize("model", ["llava-1.5-7b", "llava-1.5-13b"])
def test_the_lmms_eval_config_files_follow_the_presets(model: str) -> None:
    path = presets.CONFIGS / "lmms_eval" / f"{model}_benchmarks.yaml"
    command = path.read_text().splitlines()[1].removeprefix("#   python scripts/sweep.py ").split()
    options = dict(zip(command[0::2], command[1::2]))
    plan = sweep.SweepPlan(
        options["--model"],
        tuple(options["--presets"].split(",")),
        tuple(options["--tasks"].split(",")),
        batch_size=int(options["--batch-size"]),
    )
    assert path.read_text() == sweep.lmms_eval_config(plan)
    methods = yaml.safe_load((presets.CONFIGS / "methods.yaml").read_text())
    for run, preset in zip(yaml.safe_load(path.read_text()), plan.presets):
        assert run["model_args"].endswith(",".join(f"{k}={v}" for k, v in methods[preset].items()))
