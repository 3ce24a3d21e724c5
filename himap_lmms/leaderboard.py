"""Collect lmms-eval runs into one leaderboard: Markdown, CSV and JSON.

    himap-leaderboard RESULTS_DIRS_OR_FILES... [--out DIR] [--reference]

A row is one run. Runs come from two places:

- **sweeps** (``sweep.json``, written by ``scripts/sweep.py``, see :mod:`himap_lmms.sweep_manifest`): every
  preset of the sweep. A run without scores is a row whose ``status`` says why: ``failed:`` and the error,
  ``interrupted`` (stopped by Ctrl-C or SIGTERM), ``not run`` (the sweep stopped before it) or ``running``.
  A results file in a sweep's folder that its manifest does not record (a damaged manifest, a sweep killed
  before it could record the run) is still a row, with the status ``ok, not in the sweep manifest``.
- **lmms-eval result files** outside any sweep (``<output_path>/<model>/<stamp>_results.json``, or older
  ``results*.json``), each a row with status ``ok``.

What each row records, so that the reader can see which rows compare:

- model (the ``pretrained`` model_arg, a path shortened to its last component), backend (``--model``),
  method (the ``method`` model_arg; none means vanilla), schedule (what the engine ran: the pruning model_args
  resolved with their defaults, ``himap(k1=2,ratio1=0.5,k2=8,ratio2=0.125)`` whether or not they were typed)
  and settings (every other model_arg but ``cost_log``);
- ``n``: documents evaluated (lmms-eval's ``n-samples``, summed over the row's benchmarks), ``limit``
  (``--limit``, ``16`` whether lmms-eval stored ``16.0`` or a sweep ``16``), ``batch`` (``--batch_size``), and
  for sweep runs the ``device`` and torch ``threads`` the
  sweep pinned, and the ``sweep`` id;
- one column per benchmark with its main metric (:data:`MAIN_METRICS`, else the task's first numeric
  metric that is not a stderr) and, with more than one benchmark, their unweighted ``mean`` (empty for a row
  that lacks one of them: a mean over fewer benchmarks would not compare; benchmarks scored in points, MME's
  perception score out of 2000, are left out of it for every row), then the cost: FLOPs ratio and
  latency per example (means over the row's benchmarks, from the ``throughput`` block the adapter fills) and
  the speed-up.

The speed-up is a ratio of two latencies measured side by side: the row's against the vanilla run of the
same sweep with the same model, backend, non-pruning settings, documents, limit, batch, device and threads.
Where there is no such run (a plain lmms-eval run, a sweep without vanilla, a failed vanilla) the cell is
empty, never a number from another run's conditions.

``--reference`` writes a reference table (the README links one): it refuses runs with a ``--limit`` and
failed runs, so a smoke run never becomes a reference.

The parsing of ``model_args`` mirrors lmms-eval's (comma-separated ``key=value``) but keeps every value as
written and does not import lmms-eval, so the leaderboard runs without the evaluation stack.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from himap_lmms.comparison import benchmark_kind, on_share_scale
from himap_lmms.cost import throughput_key
from himap_lmms.pruning.config import PruningConfig, split_pruning_args
from himap_lmms.run_comparisons import (
    FLAGS,
    collapse_intervals,
    comparison_cells,
    drop_empty,
    ordered_columns,
    plot_board,
)
from himap_lmms.sweep_manifest import (
    FAILED,
    INTERRUPTED,
    NOT_RUN,
    OK,
    RUNNING,
    SWEEP_MANIFEST,
    SweepManifest,
    write_atomic,
)
from himap_lmms.values import is_local_path, parse_float

logger = logging.getLogger(__name__)

RESULT_PATTERNS = ("*_results.json", "results*.json")
# Status of a results file found in a sweep folder that the sweep's manifest does not record as finished: the
# manifest is damaged, or the sweep ended (killed, disk full) between the run's end and the manifest's update.
UNRECORDED = "ok, not in the sweep manifest"

# Main metric of known tasks (results key "<metric>,<filter>"): POPE's is F1, as LLaVA's papers report it.
MAIN_METRICS: dict[str, str] = {
    **dict.fromkeys(("scienceqa_img_himap", "scienceqa_img_himap_local", "scienceqa_img"), "exact_match,none"),
    **dict.fromkeys(("pope", "pope_random", "pope_pop", "pope_adv", "pope_synth"), "pope_f1_score,none"),
    **dict.fromkeys(("textvqa_val", "textvqa_synth", "vqav2_val", "gqa"), "exact_match,none"),
    "mme": "mme_perception_score,none",
}
MEAN_COLUMN = "mean"

# model_args that name the model, in the order lmms-eval's own tracker looks for them.
MODEL_ARG_KEYS = ("pretrained", "model", "model_version", "model_name", "model_id", "path", "engine")

# model_args that say where outputs go, not how the model runs.
NON_SETTINGS = frozenset({"cost_log"})

VANILLA = "none"
# Exit status of ``himap-leaderboard`` when the table cannot be written (1: nothing to show, or --reference refused).
EXIT_NOT_WRITTEN = 3
_DATE_FORMAT = "%Y%m%d_%H%M%S"
# lmms-eval stamps ``date`` and its file names in Asia/Singapore time (``utils.get_datetime_str``), which has no
# daylight saving and no marker in the stamp; the leaderboard shows every run in UTC.
LMMS_EVAL_TIMEZONE = timezone(timedelta(hours=8))
_FILE_STAMP = re.compile(r"(\d{8}_\d{6})")

IDENTITY_COLUMNS = ["model", "backend", "method", "schedule", "settings"]
CONDITION_COLUMNS = ["sweep", "status", "n", "limit", "batch", "device", "threads", "run (UTC)"]
COST_COLUMNS = ["FLOPs ratio", "latency (s/example)", "speed-up vs none"]


@dataclass(frozen=True)
class Run:
    """One run, reduced to what the leaderboard shows and what decides which runs compare."""

    model: str
    backend: str
    method: str
    schedule: str
    settings: tuple[tuple[str, str], ...]
    time: datetime
    source: Path | None = None
    results: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    throughput: Mapping[str, Any] = field(default_factory=dict)
    n: Mapping[str, int] = field(default_factory=dict)
    limit: str = ""
    batch: str = ""
    sweep: str = ""
    device: str = ""
    threads: str = ""
    status: str = OK

    @property
    def conditions(self) -> tuple:
        """Everything that must be equal for two runs' latencies to compare."""
        return (
            self.sweep,
            self.model,
            self.backend,
            frozenset(self.settings),
            tuple(sorted(self.n.items())),
            self.limit,
            self.batch,
            self.device,
            self.threads,
        )

    @property
    def settings_text(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.settings)


# ----------------------------------------------------------------------------------------------------------
# Reading runs
# ----------------------------------------------------------------------------------------------------------


def parse_model_args(model_args: str | Mapping[str, Any] | None) -> dict[str, str]:
    """``"a=1,b=x"`` or ``{"a": 1, "b": "x"}`` -> ``{"a": "1", "b": "x"}`` (lmms-eval's split rule)."""
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
    return Path(name.rstrip("/\\")).name if is_local_path(name) else name


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


def identity(backend: str, model_args: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """model, backend, method, schedule and settings of a run from its ``--model`` and ``--model_args``.

    The pruning arguments become the schedule alone; settings are the other model_args (those that say how the
    model runs, not how it prunes), which a vanilla reference must share.
    """
    args = parse_model_args(model_args)
    model_key = next((key for key in MODEL_ARG_KEYS if args.get(key)), None)
    pruning, rest = split_pruning_args(args)
    return {
        "model": model_display_name(args[model_key]) if model_key else backend,
        "backend": backend,
        "method": pruning.get("method", VANILLA),
        "schedule": schedule_label(pruning),
        "settings": tuple((k, v) for k, v in rest.items() if k not in {model_key, *NON_SETTINGS}),
    }


def schedule_label(pruning: Mapping[str, str]) -> str:
    """The schedule the engine runs for these pruning model_args, defaults filled in
    (:meth:`PruningConfig.describe`): two spellings of one schedule get one label, and a row run with the
    defaults shows its budgets. Arguments that make no schedule (a failed run's) are shown as typed."""
    try:
        return PruningConfig.from_args(**pruning).describe()
    except (TypeError, ValueError):
        return ",".join(f"{key}={value}" for key, value in pruning.items())


def limit_text(limit: Any) -> str:
    """``--limit`` as one text wherever it comes from: lmms-eval stores ``16.0``, a sweep ``16``; both are ``16``
    (a fractional limit, a share of the documents, stays a fraction)."""
    if limit is None or limit == "":
        return ""
    try:
        number = parse_float("limit", limit)
    except ValueError:
        return str(limit)
    return str(int(number)) if number.is_integer() else str(number)


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
    samples = data.get("n-samples") if isinstance(data.get("n-samples"), Mapping) else {}
    throughput = data.get("throughput")
    return Run(
        **identity(str(config.get("model") or ""), config["model_args"]),
        time=run_time(data, source),
        source=source,
        results=results,
        throughput=throughput if isinstance(throughput, Mapping) else {},
        n={task: int(entry["effective"]) for task, entry in samples.items() if isinstance(entry, Mapping)},
        limit=limit_text(config.get("limit")),
        batch=str(config.get("batch_size") or ""),
    )


def load_run(path: Path) -> Run | None:
    """Read one results file; a malformed or foreign file is ``None`` and a warning naming it."""
    try:
        return run_from_results(json.loads(path.read_text(encoding="utf-8")), path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError, KeyError, TypeError) as error:
        logger.warning("skipping %s: %s", path, error)
        return None


def results_files(folder: Path) -> list[Path]:
    """Every lmms-eval results file below ``folder`` (samples files and others are not)."""
    return sorted({match for pattern in RESULT_PATTERNS for match in folder.rglob(pattern)})


def load_sweep(manifest_path: Path) -> list[Run]:
    """Every run of one sweep, each with the conditions the sweep pinned.

    Each preset its manifest lists is a row: a finished one from its results file, the others with a status
    that says why they have no scores (``failed: ...``, ``interrupted``, ``not run``, ``running``). Results on
    disk are never dropped because the manifest lags behind them or is damaged: a results file the manifest
    does not record (outside the folders of runs it judged failed) is a row with the status :data:`UNRECORDED`,
    which takes the place of its preset's row when that run was still running or interrupted. A manifest that
    cannot be read is a warning, and then only such rows are left.
    """
    folder = manifest_path.parent
    try:
        manifest = SweepManifest.read(manifest_path)
        started = datetime.fromisoformat(manifest.started)
    except ValueError as error:
        logger.warning("%s; listing the results files of %s without it", error, folder)
        manifest = None
    rows: dict[str, Run] = {}
    recorded: set[Path] = set()
    conditions = {"sweep": folder.name}
    if manifest is not None:
        conditions = {"sweep": manifest.sweep_id, "device": manifest.device, "threads": str(manifest.torch_threads)}
        plan = {**conditions, "limit": limit_text(manifest.limit), "batch": str(manifest.batch_size)}
        for entry in manifest.runs:
            run = None
            if entry.status == OK and entry.results:
                recorded.add((folder / entry.results).resolve())
                run = load_run(folder / entry.results)
            elif entry.status.startswith(FAILED):  # the sweep judged what this run wrote
                recorded.update(path.resolve() for path in results_files(folder / entry.preset))
            if run is None:
                status = entry.status if entry.status != OK else "failed: its results file is unreadable"
                run = Run(**identity(manifest.backend, entry.model_args), time=started, status=status)
            rows[entry.preset] = replace(run, **plan)
    extra = []
    for path in results_files(folder):
        if path.resolve() in recorded or (run := load_run(path)) is None:
            continue
        run = replace(run, **conditions, status=UNRECORDED)
        preset = path.relative_to(folder).parts[0]
        if preset in rows and rows[preset].status in (RUNNING, INTERRUPTED, NOT_RUN):
            rows[preset] = run
        else:
            extra.append(run)
    return [*rows.values(), *extra]


def collect_runs(paths: Iterable[Path]) -> list[Run]:
    """Runs of every sweep under ``paths``, then every results file that belongs to no sweep."""
    manifests, files = [], []
    for path in paths:
        if path.is_dir():
            manifests += sorted(path.rglob(SWEEP_MANIFEST))
            files += results_files(path)
        elif path.is_file():
            (manifests if path.name == SWEEP_MANIFEST else files).append(path)
        else:
            logger.warning("skipping %s: no such file or directory", path)
    sweep_dirs = {manifest.parent.resolve() for manifest in manifests}
    runs = []
    for manifest in dict.fromkeys(manifests):
        runs += load_sweep(manifest)
    for path in dict.fromkeys(files):
        if not any(parent in sweep_dirs for parent in path.resolve().parents):
            runs += [run] if (run := load_run(path)) is not None else []
    return runs


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
    columns = []
    for task in sorted({task for run in runs for task in run.results}):
        newest_first = sorted((r for r in runs if task in r.results), key=lambda r: r.time, reverse=True)
        metric = next((m for r in newest_first if (m := candidate_metric(task, r.results[task]))), None)
        if metric is None:
            logger.warning("no numeric metric for task %s in any run; it gets no column", task)
            continue
        columns.append((task, metric))
    return columns


def task_cost(run: Run, task: str) -> tuple[float | None, float | None]:
    """(FLOPs ratio, latency per example) for one task: per-task keys first, run-wide keys otherwise."""
    flops = _number(run.throughput.get(throughput_key("flops_ratio", task)))
    latency = _number(run.throughput.get(throughput_key("latency_s", task)))
    flops = flops if flops is not None else _number(run.throughput.get(throughput_key("flops_ratio")))
    latency = latency if latency is not None else _number(run.throughput.get("avg_latency"))
    return flops, latency


def _mean(values: Iterable[float | None]) -> float | None:
    """Mean of the values; ``None`` if any is missing (a partial mean would compare unlike things)."""
    values = list(values)
    if not values or any(value is None for value in values):
        return None
    return sum(values) / len(values)


def mean_cost(run: Run) -> tuple[float | None, float | None]:
    """The run's FLOPs ratio and latency, each the mean over its benchmarks."""
    costs = [task_cost(run, task) for task in run.results]
    return _mean(flops for flops, _ in costs), _mean(latency for _, latency in costs)


def vanilla_reference(run: Run, runs: Sequence[Run]) -> Run | None:
    """The finished vanilla run measured under the same conditions as ``run`` (see the module docstring)."""
    if not run.sweep:
        return None
    return next(
        (
            other
            for other in runs
            if other.method == VANILLA
            and other.status == OK
            and other.conditions == run.conditions
            and set(other.results) == set(run.results)
        ),
        None,
    )


def speedup(run: Run, runs: Sequence[Run]) -> float | None:
    """Vanilla latency over the row's latency, from the same sweep and conditions; ``None`` without one."""
    reference = vanilla_reference(run, runs)
    if reference is None or run.status != OK:
        return None
    own, base = mean_cost(run)[1], mean_cost(reference)[1]
    if own is None or base is None or own <= 0:
        return None
    return base / own


# ----------------------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------------------


def benchmark_label(task: str, metric: str) -> str:
    """Column header: ``"task metric"``, with lmms-eval's default filter suffix ``,none`` dropped."""
    return f"{task} {metric.removesuffix(',none')}"


def build_leaderboard(runs: Sequence[Run], against: Sequence[str] = ()) -> pd.DataFrame:
    """One row per run, grouped by sweep then model, vanilla first; numbers unformatted (NaN = no value).
    Each pruned row is compared with its vanilla run and with the runs of the presets ``against``
    (:mod:`himap_lmms.run_comparisons`); a row flagged there for a headline on a minority of parsed replies
    gets no mean, so no ranking."""
    benchmarks = choose_metrics(runs)
    ordered = sorted(runs, key=lambda r: (r.sweep, r.model, r.backend, r.method != VANILLA, r.method, r.time))
    rows = []
    for run in ordered:
        flops, latency = mean_cost(run)
        scores = {
            benchmark_label(task, metric): _number(run.results.get(task, {}).get(metric)) for task, metric in benchmarks
        }
        vanilla = vanilla_reference(run, runs) if run.method != VANILLA else None
        per_benchmark, compared = comparison_cells(
            run, runs, benchmarks, benchmark_label, vanilla, lambda other: mean_cost(other)[0], against
        )
        if len(benchmarks) > 1:
            shares = [
                scores[benchmark_label(task, metric)]
                for task, metric in benchmarks
                if on_share_scale(benchmark_kind(task))
            ]
            scores[MEAN_COLUMN] = None if compared[FLAGS] or not shares else _mean(shares)
        rows.append(
            {
                "model": run.model,
                "backend": run.backend,
                "method": run.method,
                "schedule": run.schedule,
                "settings": run.settings_text,
                "sweep": run.sweep,
                "status": run.status,
                "n": sum(run.n.values()) if run.n else None,
                "limit": run.limit,
                "batch": run.batch,
                "device": run.device,
                "threads": run.threads,
                "run (UTC)": run.time.strftime("%Y-%m-%d %H:%M:%S"),
                **scores,
                **per_benchmark,
                **compared,
                "FLOPs ratio": flops,
                "latency (s/example)": latency,
                "speed-up vs none": speedup(run, runs),
                "source": "" if run.source is None else str(run.source),
            }
        )
    scored = ordered_columns(benchmarks, benchmark_label, per_benchmark if rows else {})
    scored += [MEAN_COLUMN] if len(benchmarks) > 1 else []
    scored += list(compared) if rows else []
    columns = [*IDENTITY_COLUMNS, *CONDITION_COLUMNS, *scored, *COST_COLUMNS]
    counts = [c for c in ("n", "right→wrong", "wrong→right", "hard subset n") if c in columns]
    board = pd.DataFrame(rows, columns=[*columns, "source"]).astype(dict.fromkeys(counts, "Int64"))
    return drop_empty(board, [*per_benchmark, *compared] if rows else [])


def to_markdown(board: pd.DataFrame) -> str:
    """The table as people read it: scores and costs to 4 decimals, speed-ups to 2, no source paths."""
    shown = board.drop(columns="source").astype(object)
    for column in shown.columns:
        if pd.api.types.is_float_dtype(board[column]):
            digits = 2 if column == "speed-up vs none" else 4
            shown[column] = ["" if pd.isna(value) else f"{value:.{digits}f}" for value in board[column]]
    shown = collapse_intervals(board, shown).fillna("").astype(str).replace({"<NA>": ""})
    return shown.to_markdown(index=False, tablefmt="github", disable_numparse=True) + "\n"


def write_outputs(board: pd.DataFrame, out_dir: Path) -> dict[str, Path]:
    """Write ``leaderboard.md``, ``.csv`` (full precision) and ``.json`` (one record per row) into ``out_dir``, each
    replaced whole (an interrupted write leaves the previous table, not half of one), and ``leaderboard.png`` (the
    mean, or the one benchmark, against the FLOPs ratio with paired intervals) when some row has a vanilla partner."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {suffix: out_dir / f"leaderboard.{suffix}" for suffix in ("md", "csv", "json")}
    scores = [c for c in board.columns if c == MEAN_COLUMN] or [c for c in board.columns if c.endswith(" parsed")][:1]
    if scores and plot_board(board, scores[0].removesuffix(" parsed"), out_dir / "leaderboard.png"):
        paths["png"] = out_dir / "leaderboard.png"
    write_atomic(paths["md"], to_markdown(board))
    write_atomic(paths["csv"], board.to_csv(index=False))
    records = board.astype(object).where(board.notna(), None).to_dict(orient="records")
    write_atomic(paths["json"], json.dumps(records, indent=2) + "\n")
    return paths


def check_reference(runs: Sequence[Run]) -> None:
    """A reference table holds only complete, finished runs: ``ValueError`` naming the first that is not."""
    for run in runs:
        label = f"{run.model} {run.schedule} {run.settings_text} ({run.sweep or run.source})"
        if run.status != OK:
            raise ValueError(f"{label} {run.status}: a reference table holds finished runs only")
        if run.limit:
            raise ValueError(f"{label} ran with --limit {run.limit}: a reference table holds complete runs only")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="himap-leaderboard", description="Merge sweeps and lmms-eval result files into one leaderboard."
    )
    parser.add_argument("paths", nargs="+", type=Path, help="sweep folders, results files or folders to search")
    parser.add_argument("--out", type=Path, default=Path("."), help="directory for leaderboard.md/.csv/.json")
    parser.add_argument(
        "--reference", action="store_true", help="refuse failed runs and runs with --limit (reference tables)"
    )
    parser.add_argument(
        "--against",
        action="append",
        default=[],
        metavar="PRESET",
        help="also compare every row with this preset's run of its sweep (configs/methods.yaml; repeatable)",
    )
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")

    runs = collect_runs(args.paths)
    if not runs:
        print("no lmms-eval results or sweeps found in " + ", ".join(map(str, args.paths)), file=sys.stderr)
        return 1
    if args.reference:
        try:
            check_reference(runs)
        except ValueError as error:
            print(f"not written: {error}", file=sys.stderr)
            return 1
    try:
        board = build_leaderboard(runs, args.against)
    except ValueError as error:
        print(f"not written: {error}", file=sys.stderr)
        return 1
    try:
        write_outputs(board, args.out)
    except OSError as error:
        print(f"not written: --out {args.out}: {error}", file=sys.stderr)
        return EXIT_NOT_WRITTEN
    print(to_markdown(board), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
