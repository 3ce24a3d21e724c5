"""A method defined outside this repository, in the one file docs/adding_a_method.md shows, installed as a package
(a module and its dist-info with an entry point of group ``himap_lmms.methods``, on PYTHONPATH), runs through the
lmms-eval CLI on the testbed and lands in the leaderboard; in-process, the registry finds it like a built-in."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import QUESTIONS, draw_image, encode

from himap_lmms.compat import image_token_id
from himap_lmms.leaderboard import collect_runs
from himap_lmms.pruning import ENTRY_POINT_GROUP, PrunedLlava, PruningConfig, all_methods, pruning_arguments

REPO = Path(__file__).resolve().parent.parent
TESTBED = REPO / "himap_lmms" / "testbed" / "llava-testbed"
TASK = "scienceqa_img_himap_local"


def install_example(target: Path) -> Path:
    """The docs' example as an installed distribution in ``target``: its module and a dist-info declaring it."""
    doc = (REPO / "docs" / "adding_a_method.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    target.mkdir(parents=True, exist_ok=True)
    (target / "hidden_norm_method.py").write_text(code)
    info = target / "hidden_norm_method-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hidden-norm-method\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nhidden_norm = hidden_norm_method:SPEC\n")
    return target


@pytest.fixture
def installed(tmp_path, monkeypatch) -> Path:
    target = install_example(tmp_path / "site")
    monkeypatch.syspath_prepend(str(target))
    return target


def test_the_registry_finds_an_installed_method(installed, model64, processor) -> None:
    assert "hidden_norm" in all_methods() and {"k", "ratio"} <= pruning_arguments()
    config = PruningConfig.from_args("hidden_norm", k="3", ratio="0.5")
    assert config.describe() == "hidden_norm(k=3,ratio=0.5)"
    inputs = encode(processor, QUESTIONS[:2], [draw_image(0), draw_image(1)])
    result = PrunedLlava(model64, config).generate(**inputs, max_new_tokens=1)
    padding = (inputs["attention_mask"] == 0).sum(dim=1).tolist()
    for b in range(2):  # the 288 image tokens with the largest hidden-state norm entering layer 3, by hand
        real = inputs["attention_mask"][b].bool()
        ids = inputs["input_ids"][b][real][None]
        image = (ids[0] == image_token_id(model64.config)).nonzero().flatten()
        with torch.no_grad():
            states = model64(input_ids=ids, pixel_values=inputs["pixel_values"][b : b + 1], output_hidden_states=True)
        norms = states.hidden_states[3][0, image].float().norm(dim=-1)
        expected = image[norms.topk(288).indices.sort().values]
        assert (result.stats.kept[0][b] - padding[b]).tolist() == expected.tolist()
    with pytest.raises(ValueError, match=r"ratio=2.0 is out of range: it must be in \(0, 1\]"):
        PruningConfig.from_args("hidden_norm", ratio="2")
    with pytest.raises(ValueError, match=r"pivots is not an argument of method=hidden_norm \(it takes k, ratio\)"):
        PruningConfig.from_args("hidden_norm", pivots="2")


def test_an_installed_method_runs_through_the_lmms_eval_cli_into_the_leaderboard(tmp_path, monkeypatch) -> None:
    site = install_example(tmp_path / "site")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "out"
    command = [str(Path(sys.executable).with_name("lmms-eval")), "eval", "--model", "himap_llava"]
    command += ["--model_args", f"pretrained={TESTBED},dtype=float32,method=hidden_norm,k=2,ratio=0.25"]
    command += ["--tasks", TASK, "--include_path", str(REPO / "tasks"), "--limit", "4", "--batch_size", "2"]
    command += ["--output_path", str(out)]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)  # data/ is relative
    found = list(out.rglob("*_results.json"))  # lmms-eval exits 0 even when the run failed
    assert len(found) == 1, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(found[0].read_text())
    assert results["results"][TASK]["exact_match,none"] >= 0
    assert 0 < results["throughput"][f"avg_flops_ratio:{TASK}"] < 0.6  # a quarter of the image tokens from layer 2
    board = tmp_path / "board"
    leaderboard = [str(Path(sys.executable).with_name("himap-leaderboard")), str(out), "--out", str(board)]
    subprocess.run(leaderboard, cwd=tmp_path, env=env, check=True, capture_output=True, text=True, timeout=300)
    table = board / "leaderboard.csv"
    (row,) = pd.read_csv(table).to_dict("records")
    assert row["method"] == "hidden_norm" and row["settings"] == "dtype=float32"
    assert row["schedule"] == "hidden_norm(k=2,ratio=0.25)"  # resolved by the installed method's own build
    # its knobs are pruning arguments: a vanilla run with dtype=float32 is the one to compare it with
    monkeypatch.syspath_prepend(str(site))
    (run,) = collect_runs([out])
    assert dict(run.settings) == {"dtype": "float32"}
