"""The pruning study's report on hand-built replies: parse rates, flags, intervals, the hard subset, the answers
file and the comparisons with HiMAP, without running a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from himap_lmms.comparison import Answer, headline
from himap_lmms.pruning_study import BUDGETS, STUDY_ROWS, write_report

N = 40


def pope_docs() -> list[dict]:
    return [{"answer": "yes" if i % 2 == 0 else "no", "category": "random"} for i in range(N)]


def run(replies: list[str], docs: list[dict]) -> dict:
    scores = [float(reply == doc["answer"]) for reply, doc in zip(replies, docs)]
    answers = [Answer(str(i), r, s, doc["answer"]) for i, (r, s, doc) in enumerate(zip(replies, scores, docs))]
    return {
        "score": headline("pope", answers),
        "accuracy": sum(scores) / N,
        "parse_rate": sum(reply in ("yes", "no") for reply in replies) / N,
        "by_category": {"random": sum(scores) / N},
        "flops_ratio": 0.5,
        "image_tokens_kept": 0.5,
        "replies": replies,
        "doc_scores": scores,
    }


@pytest.fixture
def report(tmp_path: Path) -> tuple[str, dict, dict]:
    """Vanilla right everywhere; ``pool`` wrong on the first 10 docs at every budget; ``visionzip`` silent but for
    one right "yes" (F1 1.0 on 2.5 % parsed replies); ``input`` wrong on 30 docs; every other row as vanilla."""
    docs = pope_docs()
    truth = [doc["answer"] for doc in docs]
    flip = {"yes": "no", "no": "yes"}
    special = {
        "pool": [flip[t] if i < 10 else t for i, t in enumerate(truth)],
        "visionzip": ["yes"] + ["the"] * (N - 1),
        "input": [flip[t] if i < 30 else t for i, t in enumerate(truth)],
    }
    rows = [
        {"budget": b, "method": m, "config": m} | run(special.get(m, truth), docs) for b in BUDGETS for m in STUDY_ROWS
    ]
    results = {"pope": {"n": N, "vanilla": run(truth, docs), "blank_image": run(["no"] * N, docs), "rows": rows}}
    markdown = write_report({"pope": docs}, results, tmp_path)
    study = json.loads((tmp_path / "pruning_study.json").read_text())
    answers = json.loads((tmp_path / "pruning_study_answers.json").read_text())
    assert (tmp_path / "pruning_study.png").exists()
    return markdown, study, answers


def test_a_row_on_a_minority_of_parsed_replies_is_flagged(report) -> None:
    markdown, study, _ = report
    rows = {(r["budget"], r["method"]): r for r in study["benchmarks"]["pope"]["rows"]}
    silent = rows[0.125, "visionzip"]
    assert silent["parse_rate"] == pytest.approx(1 / N) and silent["flagged"]
    assert "| 12.5 % | visionzip | 100.0 % (flagged: minority parsed) | 2.5 % |" in markdown
    assert not rows[0.125, "himap"]["flagged"]


def test_rows_carry_agreement_flips_interval_and_hard_subset(report) -> None:
    markdown, study, _ = report
    pope = study["benchmarks"]["pope"]
    assert pope["hard_subsets"] == {f"{b:g}": 10 for b in BUDGETS}
    rows = {(r["budget"], r["method"]): r for r in pope["rows"]}
    same, worse = rows[0.25, "himap"], rows[0.25, "input"]
    assert same["vs_vanilla"] | {} == {
        "agreement": 1.0,
        "right_to_wrong": 0,
        "wrong_to_right": 0,
        "difference": 0.0,
        "low": 0.0,
        "high": 0.0,
        "outside_noise": False,
    }
    assert (worse["vs_vanilla"]["agreement"], worse["vs_vanilla"]["right_to_wrong"]) == (0.25, 30)
    assert worse["vs_vanilla"]["outside_noise"] and worse["vs_vanilla"]["high"] < 0
    assert worse["hard_accuracy"] == 0.0 and same["hard_accuracy"] == 1.0  # input lost the pool's 10 docs too
    assert (
        "| 25 % | himap | 100.0 % | 100.0 % | 100.0 % | +0.0 [+0.0, +0.0] | 100.0 % | 0 / 0 | 100.0 % (10) |"
        in markdown
    )


def test_the_answers_live_in_their_own_file_and_flagged_rows_are_not_compared(report) -> None:
    markdown, study, answers = report
    assert "replies" not in study["benchmarks"]["pope"]["rows"][0]
    assert answers["pope"]["visionzip@0.125"]["replies"][:2] == ["yes", "the"]
    assert len(answers["pope"]["vanilla"]["doc_scores"]) == N
    means = {(r["budget"], r["method"]): r for r in study["mean"]}
    assert means[0.125, "visionzip"]["flagged"]
    line = next(line for line in markdown.splitlines() if line.startswith("| visionzip | "))
    assert line.count("flagged") == len(BUDGETS)  # the mean's table of differences: flagged, no interval
    assert "| visionzip=cost | +0.0 [+0.0, +0.0] |" in markdown  # rows at HiMAP's cost against HiMAP
