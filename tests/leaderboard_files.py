"""Results files, samples and sweep folders written by hand, and the Markdown table read back: what the
leaderboard tests build their runs from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from himap_lmms.sweep_manifest import RunEntry, SweepManifest

SQA = "scienceqa_img_himap"


VANILLA_ARGS = "pretrained=/models/llava-v1.5-7b,method=none"


def results_payload(
    model_args: str | dict[str, Any],
    scores: dict[str, float],
    throughput: dict[str, float] | None = None,
    date: str = "20251124_101500",
    model: str = "himap_llava",
    limit: int | None = None,
    n: int = 2017,
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
        "n-samples": {task: {"original": 2017, "effective": n} for task in scores},
        "config": {
            "model": model,
            "model_args": model_args,
            "model_backend": "himap_lmms.lmms_model.HimapLlava (simple)",
            "batch_size": "1",
            "batch_sizes": [],
            "device": "cuda:0",
            "use_cache": None,
            "limit": limit,
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


def write_results(root: Path, payload: dict[str, Any]) -> Path:
    """Where EvaluationTracker puts it, with a samples file beside it that must be ignored."""
    folder = root / payload["model_name_sanitized"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{payload['date']}_results.json"
    path.write_text(json.dumps(payload, indent=2))
    (folder / f"{payload['date']}_samples_{SQA}.jsonl").write_text('{"doc_id": 0}\n')
    return path


def write_sweep(root: Path, sweep_id: str, runs: dict[str, dict[str, Any] | str], limit: int | None = None) -> Path:
    """A sweep folder as ``himap_lmms.sweep`` lays it out: preset -> results payload, or a failure status."""
    sweep = root / sweep_id
    entries = []
    for preset, outcome in runs.items():
        if isinstance(outcome, str):
            entries.append({"preset": preset, "model_args": VANILLA_ARGS, "status": outcome, "results": None})
            continue
        path = write_results(sweep / preset, outcome)
        entries.append(
            {
                "preset": preset,
                "model_args": outcome["config"]["model_args"],
                "status": "ok",
                "results": str(path.relative_to(sweep)),
            }
        )
    manifest = SweepManifest(
        sweep_id=sweep_id,
        started="2025-11-24T02:00:00+00:00",
        backend="himap_llava",
        batch_size=1,
        limit=limit,
        device="cpu",
        torch_threads=2,
        runs=[RunEntry(**entry) for entry in entries],
    )
    sweep.mkdir(parents=True, exist_ok=True)
    manifest.write(sweep)
    return sweep


def read_markdown(path: Path) -> list[list[str]]:
    lines = path.read_text().splitlines()
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines if line.strip()]
