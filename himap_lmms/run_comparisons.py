"""The leaderboard's comparison columns: parse rates, agreement with the unpruned run, paired intervals and the
hard subset, read from the samples each run logged (``--log_samples``; the sweep always sets it).

A row is compared only with runs of the same sweep under the same conditions (model, backend, non-pruning
settings, documents, limit, batch, device, threads: :func:`himap_lmms.leaderboard.vanilla_reference`), on the
same documents of each benchmark. A row without such a partner, or without samples, gets empty cells, never
numbers from another sweep. The statistics are those of :mod:`himap_lmms.comparison`.

Columns (``T`` a benchmark column, ``P`` a preset given with ``--against``):

- ``T parsed``: the share of the row's replies T's scorer could parse; ``T pope_accuracy`` next to POPE's F1;
- ``T Δ vs none`` (``low``/``high``: its paired 95 % interval), in the metric's units;
- ``Δ mean vs none`` (and bounds): the difference of the mean over the benchmarks;
- ``agreement vs none``: the mean over the benchmarks of the share of documents answered as vanilla answered
  them; ``right→wrong`` and ``wrong→right``: the flips, summed over the benchmarks;
- ``hard subset`` and ``hard subset n``: the row's accuracy on the documents vanilla answers right and the
  sweep's ``pool`` run (the one nearest the row in FLOPs ratio) answers wrong, and how many there are;
- ``Δ mean vs P`` (and bounds): the same difference against that preset's run of the same sweep;
- ``flags``: the benchmarks whose headline rests on a minority of parsed replies; such a row gets no mean
  (it is left out of rankings) and no place in the plot.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from himap_lmms.comparison import (
    Answer,
    Comparison,
    Difference,
    answers_from_samples,
    benchmark_kind,
    compare,
    format_difference,
    hard_subset,
    mean_difference,
    parse_rate,
    rests_on_minority,
    subset_accuracy,
)
from himap_lmms.pareto_plot import Point, plot_pareto
from himap_lmms.presets import method_presets
from himap_lmms.pruning.config import PruningConfig

if TYPE_CHECKING:
    from himap_lmms.leaderboard import Run

logger = logging.getLogger(__name__)

POOL = "pool"
VERSUS_NONE = "vs none"
LOW, HIGH = " low", " high"
POPE_ACCURACY = "pope_accuracy,none"
FLAGS = "flags"


def samples_path(run: Run, task: str) -> Path | None:
    """The samples file lmms-eval wrote next to a ``<stamp>_results.json`` for ``task``; None if absent."""
    if run.source is None or not run.source.name.endswith("_results.json"):
        return None
    path = run.source.with_name(f"{run.source.name.removesuffix('_results.json')}_samples_{task}.jsonl")
    return path if path.is_file() else None


@cache
def _read_answers(path: Path, kind: str | None, metric: str) -> tuple[Answer, ...]:
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return tuple(answers_from_samples(kind, metric, lines))


def answers(run: Run, task: str, metric: str) -> tuple[Answer, ...] | None:
    """The run's per-document answers on ``task`` scored by ``metric`` (``"exact_match,none"``), or None."""
    path = samples_path(run, task)
    if path is None or run.status != "ok":
        return None
    try:
        return _read_answers(path, benchmark_kind(task), metric.partition(",")[0])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError, AttributeError) as error:
        logger.warning("no comparisons from %s: %s", path, error)
        return None


def preset_schedule(preset: str) -> str:
    """The schedule label (as the leaderboard's ``schedule`` column writes it) of a method preset."""
    try:
        (args,) = method_presets((preset,)).values()
    except ValueError as error:
        raise ValueError(f"--against {preset!r} is not a preset: {error}") from None
    return PruningConfig.from_args(**args).describe()


def preset_partner(run: Run, runs: Sequence[Run], preset: str) -> Run | None:
    """The run of ``preset`` in the same sweep and conditions as ``run`` (None without one): the same schedule,
    however its model_args were spelled."""
    schedule = preset_schedule(preset)
    if not run.sweep:
        return None
    return next(
        (
            other
            for other in runs
            if other.status == "ok"
            and other.conditions == run.conditions
            and other.schedule == schedule
            and set(other.results) == set(run.results)
        ),
        None,
    )


def _compare_runs(run: Run, partner: Run | None, benchmarks: Sequence[tuple[str, str]]) -> dict[str, Comparison] | None:
    """Per benchmark task, ``run`` against ``partner`` on the same documents; None unless every benchmark of
    the run has samples on both sides."""
    if partner is None or run.status != "ok":
        return None
    result = {}
    for task, metric in benchmarks:
        if task not in run.results:
            continue
        mine, theirs = answers(run, task, metric), answers(partner, task, metric)
        if mine is None or theirs is None:
            return None
        try:
            result[task] = compare(benchmark_kind(task), mine, theirs)
        except ValueError:  # different documents: not a paired comparison
            return None
    return result or None


def _with_bounds(label: str, difference: Difference | None) -> dict[str, float | None]:
    if difference is None:
        return {label: None, label + LOW: None, label + HIGH: None}
    return {label: difference.value, label + LOW: difference.low, label + HIGH: difference.high}


def _nearest_pool(run: Run, runs: Sequence[Run], flops: Callable[[Run], float | None]) -> Run | None:
    """The sweep's pool run (same conditions) nearest to ``run`` in FLOPs ratio: its budget's downsampling."""
    pools = [
        other for other in runs if other.method == POOL and other.status == "ok" and other.conditions == run.conditions
    ]
    own = flops(run)
    if not pools or own is None:
        return None
    return min(pools, key=lambda other: abs((flops(other) or math.inf) - own))


def comparison_cells(
    run: Run,
    runs: Sequence[Run],
    benchmarks: Sequence[tuple[str, str]],
    label: Callable[[str, str], str],
    vanilla: Run | None,
    flops: Callable[[Run], float | None],
    against: Sequence[str] = (),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(cells to show next to each benchmark column, row-level cells) for one leaderboard row."""
    per_benchmark: dict[str, Any] = {}
    flagged = []
    versus = _compare_runs(run, vanilla, benchmarks)
    for task, metric in benchmarks:
        column = label(task, metric)
        mine = answers(run, task, metric) if task in run.results else None
        rate = parse_rate(benchmark_kind(task), mine) if mine else None
        if benchmark_kind(task) is not None:  # a task without a parse rule gets no parse rate
            per_benchmark[f"{column} parsed"] = rate
        if rests_on_minority(rate):
            flagged.append(f"{task}: {100 * rate:.1f} % parsed")
        if metric.startswith("pope_f1_score"):
            value = run.results.get(task, {}).get(POPE_ACCURACY)
            per_benchmark[f"{task} pope_accuracy"] = value if isinstance(value, (int, float)) else None
        comparison = versus.get(task) if versus else None
        per_benchmark |= _with_bounds(f"{column} Δ {VERSUS_NONE}", comparison.difference if comparison else None)
    row: dict[str, Any] = _with_bounds(
        f"Δ mean {VERSUS_NONE}", mean_difference(list(versus.values())) if versus else None
    )
    row[f"agreement {VERSUS_NONE}"] = (sum(c.agreement for c in versus.values()) / len(versus)) if versus else None
    row["right→wrong"] = sum(c.right_to_wrong for c in versus.values()) if versus else None
    row["wrong→right"] = sum(c.wrong_to_right for c in versus.values()) if versus else None
    row |= hard_subset_cells(run, vanilla, _nearest_pool(run, runs, flops), benchmarks)
    for preset in against:
        pair = _compare_runs(run, preset_partner(run, runs, preset), benchmarks)
        row |= _with_bounds(f"Δ mean vs {preset}", mean_difference(list(pair.values())) if pair else None)
    if flagged:  # the mean of such a row ranks nothing: no mean, no difference of means
        row |= {name: None for name in row if name.startswith("Δ mean ")}
    row[FLAGS] = "; ".join(flagged)
    return per_benchmark, row


def hard_subset_cells(
    run: Run, vanilla: Run | None, pool: Run | None, benchmarks: Sequence[tuple[str, str]]
) -> dict[str, Any]:
    """The row's accuracy on the hard documents of all its benchmarks together, and their number."""
    empty = {"hard subset": None, "hard subset n": None}
    if vanilla is None or pool is None or run.status != "ok":
        return empty
    right, total = 0, 0
    for task, metric in benchmarks:
        if task not in run.results:
            continue
        sides = [answers(r, task, metric) for r in (vanilla, pool, run)]
        if any(side is None for side in sides):
            return empty
        try:
            hard = hard_subset(sides[0], sides[1])
            accuracy = subset_accuracy(sides[2], hard)
        except ValueError:
            return empty
        total += len(hard)
        right += round((accuracy or 0.0) * len(hard))
    return {"hard subset": right / total if total else None, "hard subset n": total}


def collapse_intervals(board: pd.DataFrame, shown: pd.DataFrame) -> pd.DataFrame:
    """For Markdown: each difference column with its ``low``/``high`` columns becomes one cell in points,
    ``-1.2 [-2.4, -0.2] *`` (``*``: the interval excludes zero)."""
    for column in [c for c in board.columns if f"{c}{LOW}" in board.columns and f"{c}{HIGH}" in board.columns]:
        shown[column] = [
            ""
            if pd.isna(value)
            else format_difference(
                Difference(float(value), float(board.at[i, column + LOW]), float(board.at[i, column + HIGH]))
            )
            for i, value in board[column].items()
        ]
        shown = shown.drop(columns=[column + LOW, column + HIGH])
    return shown


def plot_board(board: pd.DataFrame, score_column: str, path: Path) -> bool:
    """The pareto plot of a leaderboard: each unflagged row with a vanilla partner at its FLOPs ratio and
    ``score_column`` (the mean), its paired interval as a bar, one colour per method. False (nothing written)
    when no row qualifies."""
    difference = f"Δ mean {VERSUS_NONE}"
    if score_column not in board.columns or difference not in board.columns:
        return False
    unflagged = board[FLAGS] == "" if FLAGS in board.columns else True  # no flags column: nothing flagged
    rows = board[board[difference].notna() & board[score_column].notna() & unflagged]
    points = [
        Point(
            row["method"],
            row["settings"],
            float(row["FLOPs ratio"]),
            float(row[score_column]),
            float(row[score_column] + row[difference + LOW] - row[difference]),
            float(row[score_column] + row[difference + HIGH] - row[difference]),
        )
        for _, row in rows.iterrows()
        if not pd.isna(row["FLOPs ratio"])
    ]
    if not points:
        return False
    plot_pareto(points, path, f"{score_column} against cost, paired 95 % intervals against the unpruned run")
    return True


def drop_empty(board: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``board`` without those of ``columns`` that no row fills (no samples anywhere, no partner anywhere):
    a table of plain lmms-eval runs keeps its shape."""
    empty = [c for c in columns if c in board.columns and (board[c].isna() | (board[c] == "")).all()]
    return board.drop(columns=empty)


def ordered_columns(
    benchmarks: Sequence[tuple[str, str]], label: Callable[[str, str], str], extra: Mapping[str, Any]
) -> list[str]:
    """Each benchmark's column followed by its own comparison columns (those named after its task)."""
    columns = []
    for task, metric in benchmarks:
        columns.append(label(task, metric))
        columns += [name for name in extra if name.startswith(f"{task} ") and name not in columns]
    return columns
