"""``lmms-eval eval --model himap_llava_onevision`` on the tiny LLaVA-OneVision checkpoint through the real CLI: the
three bundled benchmarks run end to end under HiMAP and write results with their scores and a FLOPs ratio below 1,
and ``method=none`` answers exactly as stock lmms-eval's ``llava_hf`` does on the same docs."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import QUESTIONS
from lmms_samples import answers

from himap_lmms.tiny_vlms import build_tiny_llava_onevision

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data" / "scienceqa_img_synth"
TASK = "scienceqa_img_himap_local"
HEADLINES = {TASK: "exact_match", "pope_synth": "pope_f1_score", "textvqa_synth": "exact_match"}
LIMIT = 6

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not DATA.is_dir(), reason="bundled data not generated")]


@pytest.fixture(scope="module")
def onevision_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llava_onevision(tmp_path_factory.mktemp("llava_onevision"), corpus=QUESTIONS)


def lmms_eval(model: str, model_args: str, tasks: str, output: Path) -> Path:
    """Run the CLI (the module of this interpreter, which sees this checkout's entry points) and return the run's
    folder."""
    command = [sys.executable, "-m", "lmms_eval", "eval", "--model", model, "--model_args", model_args]
    command += ["--tasks", tasks, "--include_path", str(REPO / "tasks"), "--limit", str(LIMIT), "--batch_size", "1"]
    command += ["--log_samples", "--output_path", str(output)]
    subprocess.run(command, cwd=REPO, check=True, timeout=900, capture_output=True)
    (results,) = output.rglob("*_results.json")
    return results.parent


def test_himap_runs_the_bundled_benchmarks(onevision_dir: Path, tmp_path: Path) -> None:
    args = f"pretrained={onevision_dir},method=himap,device=cpu,dtype=float32,cost_log={tmp_path / 'costs.jsonl'}"
    run = lmms_eval("himap_llava_onevision", args, ",".join(HEADLINES), tmp_path / "out")
    (path,) = run.glob("*_results.json")
    data = json.loads(path.read_text())
    for task, metric in HEADLINES.items():
        assert 0 <= data["results"][task][f"{metric},none"] <= 1
        assert 0 < data["throughput"][f"avg_flops_ratio:{task}"] < 1
    records = [json.loads(line) for line in (tmp_path / "costs.jsonl").read_text().splitlines()]
    assert len(records) == LIMIT * len(HEADLINES)
    assert {record["method"] for record in records} == {"himap(k1=2,ratio1=0.5,k2=8,ratio2=0.125)"}


NO_DECORD = "lmms-eval's llava_hf class imports decord (pip install -e '.[stock]')"


@pytest.mark.skipif(importlib.util.find_spec("decord") is None, reason=NO_DECORD)
def test_none_answers_as_stock_llava_hf(onevision_dir: Path, tmp_path: Path) -> None:
    """Both through the CLI, which strips every answer (docs/models.md), on the same docs and prompts."""
    common = f"pretrained={onevision_dir},device=cpu,dtype=float32"
    ours = lmms_eval("himap_llava_onevision", f"{common},method=none", TASK, tmp_path / "ours")
    stock = lmms_eval("llava_hf", f"{common},device_map=cpu", TASK, tmp_path / "stock")
    assert answers(ours, TASK) == answers(stock, TASK) and len(answers(ours, TASK)) == LIMIT
