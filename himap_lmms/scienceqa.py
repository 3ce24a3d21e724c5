"""ScienceQA-IMG as the HiMAP paper evaluates it: prompt, scoring, per-group accuracy and data checks.

The lmms-eval tasks (``tasks/scienceqa_img_himap``, ``tasks/himap_probes``) name these functions as their hooks,
and the scripts that score outside lmms-eval (training, the pruning study, the disruption sweep) import them
from here, so every path asks and scores the same question.

The paper's numbers come from LLaVA-1.5's ScienceQA evaluation (``llava_test_CQM-A.json`` run with
``--single-pred-prompt``), so this module rebuilds that prompt from the lmms-lab ScienceQA-IMG columns:

    {context}{question}
    A. {choice 0}
    B. {choice 1}
    ...
    Answer with the option's letter from the given choices directly.

``context`` is ``"Context: {hint}\\n"`` when the hint has any non-blank text and nothing otherwise. That is
the convention of LLaVA-1.5's question file (hint-less questions start directly with the question; there is
no ``"Context: N/A"`` line as in LLaVA's older conversion script) and of lmms-eval's own ``scienceqa_img``
default format. LLaVA's evaluation script strips the assembled text before appending the instruction, and
so do we. The ``<image>`` token and the vicuna chat template are added by the model adapter, so
:func:`doc_to_text` returns only the user content.

Scoring is the exact match of the paper: the stripped output must be the gold letter, optionally followed
by a single ``.`` or ``)`` (``"A"``, ``"A."``, ``"A)"``), case-sensitive. Anything longer
(``"A. West Virginia"``, ``"The answer is A"``) is wrong here, although LLaVA's ``eval_science_qa.py`` would
also parse those; a more lenient parse would score a different quantity than the paper's headline table.

Bad data is reported before any model runs: :func:`process_docs` (lmms-eval calls it when the task is built)
raises ``ValueError`` naming the doc index, the start of its question and the offending field.
"""

from __future__ import annotations

import io
import os
import re
import string
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from PIL import Image, ImageFile

POST_PROMPT = "Answer with the option's letter from the given choices directly."

# Option letters A, B, C, ...: the model can only name as many choices as there are letters.
OPTION_LETTERS = string.ascii_uppercase

# Columns every doc needs to build the prompt, the visual and the target.
REQUIRED_FIELDS = ("image", "question", "choices", "answer", "hint")

# Suffixes of the gold letter that still count as answering it exactly (see the module docstring).
ACCEPTED_SUFFIXES = ("", ".", ")")

_GRADE = re.compile(r"grade(\d+)")


# ----------------------------------------------------------------------------------------------------------
# Prompt and target
# ----------------------------------------------------------------------------------------------------------


def format_context(hint: str | None) -> str:
    """``"Context: {hint}\\n"`` for a hint with text, ``""`` for a missing or blank one (LLaVA-1.5's file)."""
    if hint is None or not hint.strip():
        return ""
    return f"Context: {hint}\n"


def format_options(choices: list[str]) -> str:
    """One ``"X. choice"`` line per choice, lettered from A."""
    return "\n".join(f"{letter}. {choice}" for letter, choice in zip(OPTION_LETTERS, choices))


def build_prompt(question: str, choices: list[str], hint: str | None) -> str:
    """The user content of the paper's prompt (without ``<image>`` and the chat template)."""
    body = f"{format_context(hint)}{question}\n{format_options(choices)}".strip()
    return f"{body}\n{POST_PROMPT}"


def doc_to_text(doc: Mapping[str, Any]) -> str:
    """lmms-eval hook: the prompt content for one doc."""
    check_text_fields(doc)
    return build_prompt(doc["question"], list(doc["choices"]), doc["hint"])


def doc_to_target(doc: Mapping[str, Any]) -> str:
    """lmms-eval hook: the gold option letter."""
    check_text_fields(doc)
    return OPTION_LETTERS[doc["answer"]]


@contextmanager
def strict_decoding() -> Iterator[None]:
    """Decode images with PIL's truncation check on, whatever the process set.

    ``lmms_eval.api.task`` sets ``ImageFile.LOAD_TRUNCATED_IMAGES = True`` on import (for one hub dataset), which
    makes PIL fill the missing part of a truncated file with grey instead of failing: the model would then be
    scored on a picture that is not the data. Here a truncated image is an error, as in a plain PIL process.
    """
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before


def doc_to_visual(doc: Mapping[str, Any]) -> list[Image.Image]:
    """lmms-eval hook: the doc's image as RGB; a missing, truncated or undecodable image is an error naming the doc."""
    image = doc.get("image")
    if image is None:
        raise ValueError(f"{doc_label(doc)}: field 'image' is missing (each ScienceQA-IMG doc needs one)")
    try:
        with strict_decoding():
            image.load()
            return [image.convert("RGB")]
    except (OSError, ValueError, AttributeError) as error:
        raise ValueError(f"{doc_label(doc)}: field 'image' cannot be decoded: {error}") from error


# ----------------------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------------------


def is_correct(prediction: str, gold_letter: str) -> bool:
    """Exact match of the stripped output with the gold letter, allowing only ``"X"``, ``"X."``, ``"X)"``."""
    return prediction.strip() in {gold_letter + suffix for suffix in ACCEPTED_SUFFIXES}


def grade_number(grade: str | None) -> int | None:
    """``"grade7"`` -> 7; ``None`` for a missing or malformed grade (the data may not carry the field)."""
    if not isinstance(grade, str):
        return None
    match = _GRADE.fullmatch(grade.strip())
    return int(match.group(1)) if match else None


def _subject_is(subject: str) -> Callable[[Mapping[str, Any]], bool]:
    return lambda item: item.get("subject") == subject


def _grade_between(low: int, high: int) -> Callable[[Mapping[str, Any]], bool]:
    def member(item: Mapping[str, Any]) -> bool:
        number = grade_number(item.get("grade"))
        return number is not None and low <= number <= high

    return member


# Per-group accuracies, as ScienceQA's paper reports them (NAT / SOC / LAN, G1-6 / G7-12).
GROUPS: dict[str, Callable[[Mapping[str, Any]], bool]] = {
    "acc_natural_science": _subject_is("natural science"),
    "acc_social_science": _subject_is("social science"),
    "acc_language_science": _subject_is("language science"),
    "acc_grade1_6": _grade_between(1, 6),
    "acc_grade7_12": _grade_between(7, 12),
}


def process_results(doc: Mapping[str, Any], results: list[str]) -> dict[str, Any]:
    """lmms-eval hook: overall ``exact_match`` (0/1) and one group record per group metric.

    Every group metric gets the same small record (correctness plus the doc's subject and grade) and its
    aggregation keeps the docs of its group, so each group's accuracy is a mean over that group only. The
    record deliberately has no ``score`` key: lmms-eval would otherwise compute a CLT stderr over all docs
    and label it as the group's.
    """
    correct = is_correct(results[0] if results else "", doc_to_target(doc))
    record = {"correct": correct, "subject": doc.get("subject"), "grade": doc.get("grade")}
    return {"exact_match": float(correct), **{name: record for name in GROUPS}}


def group_accuracy(items: Iterable[Mapping[str, Any]], group: str) -> float | None:
    """Accuracy over the records that belong to ``group``; ``None`` when the group has no doc."""
    member = GROUPS[group]
    scores = [float(item["correct"]) for item in items if member(item)]
    return sum(scores) / len(scores) if scores else None


# The YAML names each metric's aggregation by function, hence one named wrapper per group.
def aggregate_natural_science(items: list[Mapping[str, Any]]) -> float | None:
    return group_accuracy(items, "acc_natural_science")


def aggregate_social_science(items: list[Mapping[str, Any]]) -> float | None:
    return group_accuracy(items, "acc_social_science")


def aggregate_language_science(items: list[Mapping[str, Any]]) -> float | None:
    return group_accuracy(items, "acc_language_science")


def aggregate_grade1_6(items: list[Mapping[str, Any]]) -> float | None:
    return group_accuracy(items, "acc_grade1_6")


def aggregate_grade7_12(items: list[Mapping[str, Any]]) -> float | None:
    return group_accuracy(items, "acc_grade7_12")


# ----------------------------------------------------------------------------------------------------------
# Data checks
# ----------------------------------------------------------------------------------------------------------


def doc_label(doc: Mapping[str, Any], index: int | None = None) -> str:
    """How errors name a doc: its index in the split (when known) and the start of its question."""
    question = doc.get("question")
    snippet = question if isinstance(question, str) else "<no question>"
    snippet = snippet if len(snippet) <= 60 else snippet[:57] + "..."
    where = f"ScienceQA doc {index}" if index is not None else "ScienceQA doc"
    return f"{where} (question {snippet!r})"


def check_columns(columns: Iterable[str]) -> None:
    """Every required column is present; the error lists what is missing and what the data has."""
    present = list(columns)
    missing = [field for field in REQUIRED_FIELDS if field not in present]
    if missing:
        raise ValueError(
            f"ScienceQA data lacks required column(s) {', '.join(map(repr, missing))}; "
            f"it has {', '.join(map(repr, present)) or 'no columns'}"
        )


def check_text_fields(doc: Mapping[str, Any], index: int | None = None) -> None:
    """question, hint, choices and answer are usable; grade, when present, is ``grade<N>``."""
    label = doc_label(doc, index)
    for field in REQUIRED_FIELDS[1:]:
        if field not in doc:
            raise ValueError(f"{label}: field {field!r} is missing")
    if not isinstance(doc["question"], str) or not doc["question"].strip():
        raise ValueError(f"{label}: field 'question' is empty")
    if doc["hint"] is not None and not isinstance(doc["hint"], str):
        raise ValueError(f"{label}: field 'hint' must be text, got {type(doc['hint']).__name__}")
    choices = doc["choices"]
    if not isinstance(choices, (list, tuple)) or not choices:
        raise ValueError(f"{label}: field 'choices' is empty")
    if len(choices) > len(OPTION_LETTERS):
        raise ValueError(f"{label}: field 'choices' has {len(choices)} options, more than there are letters")
    if not all(isinstance(choice, str) for choice in choices):
        raise ValueError(f"{label}: field 'choices' must hold text only")
    answer = doc["answer"]
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise ValueError(
            f"{label}: field 'answer'={answer!r} is out of range for {len(choices)} choices "
            f"(expected an index 0..{len(choices) - 1})"
        )
    grade = doc.get("grade")
    if grade is not None and grade_number(grade) is None:
        raise ValueError(f"{label}: field 'grade'={grade!r} is not of the form 'grade<N>'")


def check_image(image: Any, label: str) -> None:
    """An undecoded datasets image (``{"bytes": ..., "path": ...}``) is present and opens as a picture."""
    image = image if isinstance(image, Mapping) else {}
    data, path = image.get("bytes"), image.get("path")
    if data is None and not path:
        raise ValueError(f"{label}: field 'image' is missing")
    if data is None and not os.path.isfile(path):
        raise ValueError(f"{label}: field 'image' points to {path!r}, which does not exist")
    try:
        with strict_decoding(), Image.open(io.BytesIO(data) if data is not None else path) as picture:
            picture.verify()
    except Exception as error:  # PIL raises many types for bad files; all of them mean "unreadable".
        raise ValueError(f"{label}: field 'image' is not a readable image: {error}") from error


def process_docs(dataset: Any) -> Any:
    """lmms-eval hook: check every doc of the split and return the split unchanged.

    Text fields are read without the image column and images without decoding them (``decode=False``),
    so the check costs a header read per image, not a full decode.
    """
    from datasets import Image as ImageFeature

    check_columns(dataset.column_names)
    feature = dataset.features["image"]
    if not isinstance(feature, ImageFeature):
        raise ValueError(f"ScienceQA data: column 'image' must be a datasets Image feature, got {feature!r}")
    text_columns = [name for name in dataset.column_names if name != "image"]
    for index, doc in enumerate(dataset.select_columns(text_columns)):
        check_text_fields(doc, index)
    raw_images = dataset.select_columns(["image"]).cast_column("image", ImageFeature(decode=False))
    for index, (row, question) in enumerate(zip(raw_images, dataset["question"])):
        check_image(row["image"], doc_label({"question": question}, index))
    return dataset


def load_local_split(path: str | os.PathLike, config: str = "ScienceQA-IMG", split: str = "test") -> Any:
    """One split of a local ScienceQA-IMG-schema directory (parquet files, as the hub release lays them out), read
    as the local tasks read it, checked by :func:`process_docs`.

    The files are named explicitly (``{config}/{split}-*``), as the tasks' YAMLs do: datasets 5.2 keys its cache
    of a local directory on the README's configs only, so data rewritten under the same directory would
    otherwise come back from the cache of the old copy; explicit data files put their modification times into
    the key. A missing directory, no matching files, a file that is not parquet or a split without rows is a
    ``ValueError`` naming it, raised before anything is loaded.
    """
    import pyarrow
    import pyarrow.parquet
    from datasets import load_dataset

    root = os.fspath(path)
    if not os.path.isdir(root):
        raise ValueError(f"data directory {root!r} does not exist (expected a local ScienceQA-IMG-schema copy)")
    pattern = f"{config}/{split}-*"
    files = sorted(Path(root, config).glob(f"{split}-*"))
    if not files:
        raise ValueError(f"data directory {root!r} has no files {pattern!r} (config {config!r}, split {split!r})")
    rows = 0
    for file in files:
        try:
            rows += pyarrow.parquet.read_metadata(file).num_rows
        except pyarrow.ArrowInvalid as error:
            raise ValueError(f"data file {str(file)!r} is not a parquet file: {error}") from error
    if rows == 0:
        raise ValueError(f"split {split!r} of config {config!r} in {root!r} has no rows: there is nothing to evaluate")
    return process_docs(load_dataset(root, config, split=split, data_files={split: pattern}))
