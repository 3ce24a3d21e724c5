"""Collect lmms-eval result files into one leaderboard: Markdown, CSV and JSON.

    python -m himap_lmms.leaderboard RESULTS_DIR_OR_FILES... [--out DIR] [--newest-only]

lmms-eval 0.7.3 writes ``<output_path>/<model>/<YYYYMMDD_HHMMSS>_results.json`` per run (older harnesses
wrote ``results*.json``); directories are searched recursively for both names, files are read whatever
their name. Each run becomes one row, identified by (model, backend, method, settings):

- model: the ``pretrained`` entry of ``config.model_args`` (a string ``"k=v,k=v"`` or a dict); a filesystem
  path is shortened to its last component, a hub id is kept whole. Without one, ``config.model``.
- backend: ``config.model``, the lmms-eval model name (``himap_llava``, ``llava_hf``...).
- method: the ``method`` model arg; a run without one is vanilla (``none``), as the adapter's default is.
- settings: every other model arg, in the order given (``cost_log``, an output path, is left out).

A column per benchmark (``results`` entry) holds its main metric: the key named in :data:`MAIN_METRICS` for
known tasks, otherwise the first key of the task's results that is numeric, not ``alias`` and not a
stderr, in the newest run that has the task. A run without the benchmark, or without that metric, gets an
empty cell.

Cost comes from ``throughput``, where the adapter's per-example records land through lmms-eval's
``log_metrics`` (summary keys are prefixed ``avg_``): for each benchmark B of a run, the FLOPs ratio is
``avg_flops_ratio:B`` and the latency per example ``avg_latency_s:B`` when present, else the run-wide
``avg_flops_ratio`` / ``avg_latency``. A row's FLOPs ratio and latency are the means over its benchmarks.
Speed-up is the vanilla reference's latency over the same benchmarks divided by the row's latency; the
reference is the newest ``method=none`` run of the same model and backend whose settings equal the row's
settings without the pruning arguments (:data:`PRUNING_ARGS`) and that covers all the row's benchmarks.

Several runs of one row are all kept, each labelled by its time (the ``date`` field, else a timestamp in
the file name, else the file's modification time); ``--newest-only`` keeps the newest. A file that is not
JSON, or not an lmms-eval results file, is skipped with a warning naming it.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

RESULT_PATTERNS = ("*_results.json", "results*.json")

# Main metric of known tasks (results key "<metric>,<filter>").
MAIN_METRICS: dict[str, str] = {
    "scienceqa_img_himap": "exact_match,none",
    "scienceqa_img_himap_local": "exact_match,none",
    "scienceqa_img": "exact_match,none",
}

# model_args that name the model, in the order lmms-eval's own tracker looks for them.
MODEL_ARG_KEYS = ("pretrained", "model", "model_version", "model_name", "model_id", "path", "engine")

# The pruning methods' own knobs (himap_lmms.pruning.config); the rest of model_args must match vanilla's.
PRUNING_ARGS = frozenset({"k", "keep", "ratio", "k1", "keep1", "ratio1", "k2", "keep2", "ratio2"})

# model_args that say where outputs go, not how the model runs.
NON_SETTINGS = frozenset({"cost_log"})

VANILLA = "none"
_DATE_FORMAT = "%Y%m%d_%H%M%S"
# lmms-eval stamps ``date`` and its file names in Asia/Singapore time (``utils.get_datetime_str``), which has no
# daylight saving and no marker in the stamp; the leaderboard shows every run in UTC.
LMMS_EVAL_TIMEZONE = timezone(timedelta(hours=8))
_FILE_STAMP = re.compile(r"(\d{8}_\d{6})")

FIXED_COLUMNS = ("model", "backend", "method", "settings", "run")  # keys of a row dict
_HEADERS = {"run": "run (UTC)"}  # where a column's header says more than its key
COST_COLUMNS = ("FLOPs ratio", "latency (s/example)", "speed-up vs none")


@dataclass(frozen=True)
class Run:
    """One lmms-eval results file, reduced to what the leaderboard shows."""

    source: Path
    model: str
    backend: str
    method: str
    settings: tuple[tuple[str, str], ...]
    time: datetime
    label: str
    results: Mapping[str, Mapping[str, Any]]
    throughput: Mapping[str, Any]

    @property
    def key(self) -> tuple[str, str, str, frozenset[tuple[str, str]]]:
        """Row identity: settings compare as a set, so their order in model_args does not matter."""
        return (self.model, self.backend, self.method, frozenset(self.settings))

    @property
    def base_settings(self) -> frozenset[tuple[str, str]]:
        """Settings without the pruning knobs: what a vanilla reference must share."""
        return frozenset((k, v) for k, v in self.settings if k not in PRUNING_ARGS)

    @property
    def settings_text(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.settings)


@dataclass
class Leaderboard:
    """The table: benchmark columns (task, metric) and one row dict per run."""

    benchmarks: list[tuple[str, str]]
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        return [
            *(_HEADERS.get(c, c) for c in FIXED_COLUMNS),
            *(benchmark_label(t, m) for t, m in self.benchmarks),
            *COST_COLUMNS,
        ]


# ----------------------------------------------------------------------------------------------------------
# Reading result files
# ----------------------------------------------------------------------------------------------------------


def find_result_files(paths: Iterable[Path]) -> list[Path]:
    """Files as given, directories searched recursively for lmms-eval's result file names; no duplicates."""
    found: dict[Path, Path] = {}
    for path in paths:
        if path.is_dir():
            matches = sorted({match for pattern in RESULT_PATTERNS for match in path.rglob(pattern)})
            candidates = [match for match in matches if match.is_file()]
        elif path.is_file():
            candidates = [path]
        else:
            logger.warning("skipping %s: no such file or directory", path)
            candidates = []
        for candidate in candidates:
            found.setdefault(candidate.resolve(), candidate)
    return list(found.values())


def parse_model_args(model_args: str | Mapping[str, Any] | None) -> dict[str, str]:
    """``"a=1,b=x"`` or ``{"a": 1, "b": "x"}`` -> ``{"a": "1", "b": "x"}`` (lmms-eval's own split rule)."""
    if model_args is None:
        return {}
    if isinstance(model_args, Mapping):
        return {str(k): str(v) for k, v in model_args.items()}
    if not isinstance(model_args, str):
        raise ValueError(f"config.model_args is a {type(model_args).__name__}, not a string or a dict")
    parsed = {}
    for item in model_args.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"config.model_args entry {item!r} is not key=value")
        parsed[key.strip()] = value.strip()
    return parsed


def model_display_name(name: str) -> str:
    """A local path shows as its last component; a hub id (``org/name``) stays whole."""
    is_path = name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1
    return Path(name.rstrip("/\\")).name if is_path else name


def run_time(data: Mapping[str, Any], source: Path) -> datetime:
    """When the run happened, in UTC: ``date`` of the JSON, else a file-name timestamp, else the file's mtime."""
    for text in (str(data.get("date", "")), source.name):
        match = _FILE_STAMP.search(text)
        if match:
            try:
                stamp = datetime.strptime(match.group(1), _DATE_FORMAT)
                return stamp.replace(tzinfo=LMMS_EVAL_TIMEZONE).astimezone(timezone.utc)
            except ValueError:
                continue
    return datetime.fromtimestamp(source.stat().st_mtime, tz=timezone.utc)


def run_from_results(data: Any, source: Path) -> Run:
    """The :class:`Run` of one parsed results JSON; ``ValueError`` saying why when it is not one."""
    if not isinstance(data, Mapping):
        raise ValueError("not a JSON object")
    results, config = data.get("results"), data.get("config")
    if not isinstance(results, Mapping) or not results:
        raise ValueError("no 'results' object with task entries (not an lmms-eval results file)")
    if not all(isinstance(entry, Mapping) for entry in results.values()):
        raise ValueError("'results' entries are not metric objects")
    if not isinstance(config, Mapping) or "model_args" not in config:
        raise ValueError("no 'config.model_args' (not an lmms-eval results file)")
    args = parse_model_args(config["model_args"])
    backend = str(config.get("model") or "")
    model_key = next((key for key in MODEL_ARG_KEYS if args.get(key)), None)
    model = model_display_name(args[model_key]) if model_key else backend
    method = args.get("method", VANILLA)
    settings = tuple((k, v) for k, v in args.items() if k != model_key and k != "method" and k not in NON_SETTINGS)
    throughput = data.get("throughput")
    time = run_time(data, source)
    return Run(
        source=source,
        model=model,
        backend=backend,
        method=method,
        settings=settings,
        time=time,
        label=time.strftime("%Y-%m-%d %H:%M:%S"),
        results=results,
        throughput=throughput if isinstance(throughput, Mapping) else {},
    )


def load_run(path: Path) -> Run | None:
    """Read one file; a malformed or foreign file is ``None`` and a warning naming it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return run_from_results(data, path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as error:
        logger.warning("skipping %s: %s", path, error)
        return None


# ----------------------------------------------------------------------------------------------------------
# Metrics and cost
# ----------------------------------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    """Numbers only: ``"N/A"``, ``None``, booleans and NaN are no value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def candidate_metric(task: str, task_results: Mapping[str, Any]) -> str | None:
    """The task's main metric key in one run (see the module docstring for the rule)."""
    preferred = MAIN_METRICS.get(task)
    if preferred is not None and preferred in task_results:
        return preferred
    for key, value in task_results.items():
        if key == "alias" or "_stderr" in key.partition(",")[0]:
            continue
        if _number(value) is not None:
            return key
    return None


def choose_metrics(runs: Sequence[Run]) -> list[tuple[str, str]]:
    """One (task, metric) column per task, metric chosen from the newest run that has one."""
    tasks = sorted({task for run in runs for task in run.results})
    columns = []
    for task in tasks:
        newest_first = sorted((r for r in runs if task in r.results), key=lambda r: r.time, reverse=True)
        metric = next((m for r in newest_first if (m := candidate_metric(task, r.results[task]))), None)
        metric = metric or MAIN_METRICS.get(task)
        if metric is None:
            logger.warning("no numeric metric for task %s in any run; it gets no column", task)
            continue
        columns.append((task, metric))
    return columns


def task_cost(throughput: Mapping[str, Any], task: str) -> tuple[float | None, float | None]:
    """(FLOPs ratio, latency per example) for one task: per-task keys first, run-wide keys otherwise."""
    flops = _number(throughput.get(f"avg_flops_ratio:{task}"))
    latency = _number(throughput.get(f"avg_latency_s:{task}"))
    flops = flops if flops is not None else _number(throughput.get("avg_flops_ratio"))
    latency = latency if latency is not None else _number(throughput.get("avg_latency"))
    return flops, latency


def _mean(values: Iterable[float | None]) -> float | None:
    """Mean of the values; ``None`` if any is missing (a partial mean would compare unlike things)."""
    values = list(values)
    if not values or any(value is None for value in values):
        return None
    return sum(values) / len(values)


def mean_latency(run: Run, tasks: Iterable[str]) -> float | None:
    """The run's mean latency per example over ``tasks``; ``None`` if it lacks one of them."""
    tasks = list(tasks)
    if any(task not in run.results for task in tasks):
        return None
    return _mean(task_cost(run.throughput, task)[1] for task in tasks)


def vanilla_reference(run: Run, runs: Sequence[Run]) -> Run | None:
    """The newest vanilla run of the same model, backend and non-pruning settings covering run's tasks."""
    candidates = [
        other
        for other in runs
        if other.method == VANILLA
        and (other.model, other.backend) == (run.model, run.backend)
        and other.base_settings == run.base_settings
        and all(task in other.results for task in run.results)
    ]
    return max(candidates, key=lambda other: other.time, default=None)


def speedup(run: Run, runs: Sequence[Run]) -> float | None:
    """Vanilla latency over the row's benchmarks divided by the row's latency over the same benchmarks."""
    reference = vanilla_reference(run, runs)
    if reference is None:
        return None
    own = mean_latency(run, run.results)
    base = mean_latency(reference, run.results)
    if own is None or base is None or own <= 0:
        return None
    return base / own


# ----------------------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------------------


def benchmark_label(task: str, metric: str) -> str:
    """Column header: ``"task metric"``, with lmms-eval's default filter suffix ``,none`` dropped."""
    return f"{task} {metric.removesuffix(',none')}"


def newest_per_row(runs: Iterable[Run]) -> list[Run]:
    """One run per row identity: the newest."""
    newest: dict[tuple, Run] = {}
    for run in runs:
        if run.key not in newest or run.time > newest[run.key].time:
            newest[run.key] = run
    return list(newest.values())


def build_leaderboard(runs: Sequence[Run], newest_only: bool = False) -> Leaderboard:
    """Rows for ``runs`` (all of them, or the newest per row), vanilla first within each model."""
    runs = newest_per_row(runs) if newest_only else list(runs)
    benchmarks = choose_metrics(runs)
    ordered = sorted(runs, key=lambda r: (r.model, r.backend, r.method != VANILLA, r.method, r.settings_text, r.time))
    board = Leaderboard(benchmarks=benchmarks)
    for run in ordered:
        per_task = {}
        for task, _ in benchmarks:
            if task in run.results:
                flops, latency = task_cost(run.throughput, task)
                per_task[task] = {"flops_ratio": flops, "latency_s": latency}
        board.rows.append(
            {
                "model": run.model,
                "backend": run.backend,
                "method": run.method,
                "settings": run.settings_text,
                "run": run.label,
                "source": str(run.source),
                "scores": {
                    task: _number(run.results[task].get(metric)) if task in run.results else None
                    for task, metric in benchmarks
                },
                "flops_ratio": _mean(cost["flops_ratio"] for cost in per_task.values()),
                "latency_s": _mean(cost["latency_s"] for cost in per_task.values()),
                "speedup": speedup(run, runs),
                "per_task": per_task,
            }
        )
    _disambiguate_labels(board.rows)
    return board


def _disambiguate_labels(rows: list[dict[str, Any]]) -> None:
    """Two runs of one row stamped with the same second also get their file, so labels stay distinct."""
    seen: dict[tuple, int] = {}
    for row in rows:
        identity = (row["model"], row["backend"], row["method"], row["settings"], row["run"])
        seen[identity] = seen.get(identity, 0) + 1
    for row in rows:
        if seen[(row["model"], row["backend"], row["method"], row["settings"], row["run"])] > 1:
            row["run"] = f"{row['run']} ({row['source']})"


def table_cells(board: Leaderboard, row: Mapping[str, Any]) -> list[str | float | None]:
    """One row's cells in column order, values unformatted (``None`` = empty)."""
    return [
        *(row[name] for name in FIXED_COLUMNS),
        *(row["scores"][task] for task, _ in board.benchmarks),
        row["flops_ratio"],
        row["latency_s"],
        row["speedup"],
    ]


def format_markdown_cell(value: str | float | None, column: str) -> str:
    """Numbers with 4 decimals (speed-up 2), empty for no value; ``|`` escaped."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}" if column == COST_COLUMNS[2] else f"{value:.4f}"
    return str(value).replace("|", "\\|")


def to_markdown(board: Leaderboard) -> str:
    columns = board.columns
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in board.rows:
        cells = [format_markdown_cell(v, c) for v, c in zip(table_cells(board, row), columns)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(board: Leaderboard) -> str:
    """Full-precision numbers (``repr`` of the float), empty cells for no value."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(board.columns)
    for row in board.rows:
        writer.writerow(["" if value is None else value for value in table_cells(board, row)])
    return buffer.getvalue()


def to_json(board: Leaderboard) -> str:
    payload = {
        "columns": board.columns,
        "benchmarks": [{"task": task, "metric": metric} for task, metric in board.benchmarks],
        "rows": board.rows,
    }
    return json.dumps(payload, indent=2) + "\n"


def write_outputs(board: Leaderboard, out_dir: Path) -> dict[str, Path]:
    """Write ``leaderboard.md``, ``.csv`` and ``.json`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for suffix, render in (("md", to_markdown), ("csv", to_csv), ("json", to_json)):
        path = out_dir / f"leaderboard.{suffix}"
        path.write_text(render(board), encoding="utf-8")
        written[suffix] = path
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="himap-leaderboard", description="Merge lmms-eval result files into one leaderboard."
    )
    parser.add_argument("paths", nargs="+", type=Path, help="results files or directories to search")
    parser.add_argument("--out", type=Path, default=Path("."), help="directory for leaderboard.md/.csv/.json")
    parser.add_argument("--newest-only", action="store_true", help="keep only the newest run of each row")
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")

    runs = [run for path in find_result_files(args.paths) if (run := load_run(path)) is not None]
    if not runs:
        print("no lmms-eval results found in " + ", ".join(map(str, args.paths)), file=sys.stderr)
        return 1
    board = build_leaderboard(runs, newest_only=args.newest_only)
    write_outputs(board, args.out)
    print(to_markdown(board), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
