"""The POPE and TextVQA tasks on the synthetic splits are the stock lmms-eval tasks with other data: their YAMLs
agree with the stock ones on every key but the name and the data (functions included), lmms-eval builds them
from ``tasks/`` with the shipped splits, they ask what the testbed was trained on, and the stock scoring scores
them."""

from __future__ import annotations

from pathlib import Path

import lmms_eval.tasks
import pytest
from lmms_eval.tasks import TaskManager, get_task_dict
from lmms_eval.utils import load_yaml_config

from himap_lmms.synthetic import BENCHMARKS

REPO = Path(__file__).resolve().parent.parent
STOCK = Path(lmms_eval.tasks.__file__).parent
MIRRORS = {"pope_synth": STOCK / "pope" / "pope.yaml", "textvqa_synth": STOCK / "textvqa" / "textvqa_val.yaml"}
# The keys that may differ: the data, and our checks of it (process_docs; the stock tasks have none).
DATA_KEYS = {"task", "dataset_path", "dataset_name", "dataset_kwargs", "test_split", "process_docs"}
BY_TASK = {spec.task: spec for spec in BENCHMARKS.values()}


def comparable(value):
    """YAML values with functions as (file, name): lmms-eval loads a stock function afresh per YAML, so the same
    function from the same file is a different object each time."""
    if callable(value):
        return (Path(value.__code__.co_filename).resolve(), value.__qualname__)
    if isinstance(value, dict):
        return {key: comparable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [comparable(item) for item in value]
    return value


@pytest.mark.parametrize("task", list(MIRRORS))
def test_yaml_is_the_stock_one_but_for_the_data(task: str) -> None:
    ours = load_yaml_config(str(REPO / "tasks" / task / f"{task}.yaml"))
    stock = load_yaml_config(str(MIRRORS[task]))
    assert {k: comparable(v) for k, v in ours.items() if k not in DATA_KEYS} == {
        k: comparable(v) for k, v in stock.items() if k not in DATA_KEYS
    }
    assert ours["test_split"] == stock["test_split"]
    # lmms-eval anchored the data file at the YAML's folder: the task does not depend on the working directory.
    [data_file] = ours["dataset_kwargs"]["data_files"].values()
    assert Path(data_file).is_absolute() and Path(data_file).resolve() == BY_TASK[task].path(REPO / "data")


@pytest.fixture(scope="module")
def tasks():
    manager = TaskManager(include_path=str(REPO / "tasks"), include_defaults=False)
    return get_task_dict(list(MIRRORS), manager)


@pytest.mark.parametrize("task", list(MIRRORS))
def test_task_reads_the_shipped_split_and_asks_the_trained_prompt(tasks, task: str) -> None:
    docs = list(tasks[task].test_docs())
    assert len(docs) == 420
    assert all(tasks[task].doc_to_text(doc) == BY_TASK[task].prompt(doc) for doc in docs)


def aggregate(task, docs: list[dict], replies: list[str]) -> dict[str, float]:
    per_doc = [task.process_results(doc, [reply]) for doc, reply in zip(docs, replies)]
    metrics = [m for m in task.aggregation() if m != "submission"]
    return {m: task.aggregation()[m]([scores[m] for scores in per_doc]) for m in metrics}


def test_stock_pope_scoring(tasks) -> None:
    task = tasks["pope_synth"]
    docs = list(task.test_docs())
    gold = aggregate(task, docs, [BY_TASK["pope_synth"].answer(doc) for doc in docs])
    assert gold["pope_accuracy"] == gold["pope_f1_score"] == 1.0
    always_yes = aggregate(task, docs, ["Yes"] * len(docs))  # the stock scoring lower-cases the reply
    assert always_yes["pope_accuracy"] == 0.5 and always_yes["pope_f1_score"] == pytest.approx(2 / 3)
    assert aggregate(task, docs, ["no"] * len(docs))["pope_f1_score"] == 0.0


def test_stock_vqa_accuracy(tasks) -> None:
    task = tasks["textvqa_synth"]
    docs = list(task.test_docs())[:30]
    assert aggregate(task, docs, [doc["answers"][0] for doc in docs])["exact_match"] == 1.0
    assert aggregate(task, docs, [doc["answers"][0].upper() + "." for doc in docs])["exact_match"] == 1.0
    assert aggregate(task, docs, ["purple"] * len(docs))["exact_match"] == 0.0
