"""Checks of the bundled tasks' data, so that a bad split fails before any model work, naming the task, the
document and the field.

Two places run them. lmms-eval calls a task's ``process_docs`` when it builds the task: the POPE- and
TextVQA-schema tasks (``pope_synth``, ``textvqa_synth``) name :func:`pope_synth_docs` and
:func:`textvqa_synth_docs` there, which check every doc (the ScienceQA tasks have
:func:`himap_lmms.scienceqa.process_docs`). Without them the stock task functions fail mid-run with
``'NoneType' object has no attribute 'convert'`` or PIL's ``cannot identify image file``, naming no document,
and an empty question is answered and scored. The sweep calls :func:`check_data_files` before its first run: a
truncated parquet file otherwise surfaces from lmms-eval as an opaque ``RetryError[... ArrowInvalid]``, after a
model has loaded, because lmms-eval retries the failing load before giving up.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from himap_lmms.scienceqa import check_image

TASKS_DIR = Path(__file__).resolve().parent.parent / "tasks"


@dataclass(frozen=True)
class DocChecks:
    """What every doc of one schema must have: an id, non-blank ``text`` fields, optionally a non-empty list of
    non-blank ``answers`` or an ``answer`` among ``choices`` (compared as the stock scoring does: stripped,
    lower-cased), and a readable ``image``."""

    id_field: str
    text: tuple[str, ...]
    answers: str | None = None
    choices: tuple[str, ...] = ()

    def check(self, task: str, dataset: Any) -> Any:
        """Check every doc of ``dataset`` (a datasets split); return it unchanged.

        Text fields are read without the image column, and images without decoding them, so the check costs a
        header read per image.
        """
        from datasets import Image as ImageFeature

        required = [self.id_field, *self.text, *([self.answers] if self.answers else []), "image"]
        missing = [name for name in required if name not in dataset.column_names]
        if missing:
            raise ValueError(
                f"task {task!r}: the data lacks column(s) {', '.join(map(repr, missing))}; "
                f"it has {', '.join(map(repr, dataset.column_names)) or 'no columns'}"
            )
        if not isinstance(dataset.features["image"], ImageFeature):
            raise ValueError(f"task {task!r}: column 'image' must be a datasets Image feature")
        text_columns = [name for name in dataset.column_names if name != "image"]
        for index, doc in enumerate(dataset.select_columns(text_columns)):
            self.check_text(doc, doc_label(task, index, self.id_field, doc[self.id_field]))
        raw = dataset.select_columns(["image"]).cast_column("image", ImageFeature(decode=False))
        for index, (row, doc_id) in enumerate(zip(raw, dataset[self.id_field])):
            check_image(row["image"], doc_label(task, index, self.id_field, doc_id))
        return dataset

    def check_text(self, doc: Mapping[str, Any], label: str) -> None:
        for name in self.text:
            value = doc[name]
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{label}: field {name!r} is empty")
        if self.choices and doc["answer"].strip().lower() not in self.choices:
            raise ValueError(f"{label}: field 'answer'={doc['answer']!r} is not one of {', '.join(self.choices)}")
        if self.answers is not None:
            answers = doc[self.answers]
            if not isinstance(answers, list) or not answers:
                raise ValueError(f"{label}: field {self.answers!r} is empty")
            if not all(isinstance(answer, str) and answer.strip() for answer in answers):
                raise ValueError(f"{label}: field {self.answers!r} holds an empty answer")


def doc_label(task: str, index: int, id_field: str, doc_id: Any) -> str:
    """How errors name a doc: its task, its index in the split (lmms-eval's ``doc_id``) and its own id."""
    return f"task {task!r} doc {index} ({id_field}={doc_id!r})"


POPE = DocChecks(id_field="question_id", text=("question", "answer"), choices=("yes", "no"))
TEXTVQA = DocChecks(id_field="question_id", text=("question",), answers="answers")


def pope_synth_docs(dataset: Any) -> Any:
    """lmms-eval hook (``process_docs``) of ``pope_synth``."""
    return POPE.check("pope_synth", dataset)


def textvqa_synth_docs(dataset: Any) -> Any:
    """lmms-eval hook (``process_docs``) of ``textvqa_synth``."""
    return TEXTVQA.check("textvqa_synth", dataset)


class _TaskYamlLoader(yaml.SafeLoader):
    """Reads a task YAML's data keys; lmms-eval's ``!function`` tags are read as their text."""


_TaskYamlLoader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


def data_files(task: str, tasks_dir: Path = TASKS_DIR, cwd: Path | None = None) -> list[Path] | None:
    """The local data files of a bundled task, as lmms-eval resolves them; ``None`` for a task that is not
    bundled or reads hub data. The generic ``parquet`` builder anchors ``data_files`` at the YAML's folder; a
    local ``dataset_path`` is relative to the working directory (``cwd``), its ``data_files`` to that path."""
    for path in sorted(tasks_dir.rglob("*.yaml")):
        config = yaml.load(path.read_text(), Loader=_TaskYamlLoader)
        if not isinstance(config, dict) or config.get("task") != task:
            continue
        patterns = (config.get("dataset_kwargs") or {}).get("data_files") or {}
        if config.get("dataset_path") == "parquet":
            root = path.parent
        elif "dataset_path" in config and Path(cwd or Path.cwd(), config["dataset_path"]).is_dir():
            root = Path(cwd or Path.cwd(), config["dataset_path"])
        else:
            return None
        return [match for pattern in patterns.values() for match in _matches(root, pattern)]
    return None


def _matches(root: Path, pattern: str) -> list[Path]:
    found = sorted(root.glob(pattern)) if any(char in pattern for char in "*?[") else [root / pattern]
    return [path.resolve() for path in found or [root / pattern]]


def check_data_files(tasks: Iterable[str], tasks_dir: Path = TASKS_DIR, cwd: Path | None = None) -> None:
    """Every local data file of the bundled ``tasks`` exists and is a whole parquet file (its footer, written
    last, reads): ``ValueError`` naming the task and the file otherwise."""
    import pyarrow
    import pyarrow.parquet

    for task in tasks:
        for path in data_files(task, tasks_dir, cwd) or []:
            if not path.is_file():
                raise ValueError(f"task {task!r}: data file {str(path)!r} does not exist")
            try:
                pyarrow.parquet.read_metadata(path)
            except (pyarrow.ArrowInvalid, OSError) as error:
                raise ValueError(
                    f"task {task!r}: data file {str(path)!r} is not a whole parquet file (truncated?): {error}"
                ) from error
