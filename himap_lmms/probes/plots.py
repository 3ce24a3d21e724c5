"""The probes' figures, as PNG files.

Figures are built with matplotlib's object API on an Agg canvas, never through ``pyplot``: nothing global
(backend, current figure) changes, so plotting is safe inside an evaluation run or a test session.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

GROUP_CURVES = {"into_prefix": "prefix rows", "into_image": "image rows", "into_text": "text rows"}
VISUAL_CURVES = {"img2img": "intra-visual (img->img)", "img2txt": "visual-textual (img->txt)"}


def plot_group_flows(flows: Mapping[str, Sequence[float]], path: str | Path, title: str | None = None) -> Path:
    """Figure 1: the mean flow into one row of the prefix, the image block and the text, by layer."""
    return _line_plot(flows, GROUP_CURVES, path, title or "Saliency flow into each group (per row)")


def plot_visual_flows(flows: Mapping[str, Sequence[float]], path: str | Path, title: str | None = None) -> Path:
    """Figure 2: intra-visual (img->img) against visual-textual (img->txt) flow, by layer."""
    return _line_plot(flows, VISUAL_CURVES, path, title or "Intra-visual vs visual-textual flow")


def plot_disruption_heatmap(
    drops: Mapping[str, Mapping[int, float]], path: str | Path, title: str | None = None
) -> Path:
    """Figure 3: accuracy drop (undisturbed - disrupted, in points) per flow (rows) and start layer (columns).

    Red is a loss, blue a gain; a setting missing from ``drops`` is left blank.
    """
    flows = list(drops)
    layers = sorted({layer for row in drops.values() for layer in row})
    if not flows or not layers:
        raise ValueError("the disruption heat map needs at least one flow and one start layer")
    values = [[drops[flow].get(layer, float("nan")) for layer in layers] for flow in flows]
    # A cut can also help, so the scale is diverging and centred on "no change" (white).
    largest = max((abs(value) for row in values for value in row if not math.isnan(value)), default=0.0) or 1.0
    figure = Figure(figsize=(max(4.0, 0.45 * len(layers) + 2.5), 0.6 * len(flows) + 1.8), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(values, aspect="auto", cmap="RdBu_r", vmin=-largest, vmax=largest, interpolation="nearest")
    axes.set_xticks(range(len(layers)), [str(layer) for layer in layers])
    axes.set_yticks(range(len(flows)), flows)
    axes.set_xlabel("first disrupted layer (cut to the window's end)")
    axes.set_title(title or "Accuracy drop when a flow is cut")
    if len(layers) * len(flows) <= 120:
        for row, flow_values in enumerate(values):
            for column, value in enumerate(flow_values):
                if math.isnan(value):
                    continue
                colour = "white" if abs(value) > 0.6 * largest else "black"
                axes.text(column, row, f"{value:.1f}", ha="center", va="center", fontsize=7, color=colour)
    figure.colorbar(image, ax=axes, label="accuracy drop (points)")
    figure.tight_layout()
    return _save(figure, path)


def _line_plot(flows: Mapping[str, Sequence[float]], curves: Mapping[str, str], path: str | Path, title: str) -> Path:
    missing = [key for key in curves if key not in flows]
    if missing:
        raise ValueError(f"flows lack the curve(s) {', '.join(missing)} needed for this figure")
    figure = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for key, label in curves.items():
        axes.plot(range(len(flows[key])), flows[key], marker="o", markersize=3, label=label)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("layer")
    axes.set_ylabel("saliency flow")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    return _save(figure, path)


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
