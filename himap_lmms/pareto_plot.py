"""Score against FLOPs ratio with each point's paired interval as a bar, one colour per method.

The view users expect of a pruning comparison (what a method keeps for what it costs), drawn so that a
difference inside the bars is not read as a ranking. The leaderboard and the pruning study both draw it;
rows whose headline rests on a minority of parsed replies are left out by their callers.
Drawn on an Agg canvas with matplotlib's object API, as the study's other figures are: no global backend switch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


@dataclass(frozen=True)
class Point:
    """One row: its method (the colour), label, FLOPs ratio and score, and the score's interval (``low`` and
    ``high``: the row's score shifted by the bounds of its paired difference to the reference, minus the
    difference itself; None without a reference)."""

    method: str
    label: str
    flops_ratio: float
    score: float
    low: float | None = None
    high: float | None = None


def plot_pareto(points: Sequence[Point], path: Path, title: str, reference: float | None = None) -> None:
    """Write the figure to ``path``; ``reference`` (the unpruned score) is drawn as a dotted line."""
    if not points:
        raise ValueError(f"no points to plot in {path}")
    figure = Figure(figsize=(8, 5.5), dpi=100)
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    methods = list(dict.fromkeys(point.method for point in points))
    palette = colormaps["tab10" if len(methods) <= 10 else "tab20"].colors  # distinct colours, one per method
    for index, method in enumerate(methods):
        mine = sorted((p for p in points if p.method == method), key=lambda p: p.flops_ratio)
        bars = [
            (0.0, 0.0) if p.low is None or p.high is None else (max(0.0, p.score - p.low), max(0.0, p.high - p.score))
            for p in mine
        ]
        axis.errorbar(
            [100 * p.flops_ratio for p in mine],
            [100 * p.score for p in mine],
            yerr=[[100 * below for below, _ in bars], [100 * above for _, above in bars]],
            fmt="o",
            capsize=3,
            color=palette[index % len(palette)],
            label=method,
        )
    if reference is not None:
        axis.axhline(100 * reference, color="black", linestyle=":", label="unpruned")
    axis.set_xlabel("prefill FLOPs ratio (%)")
    axis.set_ylabel("score (%), bars: paired 95 % interval")
    axis.set_title(title)
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    figure.tight_layout()
    figure.savefig(path)
