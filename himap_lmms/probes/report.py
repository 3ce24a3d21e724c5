"""Turning per-example probe records into what the paper reports: averaged curves, scores, files.

Shared by the lmms-eval probe tasks (``tasks/himap_probes``) and the disruption sweep
(:mod:`himap_lmms.probes.disruption_sweep`), so that both average, score and write in the same way.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from himap_lmms.probes.plots import plot_group_flows, plot_visual_flows
from himap_lmms.probes.saliency import FLOW_KEYS

PROBE_DIR_ENV = "HIMAP_PROBE_DIR"
DEFAULT_PROBE_DIR = "results/probes"


def probe_dir() -> Path:
    """Where probe reports go: ``$HIMAP_PROBE_DIR`` or ``results/probes`` (relative to the working directory)."""
    return Path(os.environ.get(PROBE_DIR_ENV) or DEFAULT_PROBE_DIR)


def average_flows(records: Sequence[Mapping[str, Any]]) -> dict[str, list[float]]:
    """Mean of each per-layer flow over examples (each record holds ``flows[key][layer]``)."""
    if not records:
        raise ValueError("no saliency records to average")
    num_layers = {len(record["flows"]["total"]) for record in records}
    if len(num_layers) != 1:
        raise ValueError(f"saliency records disagree on the number of layers: {sorted(num_layers)}")
    (layers,) = num_layers
    return {
        key: [sum(record["flows"][key][layer] for record in records) / len(records) for layer in range(layers)]
        for key in FLOW_KEYS
    }


def peak_layer(values: Sequence[float]) -> int:
    """The layer with the largest value (the first one on ties)."""
    return max(range(len(values)), key=lambda layer: (values[layer], -layer))


def write_saliency_report(records: Sequence[Mapping[str, Any]], out_dir: str | Path) -> dict[str, Path]:
    """Write the per-example records, their average and the two saliency figures; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mean = average_flows(records)
    paths = {
        "examples": out_dir / "saliency_examples.json",
        "mean": out_dir / "saliency_mean.json",
        "groups_png": out_dir / "saliency_groups.png",
        "visual_png": out_dir / "saliency_visual.png",
    }
    paths["examples"].write_text(json.dumps(list(records), indent=1))
    summary = {
        "num_examples": len(records),
        "img2txt_peak_layer": peak_layer(mean["img2txt"]),
        "img2img_peak_layer": peak_layer(mean["img2img"]),
        "flows": mean,
    }
    paths["mean"].write_text(json.dumps(summary, indent=1))
    plot_group_flows(mean, paths["groups_png"], title=f"Saliency flow into each group (n={len(records)})")
    plot_visual_flows(mean, paths["visual_png"], title=f"Intra-visual vs visual-textual flow (n={len(records)})")
    return paths


def label_consistent(text: str, letter: str) -> bool:
    """Whether the gold letter appears in the output as a word of its own (``"A"``, ``"(A)"``, ``"is A."``)."""
    return re.search(rf"(?<![A-Za-z]){re.escape(letter)}(?![A-Za-z])", text) is not None
