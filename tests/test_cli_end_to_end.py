"""The user's day through the real CLI: a sweep of none / fastv / himap on the bundled data, the leaderboard
built from its result files, and a 2-process accelerate run that must answer exactly like one process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data" / "scienceqa_img_synth"
BIN = Path(sys.executable).parent
TASK = "scienceqa_img_himap_local"
LIMIT = 12

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="bundled data not generated")


def result_file(run_dir: Path) -> dict:
    (path,) = run_dir.rglob("*_results.json")
    return json.loads(path.read_text())


def answers(run_dir: Path) -> dict[int, str]:
    """doc_id -> the model's raw answer, from lmms-eval's samples log."""
    (path,) = run_dir.rglob(f"*_samples_{TASK}.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {row["doc_id"]: row["filtered_resps"] for row in rows}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's main job (``scripts/run_demo.sh``) on the first docs: the shipped testbed, its model preset."""
    results = tmp_path_factory.mktemp("results")
    command = [sys.executable, str(REPO / "scripts" / "sweep.py"), "--model", "testbed"]
    command += ["--presets", "vanilla,fastv_50,himap_ref", "--tasks", TASK, "--limit", str(LIMIT)]
    command += ["--batch-size", "4", "--results", str(results)]
    subprocess.run(command, cwd=REPO, check=True, timeout=900)
    return results


def test_each_preset_gets_its_own_run_folder(sweep: Path) -> None:
    runs = sorted((sweep / "runs").iterdir())
    assert len(runs) == 3
    assert {preset for preset in ("vanilla", "fastv_50", "himap_ref") for run in runs if run.name.endswith(preset)} == {
        "vanilla",
        "fastv_50",
        "himap_ref",
    }
    for run in runs:
        data = result_file(run)
        assert data["results"][TASK]["exact_match,none"] is not None
        costs = [json.loads(line) for line in (run / "costs.jsonl").read_text().splitlines()]
        assert len(costs) == LIMIT
        assert data["throughput"][f"avg_flops_ratio:{TASK}"] == pytest.approx(
            sum(cost["flops_ratio"] for cost in costs) / LIMIT
        )
        assert (run / "command.txt").read_text().startswith(str(BIN / "lmms-eval"))


def test_leaderboard_cells_equal_the_result_files(sweep: Path) -> None:
    board = json.loads((sweep / "leaderboard.json").read_text())
    assert (sweep / "leaderboard.md").read_text().count("\n") == 2 + len(board["rows"])
    rows = {row["method"]: row for row in board["rows"]}
    assert set(rows) == {"none", "fastv", "himap"}
    for row in rows.values():
        data = result_file(Path(row["source"]).parent)
        assert row["scores"][TASK] == data["results"][TASK]["exact_match,none"]
        assert row["flops_ratio"] == pytest.approx(data["throughput"][f"avg_flops_ratio:{TASK}"])
        assert row["latency_s"] == pytest.approx(data["throughput"][f"avg_latency_s:{TASK}"])
        assert row["speedup"] == pytest.approx(rows["none"]["latency_s"] / row["latency_s"])
    assert rows["none"]["flops_ratio"] == pytest.approx(1.0)
    assert rows["himap"]["flops_ratio"] < rows["fastv"]["flops_ratio"] < 1.0


def test_two_processes_answer_like_one(tiny_llava_dir: Path, tmp_path: Path) -> None:
    model_args = f"pretrained={tiny_llava_dir},method=himap,dtype=float64"  # no near-ties between batchings
    common = ["--model", "himap_llava", "--model_args", model_args, "--tasks", TASK]
    common += ["--include_path", str(REPO / "tasks"), "--limit", str(LIMIT), "--batch_size", "2", "--log_samples"]
    single, double = tmp_path / "one", tmp_path / "two"
    subprocess.run([str(BIN / "lmms-eval"), "eval", *common, "--output_path", str(single)], cwd=REPO, check=True)
    launcher = [str(BIN / "accelerate"), "launch", "--cpu", "--num_processes=2", "-m", "lmms_eval"]
    subprocess.run([*launcher, *common, "--output_path", str(double)], cwd=REPO, check=True, timeout=900)
    assert answers(double) == answers(single)
    assert len(answers(single)) == LIMIT
    one, two = result_file(single), result_file(double)
    assert two["results"][TASK] == one["results"][TASK]
    assert two["throughput"][f"avg_flops_ratio:{TASK}"] == pytest.approx(one["throughput"][f"avg_flops_ratio:{TASK}"])
