"""A method defined outside this repository, in the one file docs/adding_a_method.md shows, installed as a package
(a module and its dist-info with an entry point of group ``himap_lmms.methods``, on PYTHONPATH), runs through the
lmms-eval CLI on the testbed and lands in the leaderboard; in-process, the registry finds it like a built-in. A
presets file of the user's own (docs/sweeps.md) puts it in a sweep and in the cost benchmark."""

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
import yaml
from conftest import QUESTIONS, draw_image, encode

from himap_lmms import presets, sweep
from himap_lmms.bench import BenchSettings, run_benchmark
from himap_lmms.compat import image_token_id
from himap_lmms.cost import prefill_cost
from himap_lmms.leaderboard import collect_runs
from himap_lmms.model_shapes import LLAVA_SHAPES, PREFIX_TOKENS, TEXT_TOKENS
from himap_lmms.pruning import (
    ENTRY_POINT_GROUP,
    PrunedLlava,
    PruneStep,
    PruningConfig,
    all_methods,
    pruning_arguments,
)

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


MINE = {"hidden_norm_25": {"method": "hidden_norm", "k": 2, "ratio": 0.25}}


@pytest.fixture
def my_presets(installed, tmp_path, monkeypatch) -> Path:
    """The user's presets file naming the installed method; lmms-eval processes started from here find it too."""
    path = tmp_path / "my_methods.yaml"
    path.write_text(yaml.safe_dump(MINE, sort_keys=False))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(installed), str(REPO), os.environ.get("PYTHONPATH", "")]))
    return path


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
    with pytest.raises(ValueError, match=r"step scored by 'typo' but its MethodSpec declares no rule .*hidden_norm\)"):
        PrunedLlava(model64, PruningConfig("hidden_norm", (PruneStep(2, "typo", ratio=0.5),)))


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


def test_a_users_presets_file_puts_the_installed_method_in_a_sweep(my_presets, tmp_path) -> None:
    plan = sweep.SweepPlan(
        "testbed", ("hidden_norm_25",), (TASK,), batch_size=2, limit=2, preset_files=(str(my_presets),)
    )
    (run,) = yaml.safe_load(sweep.lmms_eval_config(plan))
    assert run["model_args"].endswith("method=hidden_norm,k=2,ratio=0.25")
    assert f"--presets-file {my_presets} " in sweep.lmms_eval_config(plan).splitlines()[1]
    outcome = sweep.run_sweep(plan, tmp_path / "results")
    entry = outcome.manifest.run("hidden_norm_25")
    assert entry.status == "ok", (outcome.folder / "hidden_norm_25" / "lmms_eval.log").read_text()[-3000:]
    assert "method=hidden_norm,k=2,ratio=0.25" in entry.command
    assert json.loads((outcome.folder / "sweep.json").read_text())["preset_files"] == [str(my_presets)]
    sweep.report(outcome.folder)
    (row,) = pd.read_csv(outcome.folder / "leaderboard.csv").to_dict("records")
    assert (row["method"], row["schedule"]) == ("hidden_norm", "hidden_norm(k=2,ratio=0.25)")
    assert 0 < row["FLOPs ratio"] < 0.6  # a quarter of the image tokens from layer 2


def test_a_users_presets_file_is_checked_naming_the_preset_and_the_file(installed, tmp_path) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({"norm_bad": {"method": "hidden_norm", "ratio": 2}}))
    with pytest.raises(ValueError, match=rf"method preset 'norm_bad' of {mine}: ratio=2.0 is out of range"):
        presets.method_presets(("norm_bad",), (mine,))
    mine.write_text(yaml.safe_dump({"himap_ref": {"method": "hidden_norm"}}))
    with pytest.raises(ValueError, match=rf"method preset 'himap_ref' of {mine} is already defined in .*methods.yaml"):
        presets.method_presets(files=(mine,))
    mine.write_text(yaml.safe_dump(MINE))
    with pytest.raises(ValueError, match=rf"unknown method preset 'norm_9' in .*methods.yaml, {mine}: choose from"):
        presets.method_presets(("norm_9",), (mine,))
    with pytest.raises(ValueError, match=rf"cannot read the method presets file {tmp_path / 'none.yaml'}"):
        presets.method_presets(files=(tmp_path / "none.yaml",))


def test_a_users_presets_file_gets_the_installed_method_a_cost_benchmark_row(my_presets) -> None:
    settings = BenchSettings(
        shape="tiny",
        batch_sizes=(1,),
        repeats=1,
        warmup=0,
        new_tokens=1,
        threads=1,
        progress=False,
        methods=("vanilla", "hidden_norm_25"),
        preset_files=(str(my_presets),),
    )
    results = run_benchmark(settings)
    shape = LLAVA_SHAPES["tiny"]
    text, image = PREFIX_TOKENS + TEXT_TOKENS, shape.num_image_tokens
    assert results["methods"]["hidden_norm_25"]["label"] == "HiddenNorm 2/144 (hidden_norm_25)"
    row = results["batches"]["1"]["hidden_norm_25"]
    tokens = [text + image] * 2 + [text + image // 4] * (shape.layers - 2)  # its schedule: a quarter from layer 2
    assert row["tokens_per_layer"] == tokens
    expected = prefill_cost(tokens, shape.hidden, shape.intermediate, "swiglu", prompt_tokens=text + image)
    assert row["flops_ratio_formula_swiglu"] == pytest.approx(expected.flops_ratio)
    assert row["counted_vs_formula_absolute"] == pytest.approx(0.0, abs=1e-9)
    partner = results["batches"]["1"]["fastv=hidden_norm_25"]  # and a FastV partner at its FLOPs
    assert partner["flops_ratio_formula_swiglu"] == pytest.approx(expected.flops_ratio, abs=0.01)
