"""The leaderboard, fed with sweep manifests and result files in lmms-eval 0.7.3's own layout.

Hand-built files copy what ``EvaluationTracker.save_results_aggregated`` writes
(``<output_path>/<model_name_sanitized>/<YYYYMMDD_HHMMSS>_results.json`` holding ``results``, ``configs``,
``config``, ``date``, ``throughput``, the tracker's own fields...); one test runs lmms-eval itself with a
stub model to write the files, so the schema cannot drift from the real one unnoticed. Manifests are
written by the sweep's own code where it matters (``tests/test_cli_end_to_end.py`` runs real sweeps).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from leaderboard_files import SQA, VANILLA_ARGS, read_markdown, results_payload, write_results, write_sweep

from himap_lmms import leaderboard as lb
from himap_lmms.sweep_manifest import INTERRUPTED, NOT_RUN, SweepManifest

GQA = "gqa"
HIMAP_ARGS = "pretrained=/models/llava-v1.5-7b,method=himap,k1=2,keep1=288,k2=8,keep2=72"


def cost(latency: float, flops: float, tasks: tuple[str, ...] = (SQA,)) -> dict[str, float]:
    """A throughput block as the adapter's log_metrics records summarise (per-task keys included)."""
    block = {
        "total_gen_tokens": 2017,
        "total_elapsed_time": latency * 2017,
        "avg_speed": 1 / latency,
        "avg_latency": latency,
        "avg_flops_ratio": flops,
        "avg_prefill_s": latency * 0.8,
    }
    for task in tasks:
        block[f"avg_flops_ratio:{task}"] = flops
        block[f"avg_latency_s:{task}"] = latency
    return block


def board_for(*roots: Path) -> pd.DataFrame:
    return lb.build_leaderboard(lb.collect_runs(roots))


def row_of(board: pd.DataFrame, method: str) -> dict[str, Any]:
    (row,) = board[board["method"] == method].to_dict(orient="records")
    return row


def is_empty(value: Any) -> bool:
    return value is None or pd.isna(value)


# ----------------------------------------------------------------------------------------------------------


def test_cells_equal_the_source_numbers(tmp_path: Path) -> None:
    vanilla_path = write_results(tmp_path, results_payload(VANILLA_ARGS, {SQA: 0.679}, cost(0.197, 1.0)))
    write_results(tmp_path, results_payload(HIMAP_ARGS, {SQA: 0.683}, cost(0.116, 0.24), date="20251124_103000"))
    board = board_for(tmp_path)
    assert list(board["method"]) == ["none", "himap"]  # vanilla first
    vanilla, himap = board.to_dict(orient="records")
    assert himap["model"] == "llava-v1.5-7b" and himap["backend"] == "himap_llava"
    assert himap["schedule"] == "himap(k1=2,keep1=288,k2=8,keep2=72)" and vanilla["schedule"] == "none"
    assert himap["settings"] == "" and vanilla["settings"] == ""  # the pruning arguments are the schedule
    assert himap[f"{SQA} exact_match"] == 0.683 and vanilla[f"{SQA} exact_match"] == 0.679
    assert (himap["FLOPs ratio"], himap["latency (s/example)"]) == (0.24, 0.116)
    assert (vanilla["FLOPs ratio"], vanilla["latency (s/example)"]) == (1.0, 0.197)
    assert himap["run (UTC)"] == "2025-11-24 02:30:00"  # lmms-eval stamped 10:30 in its UTC+8; the table is UTC
    assert (himap["n"], himap["limit"], himap["batch"], himap["status"]) == (2017, "", "1", "ok")
    assert vanilla["source"] == str(vanilla_path)


def test_runs_outside_a_sweep_get_no_speedup(tmp_path: Path) -> None:
    """Two separate lmms-eval runs were not measured side by side: their latencies do not compare."""
    write_results(tmp_path, results_payload(VANILLA_ARGS, {SQA: 0.679}, cost(0.197, 1.0)))
    write_results(tmp_path, results_payload(HIMAP_ARGS, {SQA: 0.683}, cost(0.116, 0.24), date="20251124_103000"))
    assert board_for(tmp_path)["speed-up vs none"].isna().all()


def test_speedup_is_vanilla_latency_over_row_latency_within_a_sweep(tmp_path: Path) -> None:
    vanilla = results_payload(VANILLA_ARGS, {SQA: 0.679}, cost(0.197, 1.0))
    himap = results_payload(HIMAP_ARGS, {SQA: 0.683}, cost(0.116, 0.24), date="20251124_103000")
    write_sweep(tmp_path, "sweep-a", {"vanilla": vanilla, "himap_ref": himap})
    board = board_for(tmp_path)
    assert row_of(board, "himap")["speed-up vs none"] == pytest.approx(0.197 / 0.116)
    assert row_of(board, "none")["speed-up vs none"] == pytest.approx(1.0)
    assert row_of(board, "himap")["sweep"] == "sweep-a"
    assert (row_of(board, "himap")["device"], row_of(board, "himap")["threads"]) == ("cpu", "2")


def test_speedup_never_pairs_runs_of_different_sweeps_or_sizes(tmp_path: Path) -> None:
    """The demo's old table paired a run with the newest vanilla of any sweep (a vanilla row at 2.19x, and
    5-question rows beside 400-question ones at 148x): each sweep now pairs only within itself."""
    write_sweep(tmp_path, "full", {"vanilla": results_payload(VANILLA_ARGS, {SQA: 0.9}, cost(0.2, 1.0), n=400)})
    smoke = {
        "vanilla": results_payload(VANILLA_ARGS, {SQA: 1.0}, cost(0.001, 1.0), n=5, limit=5),
        "himap_ref": results_payload(HIMAP_ARGS, {SQA: 0.8}, cost(0.0008, 0.5), n=5, limit=5),
    }
    write_sweep(tmp_path, "smoke", smoke, limit=5)
    write_sweep(tmp_path, "himap-alone", {"himap_ref": results_payload(HIMAP_ARGS, {SQA: 0.85}, cost(0.1, 0.5))})
    board = board_for(tmp_path)
    speedups = {(row["sweep"], row["method"]): row["speed-up vs none"] for row in board.to_dict(orient="records")}
    assert speedups[("smoke", "himap")] == pytest.approx(0.001 / 0.0008)
    assert speedups[("full", "none")] == pytest.approx(1.0)
    assert is_empty(speedups[("himap-alone", "himap")])  # its sweep has no vanilla run
    limits = {(row["sweep"], row["method"]): (row["n"], row["limit"]) for row in board.to_dict(orient="records")}
    assert limits[("smoke", "himap")] == (5, "5") and limits[("full", "none")] == (400, "")


def test_a_failed_run_is_a_failed_row_and_takes_no_part_in_speedups(tmp_path: Path) -> None:
    himap = results_payload(HIMAP_ARGS, {SQA: 0.683}, cost(0.116, 0.24))
    failed = "failed: ValueError: k1 is not an argument of method=none (it takes no pruning arguments)"
    write_sweep(tmp_path, "s", {"vanilla": failed, "himap_ref": himap})
    out = tmp_path / "board"
    assert lb.main([str(tmp_path), "--out", str(out)]) == 0
    board = pd.read_csv(out / "leaderboard.csv", keep_default_na=False)
    vanilla = board[board["method"] == "none"].iloc[0]
    assert vanilla["status"] == failed and vanilla[f"{SQA} exact_match"] == ""
    assert board[board["method"] == "himap"].iloc[0]["speed-up vs none"] == ""
    assert failed in (out / "leaderboard.md").read_text()


def test_a_reference_table_refuses_smoke_and_failed_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    smoke = write_sweep(tmp_path / "a", "smoke", {"vanilla": results_payload(VANILLA_ARGS, {SQA: 1.0}, limit=5)}, 5)
    failed = write_sweep(tmp_path / "b", "broken", {"vanilla": "failed: OSError: disk full"})
    full = write_sweep(tmp_path / "c", "full", {"vanilla": results_payload(VANILLA_ARGS, {SQA: 0.9})})
    reference = tmp_path / "reference"
    assert lb.main([str(smoke), "--out", str(reference), "--reference"]) == 1
    assert "ran with --limit 5" in capsys.readouterr().err
    assert lb.main([str(failed), "--out", str(reference), "--reference"]) == 1
    assert "failed: OSError: disk full" in capsys.readouterr().err
    assert not reference.exists()
    assert lb.main([str(full), "--out", str(reference), "--reference"]) == 0
    assert (reference / "leaderboard.md").is_file()


def test_per_task_cost_keys_win_over_the_run_wide_ones(tmp_path: Path) -> None:
    both = {**cost(0.5, 0.9, tasks=()), f"avg_latency_s:{SQA}": 0.2, f"avg_flops_ratio:{SQA}": 0.3}
    write_results(tmp_path, results_payload(HIMAP_ARGS, {SQA: 0.7, GQA: 0.6}, both))
    (run,) = lb.collect_runs([tmp_path])
    assert lb.task_cost(run, SQA) == (0.3, 0.2)
    assert lb.task_cost(run, GQA) == (0.9, 0.5)  # no per-task key: the run-wide value
    (row,) = board_for(tmp_path).to_dict(orient="records")
    assert row["latency (s/example)"] == pytest.approx((0.2 + 0.5) / 2)
    assert row["FLOPs ratio"] == pytest.approx((0.3 + 0.9) / 2)


def test_a_run_without_a_benchmark_gets_an_empty_cell(tmp_path: Path) -> None:
    vanilla = results_payload(VANILLA_ARGS, {SQA: 0.679, GQA: 0.75}, cost(0.2, 1.0, (SQA, GQA)))
    write_sweep(tmp_path, "s", {"vanilla": vanilla, "himap": results_payload(HIMAP_ARGS, {SQA: 0.683}, cost(0.1, 0.3))})
    out = tmp_path / "board"
    assert lb.main([str(tmp_path), "--out", str(out)]) == 0
    header, _, vanilla_md, himap_md = read_markdown(out / "leaderboard.md")
    gqa = header.index(f"{GQA} exact_match")
    assert header[gqa + 1] == f"{SQA} exact_match"
    assert himap_md[gqa] == "" and vanilla_md[gqa] == "0.7500"
    # The vanilla run covers other benchmarks than the row: their latencies are not over the same documents.
    assert himap_md[header.index("speed-up vs none")] == ""


def test_mean_column_averages_the_benchmarks_of_a_row_and_only_complete_rows(tmp_path: Path) -> None:
    vanilla = results_payload(VANILLA_ARGS, {SQA: 0.7, GQA: 0.5}, cost(0.2, 1.0, (SQA, GQA)))
    write_sweep(tmp_path, "s", {"vanilla": vanilla, "himap": results_payload(HIMAP_ARGS, {SQA: 0.6}, cost(0.1, 0.3))})
    board = board_for(tmp_path)
    assert list(board.columns).index("mean") == list(board.columns).index(f"{SQA} exact_match") + 1
    vanilla_row, himap_row = board.to_dict(orient="records")
    assert vanilla_row["mean"] == pytest.approx(0.6)
    assert pd.isna(himap_row["mean"])  # a mean over SQA alone would not compare with one over SQA and GQA


def test_the_mean_leaves_out_mme_whose_score_is_in_points(tmp_path: Path) -> None:
    """MME's perception score runs to 2000: in a mean with shares it would be the mean. It keeps its column."""
    payload = results_payload(VANILLA_ARGS, {SQA: 0.7, GQA: 0.5})
    payload["results"]["mme"] = {"alias": "mme", "mme_perception_score,none": 1500.0, "mme_cognition_score,none": 300.0}
    write_results(tmp_path, payload)
    (row,) = board_for(tmp_path).to_dict(orient="records")
    assert row["mme mme_perception_score"] == 1500.0  # the main metric papers report, not cognition
    assert row["mean"] == pytest.approx(0.6)


def test_a_single_benchmark_gets_no_mean_column(tmp_path: Path) -> None:
    write_sweep(tmp_path, "s", {"vanilla": results_payload(VANILLA_ARGS, {SQA: 0.7}, cost(0.2, 1.0))})
    assert "mean" not in board_for(tmp_path).columns


def test_synthetic_tasks_are_ranked_by_their_benchmarks_headline() -> None:
    from himap_lmms.synthetic import BENCHMARKS

    for spec in BENCHMARKS.values():
        assert lb.MAIN_METRICS[spec.task] == f"{spec.headline},none"


def test_pope_is_ranked_by_f1() -> None:
    pope = {"alias": "pope_synth", "pope_accuracy,none": 0.9, "pope_f1_score,none": 0.88, "pope_yes_ratio,none": 0.5}
    assert lb.candidate_metric("pope_synth", pope) == "pope_f1_score,none"
    assert lb.candidate_metric("pope", pope) == "pope_f1_score,none"


def test_malformed_and_foreign_json_are_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = write_results(tmp_path, results_payload(VANILLA_ARGS, {SQA: 0.679}, cost(0.197, 1.0)))
    broken = tmp_path / "broken_results.json"
    broken.write_text('{"results": {')
    foreign = tmp_path / "other" / "results.json"
    foreign.parent.mkdir()
    foreign.write_text(json.dumps({"accuracy": 0.9}))
    listed = tmp_path / "list_results.json"
    listed.write_text("[1, 2]")
    no_config = tmp_path / "results_noconfig.json"
    no_config.write_text(json.dumps({"results": {SQA: {"exact_match,none": 0.5}}}))
    old_sweep = tmp_path / "old-sweep" / lb.SWEEP_MANIFEST
    old_sweep.parent.mkdir()
    old_sweep.write_text(json.dumps({"runs": []}))  # no sweep id, no conditions
    with caplog.at_level(logging.WARNING, logger="himap_lmms.leaderboard"):
        board = board_for(tmp_path)
    assert list(board["source"]) == [str(good)]
    for bad in (broken, foreign, listed, no_config, old_sweep):
        assert any(str(bad) in message for message in caplog.messages), bad


def test_markdown_csv_and_json_agree(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fastv = "pretrained=/models/llava-v1.5-7b,method=fastv,k=2,ratio=0.5"
    runs = {
        "vanilla": results_payload(VANILLA_ARGS, {SQA: 0.679}, cost(0.197, 1.0)),
        "himap": results_payload(HIMAP_ARGS, {SQA: 0.683}, cost(0.116, 0.24), date="20251124_103000"),
        "fastv": results_payload(fastv, {SQA: 0.66}, cost(0.13, 0.5), date="20251124_104500"),
        "broken": "failed: RuntimeError: out of memory",
    }
    write_sweep(tmp_path, "s", runs)
    out = tmp_path / "board"
    assert lb.main([str(tmp_path), "--out", str(out)]) == 0
    assert capsys.readouterr().out == (out / "leaderboard.md").read_text()
    markdown = read_markdown(out / "leaderboard.md")
    table = pd.read_csv(out / "leaderboard.csv", keep_default_na=False, dtype=str)
    records = json.loads((out / "leaderboard.json").read_text())
    assert markdown[0] == list(table.columns.drop("source")) and list(records[0]) == list(table.columns)
    assert len(markdown) - 2 == len(table) == len(records) == 4
    for md_row, (_, csv_row), record in zip(markdown[2:], table.iterrows(), records):
        for column, md_cell in zip(markdown[0], md_row):
            value = record[column]
            if value is None or value == "":
                assert md_cell == csv_row[column] == ""
            elif isinstance(value, float):
                assert float(csv_row[column]) == value
                assert md_cell == f"{value:.{2 if column == 'speed-up vs none' else 4}f}"
            else:
                assert md_cell == csv_row[column] == str(value)


def test_model_args_as_dict_or_string_name_the_same_row(tmp_path: Path) -> None:
    as_dict = {"pretrained": "/models/llava-v1.5-7b", "method": "himap", "k1": 2, "keep1": 288, "k2": 8, "keep2": 72}
    write_results(tmp_path, results_payload(HIMAP_ARGS, {SQA: 0.68}, cost(0.1, 0.24), date="20251124_101500"))
    write_results(tmp_path, results_payload(as_dict, {SQA: 0.69}, cost(0.1, 0.24), date="20251124_111500"))
    assert len(set(board_for(tmp_path)["settings"])) == 1


def test_settings_order_and_output_paths_do_not_split_the_vanilla_pairing(tmp_path: Path) -> None:
    reordered = "method=none,cost_log=/tmp/c.jsonl,pretrained=/models/llava-v1.5-7b,dtype=float16"
    himap = HIMAP_ARGS + ",dtype=float16,cost_log=/tmp/d.jsonl"
    runs = {
        "vanilla": results_payload(reordered, {SQA: 0.68}, cost(0.2, 1.0)),
        "himap": results_payload(himap, {SQA: 0.68}, cost(0.1, 0.24)),
    }
    write_sweep(tmp_path, "s", runs)
    assert row_of(board_for(tmp_path), "himap")["speed-up vs none"] == pytest.approx(2.0)
    assert "cost_log" not in row_of(board_for(tmp_path), "himap")["settings"]


def test_vanilla_reference_needs_the_same_non_pruning_settings(tmp_path: Path) -> None:
    runs = {
        "vanilla16": results_payload(VANILLA_ARGS + ",dtype=float16", {SQA: 0.68}, cost(0.2, 1.0)),
        "himap32": results_payload(HIMAP_ARGS + ",dtype=float32", {SQA: 0.68}, cost(0.1, 0.24)),
    }
    write_sweep(tmp_path / "a", "s", runs)
    assert is_empty(row_of(board_for(tmp_path / "a"), "himap")["speed-up vs none"])
    runs["vanilla32"] = results_payload(VANILLA_ARGS + ",dtype=float32", {SQA: 0.68}, cost(0.3, 1.0))
    write_sweep(tmp_path / "b", "s", runs)
    assert row_of(board_for(tmp_path / "b"), "himap")["speed-up vs none"] == pytest.approx(3.0)


def test_a_random_run_finds_its_vanilla_reference(tmp_path: Path) -> None:
    """``seed`` is a pruning argument (of method=random) like any other: it must not split the pairing."""
    random = "pretrained=/models/llava-v1.5-7b,method=random,k1=2,ratio1=0.5,k2=8,ratio2=0.125,seed=0"
    runs = {
        "vanilla": results_payload(VANILLA_ARGS, {SQA: 0.68}, cost(0.2, 1.0)),
        "random": results_payload(random, {SQA: 0.6}, cost(0.1, 0.3)),
    }
    write_sweep(tmp_path, "s", runs)
    assert row_of(board_for(tmp_path), "random")["speed-up vs none"] == pytest.approx(2.0)


def test_a_run_without_method_is_vanilla_and_without_cost_has_empty_cost_cells(tmp_path: Path) -> None:
    write_results(tmp_path, results_payload("pretrained=liuhaotian/llava-v1.5-7b", {SQA: 0.679}, model="llava"))
    (row,) = board_for(tmp_path).to_dict(orient="records")
    assert (row["model"], row["method"], row["backend"]) == ("liuhaotian/llava-v1.5-7b", "none", "llava")
    assert is_empty(row["FLOPs ratio"]) and is_empty(row["latency (s/example)"])


def test_main_metric_rule() -> None:
    unknown = {"alias": "x", "acc_stderr,none": 0.01, "acc,none": 0.5, "f1,none": 0.3}
    assert lb.candidate_metric("some_task", unknown) == "acc,none"
    known = {"alias": SQA, "acc_natural_science,none": 0.7, "exact_match,none": 0.68}
    assert lb.candidate_metric(SQA, known) == "exact_match,none"
    assert lb.candidate_metric("t", {"alias": "t", "score,none": "N/A", "acc,none": None}) is None


def test_model_display_name() -> None:
    assert lb.model_display_name("/models/llava-v1.5-7b-hf/") == "llava-v1.5-7b-hf"
    assert lb.model_display_name("./ckpt/tiny") == "tiny"
    assert lb.model_display_name("liuhaotian/llava-v1.5-7b") == "liuhaotian/llava-v1.5-7b"


def test_results_files_inside_a_sweep_are_read_once_through_it(tmp_path: Path) -> None:
    write_sweep(tmp_path, "s", {"vanilla": results_payload(VANILLA_ARGS, {SQA: 0.679}, cost(0.2, 1.0))})
    write_results(tmp_path / "loose", results_payload(HIMAP_ARGS, {SQA: 0.6}, cost(0.1, 0.3)))
    board = board_for(tmp_path, tmp_path / "s" / lb.SWEEP_MANIFEST)
    assert sorted(zip(board["method"], board["sweep"])) == [("himap", ""), ("none", "s")]


def test_a_row_shows_the_schedule_the_engine_ran_and_one_schedule_has_one_label(tmp_path: Path) -> None:
    spellings = [
        "pretrained=/models/llava-v1.5-7b,method=himap",  # the defaults
        "pretrained=/models/llava-v1.5-7b,method=himap,k1=2,ratio1=0.5,k2=8,ratio2=0.125",
        "pretrained=/models/llava-v1.5-7b,ratio2=0.1250,k2=8.0,method=himap,ratio1=.5",
    ]
    for number, args in enumerate(spellings):
        write_results(tmp_path / str(number), results_payload(args, {SQA: 0.5}, date=f"2025112{number}_101500"))
    write_results(tmp_path / "fastv", results_payload(VANILLA_ARGS + ",method=fastv,dtype=float32", {SQA: 0.5}))
    board = board_for(tmp_path)
    himap = board[board["method"] == "himap"]
    assert set(himap["schedule"]) == {"himap(k1=2,ratio1=0.5,k2=8,ratio2=0.125)"} and set(himap["settings"]) == {""}
    assert (row_of(board, "fastv")["schedule"], row_of(board, "fastv")["settings"]) == (
        "fastv(k=2,ratio=0.5)",
        "dtype=float32",
    )


def test_arguments_that_make_no_schedule_are_shown_as_typed(tmp_path: Path) -> None:
    write_sweep(tmp_path, "s", {"vanilla": "failed: ValueError: k1 is not an argument of method=none"})
    manifest = SweepManifest.read(tmp_path / "s" / lb.SWEEP_MANIFEST)
    manifest.runs[0].model_args = VANILLA_ARGS + ",k1=3"
    manifest.write(tmp_path / "s")
    assert row_of(board_for(tmp_path), "none")["schedule"] == "method=none,k1=3"


@pytest.mark.parametrize(("stored", "shown"), [(16.0, "16"), (16, "16"), (0.25, "0.25"), (None, "")])
def test_limit_is_shown_one_way_for_plain_runs_and_sweeps(tmp_path: Path, stored: float | None, shown: str) -> None:
    write_results(tmp_path / "plain", results_payload(HIMAP_ARGS, {SQA: 0.5}, limit=stored))
    write_sweep(tmp_path, "s", {"vanilla": results_payload(VANILLA_ARGS, {SQA: 0.5}, limit=stored)}, limit=stored)
    assert list(board_for(tmp_path)["limit"]) == [shown, shown]


def test_interrupted_and_not_run_presets_are_rows_without_scores(tmp_path: Path) -> None:
    runs = {"vanilla": results_payload(VANILLA_ARGS, {SQA: 0.7}), "fastv": INTERRUPTED, "himap": NOT_RUN}
    board = board_for(write_sweep(tmp_path, "s", runs))
    assert dict(zip(board["status"], board[f"{SQA} exact_match"].isna())) == {
        "ok": False,
        INTERRUPTED: True,
        NOT_RUN: True,
    }


def test_a_damaged_manifest_still_lists_the_sweeps_results_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runs = {"vanilla": results_payload(VANILLA_ARGS, {SQA: 0.7}), "himap": results_payload(HIMAP_ARGS, {SQA: 0.6})}
    sweep = write_sweep(tmp_path, "s", runs)
    manifest = sweep / lb.SWEEP_MANIFEST
    manifest.write_text(manifest.read_text()[:100])  # truncated mid-write
    with caplog.at_level(logging.WARNING, logger="himap_lmms.leaderboard"):
        board = board_for(tmp_path)
    assert any(str(manifest) in message for message in caplog.messages)
    assert sorted(zip(board["method"], board["status"], board["sweep"])) == [
        ("himap", lb.UNRECORDED, "s"),
        ("none", lb.UNRECORDED, "s"),
    ]
    assert sorted(board[f"{SQA} exact_match"]) == [0.6, 0.7]


def test_an_output_folder_that_cannot_be_written_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_results(tmp_path / "runs", results_payload(VANILLA_ARGS, {SQA: 0.7}))
    (tmp_path / "occupied").write_text("a file where the table should go")
    assert lb.main([str(tmp_path / "runs"), "--out", str(tmp_path / "occupied")]) == lb.EXIT_NOT_WRITTEN
    assert f"not written: --out {tmp_path / 'occupied'}: " in capsys.readouterr().err


def test_nothing_found_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert lb.main([str(tmp_path), "--out", str(tmp_path / "board")]) == 1
    assert "no lmms-eval results or sweeps found" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# Files written by lmms-eval itself
# ----------------------------------------------------------------------------------------------------------

TINY_TASK = """\
task: tiny_qa
dataset_path: json
dataset_kwargs:
  data_files:
    test: tiny_qa.jsonl
test_split: test
output_type: generate_until
doc_to_text: "{{question}}"
doc_to_target: "{{answer}}"
process_results: !function tiny_qa.process_results
generation_kwargs:
  max_new_tokens: 4
  until: []
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""

TINY_UTILS = """\
def process_results(doc, results):
    return {"exact_match": float(results[0].strip() == doc["answer"])}
"""


def test_lmms_eval_stamps_read_as_utc(tmp_path: Path) -> None:
    """The installed lmms-eval's own ``date`` stamp of a run started now shows as now, in UTC."""
    from datetime import datetime, timezone

    from lmms_eval.utils import get_datetime_str

    stamp = get_datetime_str()
    shown = lb.run_time({"date": stamp}, tmp_path / "results.json")
    assert abs((shown - datetime.now(timezone.utc)).total_seconds()) < 60, (stamp, shown)


def test_reads_files_that_lmms_eval_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs through lmms-eval's evaluator and EvaluationTracker, cost logged the way the adapter does."""
    from lmms_eval import evaluator
    from lmms_eval.api.model import lmms
    from lmms_eval.loggers.evaluation_tracker import EvaluationTracker
    from lmms_eval.models.model_utils.gen_metrics import log_metrics
    from lmms_eval.tasks import TaskManager

    task_dir = tmp_path / "task"
    task_dir.mkdir()
    (task_dir / "tiny_qa.yaml").write_text(TINY_TASK)
    (task_dir / "tiny_qa.py").write_text(TINY_UTILS)
    docs = [{"question": "1+1?", "answer": "2"}, {"question": "2+2?", "answer": "4"}]
    (task_dir / "tiny_qa.jsonl").write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))

    class StubModel(lmms):
        def __init__(self, latency: float, flops_ratio: float, answers: list[str]) -> None:
            super().__init__()
            self.latency, self.flops_ratio, self.answers = latency, flops_ratio, answers

        def generate_until(self, requests):
            for request in requests:
                log_metrics(
                    total_elapsed_time=self.latency,
                    total_gen_tokens=1,
                    avg_speed=1 / self.latency,
                    additional_metrics={
                        "total_requests": 1,
                        "flops_ratio": self.flops_ratio,
                        "prefill_s": self.latency / 2,
                        f"flops_ratio:{request.task_name}": self.flops_ratio,
                        f"latency_s:{request.task_name}": self.latency,
                    },
                )
            return self.answers[: len(requests)]

        def loglikelihood(self, requests):
            raise NotImplementedError

        def generate_until_multi_round(self, requests):
            raise NotImplementedError

    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    out = tmp_path / "results"
    runs = [
        (VANILLA_ARGS, StubModel(0.2, 1.0, ["2", "4"]), "20251124_101500"),
        (HIMAP_ARGS, StubModel(0.08, 0.3, ["2", "5"]), "20251124_103000"),
    ]
    for model_args, model, stamp in runs:
        tracker = EvaluationTracker(output_path=str(out))
        results = evaluator.simple_evaluate(
            model=model,
            model_args=model_args,
            tasks=["tiny_qa"],
            task_manager=manager,
            evaluation_tracker=tracker,
            datetime_str=stamp,
            log_samples=False,
        )
        tracker.save_results_aggregated(results=results, samples=None, datetime_str=stamp)

    files = sorted(out.rglob("*_results.json"))
    assert [path.name for path in files] == ["20251124_101500_results.json", "20251124_103000_results.json"]
    board = lb.build_leaderboard([lb.load_run(path) for path in files])
    vanilla, himap = row_of(board, "none"), row_of(board, "himap")
    assert (vanilla["tiny_qa exact_match"], himap["tiny_qa exact_match"]) == (1.0, 0.5)
    assert himap["FLOPs ratio"] == pytest.approx(0.3) and himap["latency (s/example)"] == pytest.approx(0.08)
    assert (himap["n"], himap["limit"]) == (2, "")
    assert himap["model"] == "llava-v1.5-7b" and himap["schedule"] == "himap(k1=2,keep1=288,k2=8,keep2=72)"
