"""The user's day through the real CLI: a sweep of none / fastv / himap on the three bundled benchmarks, its
leaderboard built from the result files (a column per benchmark's headline metric and their mean), a sweep whose
run fails, bad sweep arguments, and a 2-process accelerate run that must answer, and account cost, exactly like
one process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from lmms_samples import answers

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data" / "scienceqa_img_synth"
SWEEP = [sys.executable, str(REPO / "scripts" / "sweep.py")]
TASK = "scienceqa_img_himap_local"
HEADLINES = {TASK: "exact_match", "pope_synth": "pope_f1_score", "textvqa_synth": "exact_match"}  # the demo's tasks
LIMIT = 12

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not DATA.is_dir(), reason="bundled data not generated")]


def sweep_dir(results: Path) -> Path:
    (folder,) = (results / "runs").iterdir()
    return folder


def result_file(run_dir: Path) -> dict:
    (path,) = run_dir.rglob("*_results.json")
    return json.loads(path.read_text())


def is_empty(value) -> bool:
    return value is None or pd.isna(value)


def cost_records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(run_dir.glob("costs*.jsonl")) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """The README's main job (``scripts/run_demo.sh``) on the first docs: the shipped testbed, its model preset,
    started from another directory than the repository."""
    results = tmp_path_factory.mktemp("results")
    command = [*SWEEP, "--model", "testbed", "--presets", "vanilla,fastv_50,himap_ref", "--tasks", ",".join(HEADLINES)]
    command += ["--limit", str(LIMIT), "--batch-size", "4", "--results", str(results)]
    done = subprocess.run(command, cwd=results, check=True, timeout=900, capture_output=True, text=True)
    return sweep_dir(results), done


def test_each_preset_gets_its_own_run_folder(sweep) -> None:
    folder, _ = sweep
    manifest = json.loads((folder / "sweep.json").read_text())
    assert [run["preset"] for run in manifest["runs"]] == ["vanilla", "fastv_50", "himap_ref"]
    assert {run["status"] for run in manifest["runs"]} == {"ok"}
    assert (manifest["limit"], manifest["batch_size"], manifest["device"]) == (LIMIT, 4, "cpu")
    for run in manifest["runs"]:
        run_dir = folder / run["preset"]
        data = result_file(run_dir)
        costs = cost_records(run_dir)
        assert len(costs) == LIMIT * len(HEADLINES) and len({cost["run_id"] for cost in costs}) == 1
        for task, metric in HEADLINES.items():
            assert data["results"][task][f"{metric},none"] is not None
            own = [cost["flops_ratio"] for cost in costs if cost["task"] == task]
            assert len(own) == LIMIT
            assert data["throughput"][f"avg_flops_ratio:{task}"] == pytest.approx(sum(own) / LIMIT)
        assert (run_dir / "lmms_eval.log").read_text().count("Model Responding") >= 1


def test_the_sweep_prints_and_writes_its_own_leaderboard(sweep) -> None:
    folder, done = sweep
    table = (folder / "leaderboard.md").read_text()
    assert table in done.stdout
    board = pd.DataFrame(json.loads((folder / "leaderboard.json").read_text()))
    assert list(board["method"]) == ["none", "fastv", "himap"] and set(board["sweep"]) == {folder.name}
    assert set(board["n"]) == {LIMIT * len(HEADLINES)} and set(board["limit"].astype(str)) == {str(LIMIT)}
    rows = {row["method"]: row for row in board.to_dict(orient="records")}
    for row in rows.values():
        data = json.loads(Path(row["source"]).read_text())
        scores = [data["results"][task][f"{metric},none"] for task, metric in HEADLINES.items()]
        assert [row[f"{task} {metric}"] for task, metric in HEADLINES.items()] == scores
        assert row["mean"] == pytest.approx(sum(scores) / len(scores))
        throughput = data["throughput"]
        assert row["FLOPs ratio"] == pytest.approx(sum(throughput[f"avg_flops_ratio:{t}"] for t in HEADLINES) / 3)
        assert row["latency (s/example)"] == pytest.approx(sum(throughput[f"avg_latency_s:{t}"] for t in HEADLINES) / 3)
        assert row["speed-up vs none"] == pytest.approx(
            rows["none"]["latency (s/example)"] / row["latency (s/example)"]
        )
    assert rows["none"]["FLOPs ratio"] == pytest.approx(1.0)
    assert rows["himap"]["FLOPs ratio"] < rows["fastv"]["FLOPs ratio"] < 1.0
    # the comparisons read lmms-eval's own samples files: every pruned row against the sweep's vanilla run
    for method in ("fastv", "himap"):
        assert 0 <= rows[method]["agreement vs none"] <= 1
        low, high = rows[method]["Δ mean vs none low"], rows[method]["Δ mean vs none high"]
        assert low <= rows[method]["Δ mean vs none"] <= high
        assert rows[method]["mean"] - rows["none"]["mean"] == pytest.approx(rows[method]["Δ mean vs none"])
        for task, metric in HEADLINES.items():
            assert 0 < rows[method][f"{task} {metric} parsed"] <= 1
    assert is_empty(rows["none"]["agreement vs none"])
    assert (folder / "leaderboard.png").is_file()


def test_a_failed_run_fails_the_sweep_and_shows_in_its_table(tmp_path: Path) -> None:
    """lmms-eval logs the error and exits 0; the sweep must read the missing results file as a failure."""
    command = [*SWEEP, "--model", "testbed", "--presets", "vanilla", "--tasks", TASK, "--limit", "2"]
    done = subprocess.run(
        [*command, "--model-args", "k1=3", "--results", str(tmp_path)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 1
    error = "k1 is not an argument of method=none (it takes no pruning arguments)"
    assert f"failed runs: vanilla (failed: ValueError: {error})" in done.stderr
    board = pd.read_csv(sweep_dir(tmp_path) / "leaderboard.csv", keep_default_na=False)
    assert list(board["status"]) == [f"failed: ValueError: {error}"]
    assert f"{TASK} exact_match" not in board.columns  # no run of the sweep produced a score


def test_two_processes_answer_and_count_like_one(tiny_llava_dir: Path, tmp_path: Path) -> None:
    common = [*SWEEP, "--model", str(tiny_llava_dir), "--presets", "himap_ref", "--tasks", TASK, "--cpu"]
    common += ["--model-args", "dtype=float64", "--limit", str(LIMIT), "--batch-size", "2"]  # float64: no near-ties
    single, double = tmp_path / "one", tmp_path / "two"
    subprocess.run([*common, "--results", str(single)], check=True, timeout=900, capture_output=True)
    subprocess.run([*common, "--num-processes", "2", "--results", str(double)], check=True, timeout=900)
    one_dir, two_dir = sweep_dir(single) / "himap_ref", sweep_dir(double) / "himap_ref"
    assert sorted(path.name for path in two_dir.glob("costs*.jsonl")) == ["costs.rank0.jsonl", "costs.rank1.jsonl"]
    assert all(path.read_text() for path in two_dir.glob("costs*.jsonl"))  # both ranks really ran examples
    assert answers(two_dir, TASK) == answers(one_dir, TASK) and len(answers(one_dir, TASK)) == LIMIT
    one, two = result_file(one_dir), result_file(two_dir)
    assert two["results"][TASK] == one["results"][TASK]
    assert two["throughput"][f"avg_flops_ratio:{TASK}"] == pytest.approx(one["throughput"][f"avg_flops_ratio:{TASK}"])
    assert two["throughput"]["total_gen_tokens"] == one["throughput"]["total_gen_tokens"]
    records = cost_records(two_dir)
    assert len(records) == LIMIT
    assert two["throughput"]["avg_latency"] == pytest.approx(sum(r["latency_s"] for r in records) / LIMIT)
    assert json.loads((sweep_dir(double) / "sweep.json").read_text())["device"] == "cpu x2"


def test_a_typo_in_a_probe_setting_fails_the_run_instead_of_running_the_default(tmp_path: Path) -> None:
    """``--gen_kwargs flw=img2img`` used to run the default flow (img2txt) under the user's label."""
    command = [str(Path(sys.executable).with_name("lmms-eval")), "eval", "--model", "himap_llava"]
    command += ["--model_args", f"pretrained={REPO / 'himap_lmms' / 'testbed' / 'llava-testbed'},dtype=float32"]
    command += ["--tasks", "himap_disruption", "--include_path", str(REPO / "tasks"), "--limit", "1"]
    command += ["--gen_kwargs", "flw=img2img", "--output_path", str(tmp_path / "out")]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert "gen_kwargs flw='img2img' is not a setting of the disruption probe" in done.stdout + done.stderr
    assert not list(tmp_path.rglob("*_results.json"))
