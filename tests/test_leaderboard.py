"""The leaderboard export, fed with result files in lmms-eval 0.7.3's own layout.

Hand-built files copy what ``EvaluationTracker.save_results_aggregated`` writes
(``<output_path>/<model_name_sanitized>/<YYYYMMDD_HHMMSS>_results.json`` holding ``results``, ``configs``,
``config``, ``date``, ``throughput``, the tracker's own fields...); one test runs lmms-eval itself with a
stub model to write the files, so the schema cannot drift from the real one unnoticed.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from himap_lmms import leaderboard as lb

SQA = "scienceqa_img_himap"
MME = "mme"
HIMAP_ARGS = "pretrained=/models/llava-v1.5-7b,method=himap,k1=2,keep1=288,k2=8,keep2=72"
VANILLA_ARGS = "pretrained=/models/llava-v1.5-7b,method=none"


def results_payload(
    model_args: str | dict[str, Any],
    scores: dict[str, float],
    throughput: dict[str, float] | None = None,
    date: str = "20251124_101500",
    model: str = "himap_llava",
) -> dict[str, Any]:
    """A results JSON as lmms-eval 0.7.3 writes it (evaluator.simple_evaluate + EvaluationTracker)."""
    results = {
        task: {
            "alias": task,
            "exact_match,none": value,
            "exact_match_stderr,none": 0.0104,
            "exact_match_stderr_clt,none": 0.0104,
            "exact_match_stderr_clustered,none": "N/A",
        }
        for task, value in scores.items()
    }
    return {
        "results": results,
        "group_subtasks": {task: [] for task in scores},
        "configs": {
            task: {"task": task, "dataset_path": "lmms-lab/ScienceQA", "output_type": "generate_until"}
            for task in scores
        },
        "versions": {task: 1.0 for task in scores},
        "n-shot": {task: 0 for task in scores},
        "higher_is_better": {task: {"exact_match": True} for task in scores},
        "n-samples": {task: {"original": 2017, "effective": 2017} for task in scores},
        "config": {
            "model": model,
            "model_args": model_args,
            "model_backend": "himap_lmms.lmms_model.HimapLlava (simple)",
            "batch_size": "1",
            "batch_sizes": [],
            "device": "cuda:0",
            "use_cache": None,
            "limit": None,
            "offset": 0,
            "bootstrap_iters": 100000,
            "process_docs_parallel": 4,
            "gen_kwargs": "",
            "random_seed": 0,
            "numpy_seed": 1234,
            "torch_seed": 1234,
            "fewshot_seed": 1234,
        },
        "git_hash": "55d93af",
        "git_branch": "main",
        "lmms_eval_version": "0.7.3",
        "date": date,
        **({"throughput": throughput} if throughput is not None else {}),
        "usage": {},
        "task_hashes": {},
        "model_source": model,
        "model_name": "/models/llava-v1.5-7b",
        "model_name_sanitized": "__models__llava-v1.5-7b",
        "system_instruction": None,
        "system_instruction_sha": None,
        "fewshot_as_multiturn": False,
        "chat_template": None,
        "chat_template_sha": None,
        "start_time": 1.5,
        "end_time": 421.5,
        "total_evaluation_time_seconds": "420.0",
    }


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


def write_results(root: Path, payload: dict[str, Any]) -> Path:
    """Where EvaluationTracker puts it, with a samples file beside it that must be ignored."""
    folder = root / payload["model_name_sanitized"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{payload['date']}_results.json"
    path.write_text(json.dumps(payload, indent=2))
    (folder / f"{payload['date']}_samples_{SQA}.jsonl").write_text('{"doc_id": 0}\n')
    return path


def board_for(root: Path, newest_only: bool = False) -> lb.Leaderboard:
    runs = [run for path in lb.find_result_files([root]) if (run := lb.load_run(path))]
    return lb.build_leaderboard(runs, newest_only=newest_only)


def row_of(board: lb.Leaderboard, method: str) -> dict[str, Any]:
    (row,) = [row for row in board.rows if row["method"] == method]
    return row


def read_markdown(path: Path) -> list[list[str]]:
    lines = path.read_text().splitlines()
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines if line.strip()]


# ----------------------------------------------------------------------------------------------------------


def test_cells_equal_the_source_numbers(tmp_path: Path) -> None:
    write_results(tmp_path, results_payload(VANILLA_ARGS, {SQA: 0.679}, cost(0.197, 1.0)))
    write_results(tmp_path, results_payload(HIMAP_ARGS, {SQA: 0.683}, cost(0.116, 0.24), date="20251124_103000"))
    board = board_for(tmp_path)
    assert board.benchmarks == [(SQA, "exact_match,none")]
    vanilla, himap = board.rows  # vanilla first
    assert (vanilla["method"], himap["method"]) == ("none", "himap")
    assert himap["model"] == "llava-v1.5-7b" and himap["backend"] == "himap_llava"
    assert himap["settings"] == "k1=2,keep1=288,k2=8,keep2=72" and vanilla["settings"] == ""
    assert himap["scores"][SQA] == 0.683 and vanilla["scores"][SQA] == 0.679
    assert (himap["flops_ratio"], himap["latency_s"]) == (0.24, 0.116)
    assert (vanilla["flops_ratio"], vanilla["latency_s"]) == (1.0, 0.197)
    assert himap["run"] == "2025-11-24 02:30:00"  # lmms-eval stamped 10:30 in its UTC+8; the table is in UTC
    assert board.columns[4] == "run (UTC)"


def test_speedup_is_vanilla_latency_over_row_latency(tmp_path: Path) -> None:
    write_results(tmp_path, results_payload(VANILLA_ARGS, {SQA: 0.679}, cost(0.197, 1.0)))
    write_results(tmp_path, results_payload(HIMAP_ARGS, {SQA: 0.683}, cost(0.116, 0.24), date="20251124_103000"))
    board = board_for(tmp_path)
    assert row_of(board, "himap")["speedup"] == pytest.approx(0.197 / 0.116)
    assert row_of(board, "none")["speedup"] == pytest.approx(1.0)


def test_per_task_cost_keys_win_over_the_run_wide_ones(tmp_path: Path) -> None:
    both = {**cost(0.5, 0.9, tasks=()), f"avg_latency_s:{SQA}": 0.2, f"avg_flops_ratio:{SQA}": 0.3}
    write_results(tmp_path, results_payload(HIMAP_ARGS, {SQA: 0.7, MME: 0.6}, both))
    (row,) = board_for(tmp_path).rows
    assert row["per_task"][SQA] == {"flops_ratio": 0.3, "latency_s": 0.2}
    assert row["per_task"][MME] == {"flops_ratio": 0.9, "latency_s": 0.5}  # no per-task key: run-wide value
    assert row["latency_s"] == pytest.approx((0.2 + 0.5) / 2)
    assert row["flops_ratio"] == pytest.approx((0.3 + 0.9) / 2)


def test_a_run_without_a_benchmark_gets_an_empty_cell(tmp_path: Path) -> None:
    write_results(tmp_path, results_payload(VANILLA_ARGS, {SQA: 0.679, MME: 0.75}, cost(0.2, 1.0, (SQA, MME))))
    write_results(tmp_path, results_payload(HIMAP_ARGS, {SQA: 0.683}, cost(0.1, 0.3), date="20251124_103000"))
    out = tmp_path / "board"
    assert lb.main([str(tmp_path), "--out", str(out)]) == 0
    header, _, vanilla_md, himap_md = read_markdown(out / "leaderboard.md")
    assert header[5:7] == [f"{MME} exact_match", f"{SQA} exact_match"]
    assert himap_md[5] == "" and vanilla_md[5] == "0.7500"
    rows = list(csv.reader(io.StringIO((out / "leaderboard.csv").read_text())))
    assert rows[2][5] == ""
    assert json.loads((out / "leaderboard.json").read_text())["rows"][1]["scores"][MME] is None
    # The speed-up compares like with like: vanilla's latency on the row's own benchmark.
    assert json.loads((out / "leaderboard.json").read_text())["rows"][1]["speedup"] == pytest.approx(2.0)


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
    with caplog.at_level(logging.WARNING, logger="himap_lmms.leaderboard"):
        board = board_for(tmp_path)
    assert [row["source"] for row in board.rows] == [str(good)]
    for bad in (broken, foreign, listed, no_config):
        assert any(str(bad) in message for message in caplog.messages), bad


def test_two_runs_of_one_row_are_both_kept_and_labelled_by_time(tmp_path: Path) -> None:
    write_results(tmp_path, results_payload(HIMAP_ARGS, {SQA: 0.680}, cost(0.12, 0.24), date="20251124_101500"))
    write_results(tmp_path, results_payload(HIMAP_ARGS, {SQA: 0.683}, cost(0.11, 0.24), date="20251125_090000"))
    board = board_for(tmp_path)
    assert [(row["run"], row["scores"][SQA]) for row in board.rows] == [
        ("2025-11-24 02:15:00", 0.680),
        ("2025-11-25 01:00:00", 0.683),
    ]
    (newest,) = board_for(tmp_path, newest_only=True).rows
    assert (newest["run"], newest["scores"][SQA]) == ("2025-11-25 01:00:00", 0.683)


def test_newest_only_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_results(tmp_path, results_payload(HIMAP_ARGS, {SQA: 0.680}, cost(0.12, 0.24), date="20251124_101500"))
    write_results(tmp_path, results_payload(HIMAP_ARGS, {SQA: 0.683}, cost(0.11, 0.24), date="20251125_090000"))
    out = tmp_path / "board"
    assert lb.main([str(tmp_path), "--out", str(out), "--newest-only"]) == 0
    rows = json.loads((out / "leaderboard.json").read_text())["rows"]
    assert [row["run"] for row in rows] == ["2025-11-25 01:00:00"]
    assert capsys.readouterr().out == (out / "leaderboard.md").read_text()


def test_markdown_csv_and_json_agree(tmp_path: Path) -> None:
    write_results(tmp_path, results_payload(VANILLA_ARGS, {SQA: 0.679, MME: 0.7}, cost(0.197, 1.0, (SQA, MME))))
    write_results(tmp_path, results_payload(HIMAP_ARGS, {SQA: 0.683}, cost(0.116, 0.24), date="20251124_103000"))
    fastv = "pretrained=/models/llava-v1.5-7b,method=fastv,k=2,ratio=0.5"
    write_results(tmp_path, results_payload(fastv, {SQA: 0.66}, cost(0.13, 0.5), date="20251124_104500"))
    out = tmp_path / "board"
    assert lb.main([str(tmp_path), "--out", str(out)]) == 0
    markdown = read_markdown(out / "leaderboard.md")
    table = list(csv.reader(io.StringIO((out / "leaderboard.csv").read_text())))
    payload = json.loads((out / "leaderboard.json").read_text())
    assert markdown[0] == table[0] == payload["columns"]
    assert len(markdown) - 2 == len(table) - 1 == len(payload["rows"]) == 3
    for md_row, csv_row, json_row in zip(markdown[2:], table[1:], payload["rows"]):
        assert md_row[:5] == csv_row[:5] == [json_row[name] for name in lb.FIXED_COLUMNS]
        numbers = [json_row["scores"][task] for task, _ in payload_benchmarks(payload)]
        numbers += [json_row["flops_ratio"], json_row["latency_s"], json_row["speedup"]]
        for column, md_cell, csv_cell, value in zip(payload["columns"][5:], md_row[5:], csv_row[5:], numbers):
            if value is None:
                assert md_cell == csv_cell == ""
            else:
                assert float(csv_cell) == value
                assert md_cell == lb.format_markdown_cell(value, column)


def payload_benchmarks(payload: dict[str, Any]) -> list[tuple[str, str]]:
    return [(entry["task"], entry["metric"]) for entry in payload["benchmarks"]]


def test_model_args_as_dict_or_string_name_the_same_row(tmp_path: Path) -> None:
    as_dict = {"pretrained": "/models/llava-v1.5-7b", "method": "himap", "k1": 2, "keep1": 288, "k2": 8, "keep2": 72}
    write_results(tmp_path, results_payload(HIMAP_ARGS, {SQA: 0.68}, cost(0.1, 0.24), date="20251124_101500"))
    write_results(tmp_path, results_payload(as_dict, {SQA: 0.69}, cost(0.1, 0.24), date="20251124_111500"))
    assert len(board_for(tmp_path, newest_only=True).rows) == 1


def test_settings_order_and_output_paths_do_not_split_rows(tmp_path: Path) -> None:
    reordered = "keep2=72,method=himap,pretrained=/models/llava-v1.5-7b,k2=8,keep1=288,k1=2,cost_log=/tmp/c.jsonl"
    write_results(tmp_path, results_payload(HIMAP_ARGS, {SQA: 0.68}, cost(0.1, 0.24), date="20251124_101500"))
    write_results(tmp_path, results_payload(reordered, {SQA: 0.69}, cost(0.1, 0.24), date="20251124_111500"))
    assert len(board_for(tmp_path, newest_only=True).rows) == 1


def test_vanilla_reference_needs_the_same_non_pruning_settings(tmp_path: Path) -> None:
    write_results(tmp_path, results_payload(VANILLA_ARGS + ",dtype=float16", {SQA: 0.68}, cost(0.2, 1.0)))
    other_dtype = HIMAP_ARGS + ",dtype=float32"
    write_results(tmp_path, results_payload(other_dtype, {SQA: 0.68}, cost(0.1, 0.24), date="20251124_103000"))
    assert row_of(board_for(tmp_path), "himap")["speedup"] is None
    write_results(tmp_path, results_payload(VANILLA_ARGS + ",dtype=float32", {SQA: 0.68}, cost(0.3, 1.0)))
    assert row_of(board_for(tmp_path), "himap")["speedup"] == pytest.approx(3.0)


def test_a_run_without_method_is_vanilla_and_without_cost_has_empty_cost_cells(tmp_path: Path) -> None:
    write_results(tmp_path, results_payload("pretrained=liuhaotian/llava-v1.5-7b", {SQA: 0.679}, model="llava"))
    (row,) = board_for(tmp_path).rows
    assert (row["model"], row["method"], row["backend"]) == ("liuhaotian/llava-v1.5-7b", "none", "llava")
    assert row["flops_ratio"] is None and row["latency_s"] is None and row["speedup"] is None


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


def test_result_file_search(tmp_path: Path) -> None:
    names = ["m/20251124_101500_results.json", "old/results.json", "old/results_2024-01-01T00-00-00.json"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}")
    (tmp_path / "m" / "20251124_101500_samples_x.jsonl").write_text("")
    (tmp_path / "leaderboard.json").write_text("{}")
    explicit = tmp_path / "any_name.json"
    explicit.write_text("{}")
    found = lb.find_result_files([tmp_path, explicit, tmp_path / "old" / "results.json"])
    assert sorted(path.relative_to(tmp_path).as_posix() for path in found) == sorted([*names, "any_name.json"])


def test_nothing_found_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert lb.main([str(tmp_path), "--out", str(tmp_path / "board")]) == 1
    assert "no lmms-eval results found" in capsys.readouterr().err


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
    assert board.benchmarks == [("tiny_qa", "exact_match,none")]
    vanilla, himap = row_of(board, "none"), row_of(board, "himap")
    assert (vanilla["scores"]["tiny_qa"], himap["scores"]["tiny_qa"]) == (1.0, 0.5)
    assert himap["flops_ratio"] == pytest.approx(0.3) and himap["latency_s"] == pytest.approx(0.08)
    assert himap["speedup"] == pytest.approx(0.2 / 0.08)
    assert himap["model"] == "llava-v1.5-7b" and himap["settings"] == "k1=2,keep1=288,k2=8,keep2=72"
