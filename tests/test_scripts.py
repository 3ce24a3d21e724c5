"""The scripts' command lines: bad arguments are refused at once, before any model loads or trains, with an
error naming the value and what is allowed; the disruption sweep reads rewritten data afresh."""

from __future__ import annotations

import csv
import runpy
from collections.abc import Callable
from pathlib import Path

import datasets
import pytest
from transformers import LlavaForConditionalGeneration

from himap_lmms.synthetic import generate_records, write_benchmark
from himap_lmms.synthetic.scienceqa import features
from himap_lmms.testbed import TESTBED_PATH

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
HELD_OUT_SEED = 20250317  # the shipped split's seed: the testbed answers these questions well


def script_main(name: str) -> Callable[[list[str]], None]:
    """A script's ``main``, loaded from its file (scripts are not a package)."""
    return runpy.run_path(str(SCRIPTS / f"{name}.py"))["main"]


@pytest.fixture
def no_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a checkpoint or starting to train fails the test: the checks must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(LlavaForConditionalGeneration, "from_pretrained", refuse)
    monkeypatch.setattr("himap_lmms.testbed.train.train", refuse)


@pytest.fixture(scope="module")
def empty_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset directory laid out as the shipped one whose test split has the schema and no rows."""
    split = write_benchmark("scienceqa", tmp_path_factory.mktemp("empty"), 1, seed=HELD_OUT_SEED)
    empty = datasets.Dataset.from_dict({name: [] for name in features()}, features=features())
    empty.to_parquet(str(split))
    return split.parents[1]


def refused(capsys: pytest.CaptureFixture, name: str, argv: list[str]) -> str:
    """Run the script's main on ``argv``; it must exit with argparse's usage error. Returns the message."""
    main = script_main(name)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "0"], "steps=0 is out of range: it must be an integer >= 1"),
        (["--batch-size", "-4"], "batch_size=-4 is out of range: it must be an integer >= 1"),
        (["--dense-turns", "5"], "dense_turns=5 is out of range: it must be an integer in [0, 3]"),
        (["--lr", "0"], "lr=0.0 is out of range: it must be > 0"),
        (["--steps", "two"], "argument --steps: invalid int value: 'two'"),
    ],
)
def test_train_testbed_refuses_bad_settings(no_model_loads, capsys, argv, message) -> None:
    assert message in refused(capsys, "train_testbed", argv)


def test_train_testbed_refuses_a_file_as_output(no_model_loads, capsys, tmp_path) -> None:
    target = tmp_path / "weights.safetensors"
    target.write_text("")
    assert "is a file: it must be a directory" in refused(capsys, "train_testbed", ["--out", str(target)])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--limit", "0"], "argument --limit: 0 is out of range: it must be >= 1"),
        (["--limit", "-5"], "argument --limit: -5 is out of range: it must be >= 1"),
        (["--batch-size", "0"], "argument --batch-size: 0 is out of range: it must be >= 1"),
        (["--saliency-examples", "-1"], "argument --saliency-examples: -1 is out of range: it must be >= 0"),
        (["--threads", "0"], "argument --threads: 0 is out of range: it must be >= 1"),
        (["--data", "no/such/dir"], "argument --data: 'no/such/dir' is not an existing directory"),
        (["--model", "no/such/model"], "argument --model: 'no/such/model' is not an existing directory"),
    ],
)
def test_pruning_study_refuses_bad_arguments(no_model_loads, capsys, tmp_path, argv, message) -> None:
    assert message in refused(capsys, "pruning_study", [*argv, "--out", str(tmp_path)])


def test_pruning_study_refuses_an_empty_dataset(no_model_loads, capsys, tmp_path, empty_data) -> None:
    argv = ["--data", str(empty_data.parent), "--benchmark", "scienceqa", "--out", str(tmp_path)]
    error = refused(capsys, "pruning_study", argv)
    assert f"split 'test' of config 'ScienceQA-IMG' in {str(empty_data)!r} has no rows" in error


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--limit", "0"], "argument --limit: 0 is out of range: it must be >= 1"),
        (["--flows", "img2txt,img2foo"], "flow='img2foo' is not a known flow: choose one of img2txt, img2img, img2rnd"),
        (["--flows", ","], "no flow given"),
        (["--start-layers", "12"], "start_layer=12 is outside [0, 12) for this 12-layer model"),
        (["--start-layers", "-1"], "start_layer=-1 is outside [0, 12)"),
        (["--start-layers", "0:x"], "start layers '0:x' are not understood"),
        (["--start-layers", "8:4"], "no start layer given"),
        (["--end-layer", "12"], "end_layer=12 is outside [0, 12)"),
        (["--max-new-tokens", "0"], "argument --max-new-tokens: 0 is out of range: it must be >= 1"),
        (["--dtype", "float8"], "argument --dtype: invalid choice: 'float8'"),
        (["--data", "no/such/dir"], "argument --data: 'no/such/dir' is not an existing directory"),
        (["--split", "validation"], "has no files 'ScienceQA-IMG/validation-*'"),
    ],
)
def test_disruption_sweep_refuses_bad_arguments(no_model_loads, capsys, tmp_path, argv, message) -> None:
    argv = ["--model", str(TESTBED_PATH), "--out", str(tmp_path), *argv]
    assert message in refused(capsys, "disruption_sweep", argv)


def test_disruption_sweep_refuses_a_directory_without_a_checkpoint(no_model_loads, capsys, tmp_path) -> None:
    argv = ["--model", str(tmp_path), "--out", str(tmp_path / "out")]
    assert f"--model {str(tmp_path)!r} is not a transformers checkpoint" in refused(capsys, "disruption_sweep", argv)


def test_disruption_sweep_refuses_an_empty_dataset(no_model_loads, capsys, tmp_path, empty_data) -> None:
    argv = ["--model", str(TESTBED_PATH), "--data", str(empty_data), "--out", str(tmp_path)]
    assert "has no rows: there is nothing to evaluate" in refused(capsys, "disruption_sweep", argv)


def write_answers(split: Path, shift: int) -> None:
    """Rewrite the test split in place (same file, same directory): four held-out colour questions (a family the
    testbed answers 99 % right), each answer moved ``shift`` options on."""
    records = [r for r in generate_records("scienceqa", 60, seed=HELD_OUT_SEED) if r["category"] == "colour_at"][:4]
    for record in records:
        record["answer"] = (record["answer"] + shift) % len(record["choices"])
    datasets.Dataset.from_list(records, features=features()).to_parquet(str(split))


def test_disruption_sweep_reads_rewritten_data_afresh(tmp_path) -> None:
    """Run, rewrite the data under the same path with other answers, run again: the second run scores the new
    answers, not a cached copy of the old ones."""
    split = write_benchmark("scienceqa", tmp_path / "data", 4, seed=HELD_OUT_SEED)
    data_dir = split.parents[1]
    main = script_main("disruption_sweep")
    argv = ["--model", str(TESTBED_PATH), "--data", str(data_dir), "--flows", "img2rnd", "--start-layers", "11"]
    argv += ["--max-new-tokens", "2", "--dtype", "float32", "--device", "cpu"]

    def undisturbed_accuracy(out: Path) -> float:
        main([*argv, "--out", str(out)])
        with (out / "disruption_sweep.csv").open() as handle:
            return float(next(csv.DictReader(handle))["undisturbed_accuracy"])

    write_answers(split, shift=0)
    before = undisturbed_accuracy(tmp_path / "first")
    write_answers(split, shift=1)
    after = undisturbed_accuracy(tmp_path / "second")
    assert before >= 0.75  # the testbed answers held-out colour questions (99.1 % over the split)
    assert after <= 0.25  # every gold letter moved: only a wrong answer can now score


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--limit", "0"], "--limit=0 must be >= 1"),
        (["--batch-size", "-1"], "--batch-size=-1 must be >= 1"),
        (["--presets", "vanilla,"], "--presets='vanilla,' must name at least one, without blanks"),
        (["--presets", "himap_50"], "unknown method preset 'himap_50'"),
        (["--model", "llava-7b"], "unknown model preset 'llava-7b'"),
    ],
)
def test_sweep_refuses_bad_arguments_before_any_run(no_model_loads, capsys, tmp_path, argv, message) -> None:
    assert message in refused(capsys, "sweep", [*argv, "--results", str(tmp_path)])
    assert not (tmp_path / "runs").exists() and not list(tmp_path.iterdir())


def test_sweep_refuses_a_bad_preset_of_a_presets_file_naming_both(no_model_loads, capsys, tmp_path) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text("fastv_9: {method: fastv, k: 2, ratio: 9}\n")
    argv = ["--presets", "vanilla,fastv_9", "--presets-file", str(mine), "--results", str(tmp_path / "results")]
    assert f"method preset 'fastv_9' of {mine}: ratio=9.0 is out of range" in refused(capsys, "sweep", argv)
    mine.write_text("fastv_9: {method: no_such_method}\n")
    assert f"method preset 'fastv_9' of {mine}: method='no_such_method' is not known" in refused(capsys, "sweep", argv)
