"""The leaderboard's comparison columns on a hand-built sweep whose samples files give known agreement, flips,
intervals, parse rates and hard subset; rows without a vanilla partner get empty cells."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from leaderboard_files import read_markdown, results_payload, write_sweep

from himap_lmms import leaderboard as lb

SQA = "scienceqa_img_himap_local"
POPE = "pope_synth"
MODEL = "pretrained=/models/llava-v1.5-7b"
ARGS = {
    "vanilla": f"{MODEL},method=none",
    "himap": f"{MODEL},method=himap,k1=2,ratio1=0.5,k2=8,ratio2=0.125",
    "fastv_50": f"{MODEL},method=fastv,k=2,ratio=0.5",
    "pool_25": f"{MODEL},method=pool,ratio=0.25",
}
N = 20
TRUTH = ["yes" if i % 2 == 0 else "no" for i in range(N)]
FLIP = {"yes": "no", "no": "yes"}
# Each run's replies: ScienceQA (gold "A" everywhere) and POPE.
REPLIES = {
    "vanilla": (["A"] * N, TRUTH),
    "himap": (["A"] * (N - 1) + ["B"], TRUTH),  # one ScienceQA flip
    "fastv_50": (["A"] * N, [FLIP[t] if i < 2 else t for i, t in enumerate(TRUTH)]),  # two POPE flips
    # pooling: wrong on ScienceQA's first 10, and on POPE unparseable but for the last 5 (25 % parsed)
    "pool_25": (["B"] * 10 + ["A"] * 10, ["the"] * 15 + TRUTH[15:]),
}


def sqa_line(i: int, reply: str) -> dict:
    return {"doc_id": i, "target": "A", "filtered_resps": [reply], "exact_match": float(reply == "A")}


def pope_line(i: int, reply: str) -> dict:
    score = float(reply == TRUTH[i])
    record = {"question_id": i, "score": score, "prediction": reply, "ground_truth": TRUTH[i]}
    return {"doc_id": i, "target": TRUTH[i], "filtered_resps": [reply], "pope_f1_score": record}


def payload(preset: str) -> dict:
    sqa, pope = REPLIES[preset]
    data = results_payload(ARGS[preset], {SQA: sum(r == "A" for r in sqa) / N}, n=N)
    data["results"][POPE] = {"alias": POPE, "pope_f1_score,none": 0.9, "pope_accuracy,none": 0.8}
    data["n-samples"][POPE] = {"original": N, "effective": N}
    data["throughput"] = {"avg_flops_ratio": {"vanilla": 1.0, "himap": 0.5, "fastv_50": 0.6, "pool_25": 0.45}[preset]}
    return data


def write_samples(sweep: Path, preset: str) -> None:
    results = next((sweep / preset).rglob("*_results.json"))
    stamp = results.name.removesuffix("_results.json")
    sqa, pope = REPLIES[preset]
    for task, lines in ((SQA, map(sqa_line, range(N), sqa)), (POPE, map(pope_line, range(N), pope))):
        text = "".join(json.dumps(line) + "\n" for line in lines)
        results.with_name(f"{stamp}_samples_{task}.jsonl").write_text(text)


@pytest.fixture
def sweeps(tmp_path: Path) -> Path:
    sweep = write_sweep(tmp_path, "s", {preset: payload(preset) for preset in REPLIES})
    for preset in REPLIES:
        write_samples(sweep, preset)
    lonely = write_sweep(tmp_path, "t", {"himap": payload("himap")})  # no vanilla in this sweep
    write_samples(lonely, "himap")
    return tmp_path


def rows(board: pd.DataFrame, sweep: str = "s") -> dict[str, dict]:
    return {row["method"]: row for row in board[board["sweep"] == sweep].to_dict(orient="records")}


def test_agreement_flips_and_intervals_against_vanilla(sweeps: Path) -> None:
    himap = rows(lb.build_leaderboard(lb.collect_runs([sweeps])))["himap"]
    assert himap[f"{SQA} exact_match parsed"] == 1.0
    assert himap[f"{SQA} exact_match Δ vs none"] == pytest.approx(-0.05)
    # one flip in 20: the resampled difference is -Binomial(20, 1/20) / 20, so its 95 % interval is [-0.15, 0]
    assert (himap[f"{SQA} exact_match Δ vs none low"], himap[f"{SQA} exact_match Δ vs none high"]) == pytest.approx(
        (-0.15, 0.0)
    )
    assert himap[f"{POPE} pope_f1_score Δ vs none"] == 0.0
    assert himap["Δ mean vs none"] == pytest.approx(-0.025)
    assert himap["agreement vs none"] == pytest.approx((19 / 20 + 1) / 2)
    assert (himap["right→wrong"], himap["wrong→right"]) == (1, 0)
    assert himap[f"{POPE} pope_accuracy"] == 0.8


def test_a_row_on_a_minority_of_parsed_replies_is_flagged_and_unranked(sweeps: Path) -> None:
    pool = rows(lb.build_leaderboard(lb.collect_runs([sweeps])))["pool"]
    assert pool[f"{POPE} pope_f1_score parsed"] == 0.25
    assert pool["flags"] == f"{POPE}: 25.0 % parsed"
    assert pd.isna(pool["mean"]) and pd.isna(pool["Δ mean vs none"])
    assert pool[f"{SQA} exact_match Δ vs none"] == pytest.approx(-0.5)  # each benchmark's own cells stay


def test_the_hard_subset_is_vanilla_right_and_pool_wrong(sweeps: Path) -> None:
    board = rows(lb.build_leaderboard(lb.collect_runs([sweeps])))
    # ScienceQA docs 0-9 and POPE docs 0-14: 25 documents
    assert board["himap"]["hard subset n"] == 25 and board["himap"]["hard subset"] == 1.0
    assert board["fastv"]["hard subset"] == pytest.approx(23 / 25)  # its two POPE flips are hard documents
    assert board["pool"]["hard subset"] == 0.0


def test_a_row_without_a_vanilla_partner_gets_empty_cells(sweeps: Path) -> None:
    lonely = rows(lb.build_leaderboard(lb.collect_runs([sweeps])), "t")["himap"]
    for column in ("Δ mean vs none", "agreement vs none", "right→wrong", "hard subset", f"{SQA} exact_match Δ vs none"):
        assert pd.isna(lonely[column]), column
    assert lonely[f"{SQA} exact_match parsed"] == 1.0  # its own replies still have a parse rate


def test_against_a_preset_and_the_markdown_cells(sweeps: Path, capsys: pytest.CaptureFixture) -> None:
    out = sweeps / "board"
    assert lb.main([str(sweeps / "s"), "--out", str(out), "--against", "fastv_50"]) == 0
    board = pd.read_csv(out / "leaderboard.csv", keep_default_na=False)
    himap = board[board["method"] == "himap"].iloc[0]
    # ScienceQA -0.05; POPE F1 1.0 against fastv's 0.9 (TP 9, FP 1, FN 1)
    assert float(himap["Δ mean vs fastv_50"]) == pytest.approx((-0.05 + 0.1) / 2)
    header, _, *lines = read_markdown(out / "leaderboard.md")
    cells = dict(zip(header, next(line for line in lines if line[header.index("method")] == "himap")))
    assert cells[f"{SQA} exact_match Δ vs none"] == "-5.0 [-15.0, +0.0]"
    assert f"{SQA} exact_match Δ vs none low" not in header
    assert (out / "leaderboard.png").is_file()
    assert lb.main([str(sweeps / "s"), "--out", str(out), "--against", "fastv_99"]) == 1
    assert "--against 'fastv_99' is not a preset" in capsys.readouterr().err
