"""Bad data in the bundled POPE- and TextVQA-schema tasks is an error naming the task, the doc and the field, raised
when lmms-eval builds the task (before any answer); a truncated data file is named before a sweep's first run."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import pytest
from lmms_eval.utils import load_yaml_config

from himap_lmms import task_data

REPO = Path(__file__).resolve().parent.parent
POPE = REPO / "data" / "pope_synth" / "test.parquet"
TEXTVQA = REPO / "data" / "textvqa_synth" / "validation.parquet"

pytestmark = pytest.mark.skipif(not POPE.is_file(), reason="bundled data not generated")


def first_docs(path: Path, change: Callable[[dict[str, Any]], None], at: int = 2) -> datasets.Dataset:
    """The split's first four docs, doc ``at`` changed by ``change`` (images as undecoded bytes)."""
    split = datasets.Dataset.from_parquet(str(path)).select(range(4))
    raw = split.cast_column("image", datasets.Image(decode=False)).to_list()
    change(raw[at])
    return datasets.Dataset.from_list(raw, features=split.features)


def set_field(name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc.update({name: value})


@pytest.mark.parametrize(
    ("path", "hook", "change", "message"),
    [
        (
            POPE,
            "pope_synth_docs",
            set_field("image", {"bytes": b"GIF89a broken", "path": None}),
            "field 'image' is not a readable image",
        ),
        (POPE, "pope_synth_docs", set_field("image", None), "field 'image' is missing"),
        (POPE, "pope_synth_docs", set_field("question", "  "), "field 'question' is empty"),
        (POPE, "pope_synth_docs", set_field("answer", ""), "field 'answer' is empty"),
        (POPE, "pope_synth_docs", set_field("answer", "maybe"), "field 'answer'='maybe' is not one of yes, no"),
        (
            TEXTVQA,
            "textvqa_synth_docs",
            set_field("image", {"bytes": b"\x89PNG\r\n", "path": None}),
            "field 'image' is not a readable image",
        ),
        (TEXTVQA, "textvqa_synth_docs", set_field("question", ""), "field 'question' is empty"),
        (TEXTVQA, "textvqa_synth_docs", set_field("answers", []), "field 'answers' is empty"),
        (TEXTVQA, "textvqa_synth_docs", set_field("answers", ["blue", " "]), "field 'answers' holds an empty answer"),
    ],
)
def test_a_bad_doc_is_named_with_its_task_id_and_field(path: Path, hook: str, change, message: str) -> None:
    split = first_docs(path, change)
    task = hook.removesuffix("_docs")
    doc_id = split.select_columns(["question_id"])[2]["question_id"]  # '2' in POPE's schema, 2 in TextVQA's
    with pytest.raises(ValueError, match=re.escape(f"task {task!r} doc 2 (question_id={doc_id!r}): {message}")):
        getattr(task_data, hook)(split)


@pytest.mark.parametrize(("path", "hook"), [(POPE, "pope_synth_docs"), (TEXTVQA, "textvqa_synth_docs")])
def test_good_docs_pass_unchanged(path: Path, hook: str) -> None:
    split = first_docs(path, lambda doc: None)
    assert getattr(task_data, hook)(split) is split


@pytest.mark.parametrize("task", ["pope_synth", "textvqa_synth"])
def test_the_tasks_run_the_checks_when_lmms_eval_builds_them(task: str) -> None:
    config = load_yaml_config(str(REPO / "tasks" / task / f"{task}.yaml"))
    assert config["process_docs"] is getattr(task_data, f"{task}_docs")


@pytest.mark.parametrize(
    ("yaml_text", "task"),
    [
        (
            "task: pope_like\ndataset_path: parquet\ndataset_kwargs:\n  data_files:\n    test: data/test.parquet\n",
            "pope_like",
        ),
        ("task: sqa_like\ndataset_path: data\ndataset_kwargs:\n  data_files:\n    test: test-*\n", "sqa_like"),
    ],
)
def test_a_truncated_data_file_is_named_with_its_task(tmp_path: Path, yaml_text: str, task: str) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "task.yaml").write_text(yaml_text + "process_docs: !function utils.process_docs\n")
    data = tmp_path / ("tasks" if "parquet" in yaml_text else ".") / "data"
    data.mkdir()
    whole = POPE.read_bytes()
    (data / "test.parquet" if "parquet" in yaml_text else data / "test-00000.parquet").write_bytes(
        whole[: len(whole) // 2]
    )
    with pytest.raises(
        ValueError, match=rf"task '{task}': data file '{re.escape(str(data))}/test[^']*' is not a whole parquet file"
    ):
        task_data.check_data_files([task], tasks_dir=tmp_path / "tasks", cwd=tmp_path)


def test_the_bundled_data_files_are_whole() -> None:
    task_data.check_data_files(["pope_synth", "textvqa_synth", "scienceqa_img_himap_local"], cwd=REPO)
    assert task_data.data_files("scienceqa_img_himap", cwd=REPO) is None  # hub data: nothing local to check
