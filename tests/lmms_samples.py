"""Reading lmms-eval's per-sample logs, shared by the tests that compare two runs' answers."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def answers_of(rows: Iterable[Mapping[str, Any]]) -> dict[int, str]:
    """doc_id -> the model's answer after the task's filters. lmms-eval keeps ``filtered_resps`` as a list (one
    entry per repeat) in memory and writes a single answer as a plain string to its samples file; both read here."""
    result = {}
    for row in rows:
        answer = row["filtered_resps"]
        if isinstance(answer, list):
            (answer,) = answer
        result[row["doc_id"]] = answer
    return result


def answers(run_dir: Path, task: str) -> dict[int, str]:
    """doc_id -> the model's answer, from the one samples file of ``task`` under ``run_dir``."""
    (path,) = run_dir.rglob(f"*_samples_{task}.jsonl")
    return answers_of(json.loads(line) for line in path.read_text().splitlines())
