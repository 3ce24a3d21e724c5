"""The shipped testbed, run by stock lmms-eval's CLI, answers the first 40 ScienceQA questions as recorded.

CI runs this on every transformers of its matrix (``scripts/test_transformers_matrix.sh``), so it shows that the
checkpoint, its tokenizer and its processor give the same prompts (token counts) and the same answers on the
whole supported range. The recorded answers were made on transformers 5.24 by this test itself:
``HIMAP_RECORD_ANSWERS=1 pytest tests/test_testbed_answers.py`` rewrites them (never from a changed engine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from himap_lmms.sweep import judge_run, model_args, resolve_model

REPO = Path(__file__).resolve().parent.parent
RECORDED = Path(__file__).with_name("testbed_scienceqa_answers.json")
TASK, QUESTIONS = "scienceqa_img_himap_local", 40


def cli_answers(out: Path) -> dict[str, list]:
    """``{doc_id: [answer, prompt tokens]}`` of one ``lmms-eval eval`` run of the testbed, method ``none``."""
    _, testbed = resolve_model("testbed")
    command = [sys.executable, "-m", "lmms_eval", "eval", "--model", "himap_llava"]
    command += ["--model_args", model_args(testbed, "method=none", "device=cpu"), "--tasks", TASK]
    command += ["--include_path", str(REPO / "tasks"), "--batch_size", "8", "--limit", str(QUESTIONS)]
    command += ["--output_path", str(out / "run"), "--log_samples"]
    log = out / "lmms-eval.log"
    with log.open("w") as stream:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run(command, cwd=REPO, env=env, stdout=stream, stderr=subprocess.STDOUT, timeout=1200)
    status, _ = judge_run(out / "run", (TASK,), log)  # lmms-eval exits 0 on errors: judge its results file
    assert status == "ok", status
    (samples,) = (out / "run").rglob(f"*_samples_{TASK}.jsonl")
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    return {str(row["doc_id"]): [row["filtered_resps"], row["token_counts"][0]["input_tokens"]] for row in rows}


@pytest.mark.transformers_matrix
def test_the_testbed_answers_40_scienceqa_questions_as_recorded(tmp_path: Path) -> None:
    answers = cli_answers(tmp_path)
    if os.environ.get("HIMAP_RECORD_ANSWERS") == "1":
        lines = [f" {json.dumps(doc)}: {json.dumps(answer)}" for doc, answer in answers.items()]
        RECORDED.write_text("{\n" + ",\n".join(lines) + "\n}\n")  # one question a line
    recorded = json.loads(RECORDED.read_text())
    assert len(recorded) == QUESTIONS
    differing = {
        doc: (answers.get(doc), expected) for doc, expected in recorded.items() if answers.get(doc) != expected
    }
    assert not differing, f"[answer, prompt tokens] differ from the recording (got, recorded): {differing}"
