"""Attention-disruption sweep: accuracy and agreement when each flow is cut from each start layer.

Runs the disruption probe (``docs/method.md``, "Probe 2") in-process, without lmms-eval, on a LLaVA checkpoint
and ScienceQA-IMG-schema docs, with the paper's prompt (:mod:`himap_lmms.scienceqa`, as the task asks it) and the
vicuna chat template the ``himap_llava`` adapter uses. Each example is encoded and answered undisturbed once;
every (flow, start layer) setting then reruns only the disrupted generation. ``scripts/disruption_sweep.py`` is
its command line.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from tqdm import tqdm
from transformers import PreTrainedModel

from himap_lmms import scienceqa
from himap_lmms.compat import language_model_of
from himap_lmms.probes.disruption import FLOWS, Disruption, disrupted_generate, top5_jaccard
from himap_lmms.probes.plots import plot_disruption_heatmap
from himap_lmms.probes.report import label_consistent
from himap_lmms.prompting import VICUNA_CHAT_TEMPLATE, chat_prompt


@dataclass
class SweepRow:
    """Means over the examples for one (flow, window) setting; accuracies are fractions."""

    flow: str
    start_layer: int
    end_layer: int
    num_examples: int
    accuracy: float
    undisturbed_accuracy: float
    accuracy_drop: float
    label_consistency: float
    top5_jaccard: float


def encode(processor: Any, doc: Mapping[str, Any], model: PreTrainedModel) -> dict:
    """One doc as the adapter encodes it: paper prompt, ``<image>`` first, vicuna template, batch of one."""
    images = scienceqa.doc_to_visual(doc)
    prompt = chat_prompt(processor.tokenizer, scienceqa.doc_to_text(doc), len(images), VICUNA_CHAT_TEMPLATE)
    inputs = processor(images=images, text=[prompt], return_tensors="pt", add_special_tokens=False)
    return dict(inputs.to(model.device, model.dtype))


def plan_sweep(
    flows: Sequence[str], start_layers: Sequence[int], end_layer: int | None, seed: int, num_layers: int
) -> list[Disruption]:
    """Every (flow, start layer) setting, each checked against ``num_layers``: a ``ValueError`` names an unknown
    flow, a layer out of range or an empty list, so a sweep can be refused before its model loads."""
    if not flows:
        raise ValueError(f"no flow given: choose one or more of {', '.join(FLOWS)}")
    if not start_layers:
        raise ValueError(f"no start layer given: choose layers in [0, {num_layers})")
    settings = [Disruption(flow, start, end_layer, seed) for flow in flows for start in start_layers]
    for setting in settings:
        setting.window(num_layers)
    return settings


def run_sweep(
    model: PreTrainedModel,
    processor: Any,
    docs: Sequence[Mapping[str, Any]],
    flows: Sequence[str],
    start_layers: Sequence[int],
    end_layer: int | None = None,
    seed: int = 0,
    max_new_tokens: int = 8,
    progress: bool = True,
) -> list[SweepRow]:
    """Score every (flow, start layer) setting on ``docs``; settings are validated before any model call."""
    tokenizer = processor.tokenizer
    num_layers = len(language_model_of(model).layers)
    settings = plan_sweep(flows, start_layers, end_layer, seed, num_layers)
    windows = [setting.window(num_layers) for setting in settings]
    totals = [dict.fromkeys(("accuracy", "undisturbed", "consistency", "jaccard"), 0.0) for _ in settings]
    bar = tqdm(total=len(docs) * len(settings), desc="disruption sweep", disable=not progress)
    for doc in docs:
        gold = scienceqa.doc_to_target(doc)
        inputs = encode(processor, doc, model)
        undisturbed = disrupted_generate(model, inputs, None, max_new_tokens, tokenizer.eos_token_id)
        undisturbed_correct = scienceqa.is_correct(
            tokenizer.decode(undisturbed.token_ids, skip_special_tokens=True), gold
        )
        for setting, total in zip(settings, totals):
            disrupted = disrupted_generate(model, inputs, setting, max_new_tokens, tokenizer.eos_token_id)
            text = tokenizer.decode(disrupted.token_ids, skip_special_tokens=True)
            total["accuracy"] += scienceqa.is_correct(text, gold)
            total["undisturbed"] += undisturbed_correct
            total["consistency"] += label_consistent(text, gold)
            total["jaccard"] += top5_jaccard(disrupted.top5, undisturbed.top5)
            bar.update(1)
    bar.close()
    count = max(len(docs), 1)
    return [
        SweepRow(
            flow=setting.flow,
            start_layer=window.start,
            end_layer=window.stop - 1,
            num_examples=len(docs),
            accuracy=total["accuracy"] / count,
            undisturbed_accuracy=total["undisturbed"] / count,
            accuracy_drop=(total["undisturbed"] - total["accuracy"]) / count,
            label_consistency=total["consistency"] / count,
            top5_jaccard=total["jaccard"] / count,
        )
        for setting, window, total in zip(settings, windows, totals)
    ]


def write_outputs(rows: Sequence[SweepRow], out_dir: str | Path) -> dict[str, Path]:
    """The table as CSV and Markdown, and the accuracy-drop heat map (in points)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "csv": out_dir / "disruption_sweep.csv",
        "markdown": out_dir / "disruption_sweep.md",
        "heatmap": out_dir / "disruption_heatmap.png",
    }
    names = [field.name for field in fields(SweepRow)]
    with paths["csv"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        writer.writerows(asdict(row) for row in rows)
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for row in rows:
        cells = [f"{value:.4f}" if isinstance(value, float) else str(value) for value in asdict(row).values()]
        lines.append("| " + " | ".join(cells) + " |")
    paths["markdown"].write_text("\n".join(lines) + "\n")
    drops: dict[str, dict[int, float]] = {}
    for row in rows:
        drops.setdefault(row.flow, {})[row.start_layer] = 100.0 * row.accuracy_drop
    plot_disruption_heatmap(drops, paths["heatmap"])
    return paths


def parse_layers(spec: str, num_layers: int) -> list[int]:
    """``"all"``, ``"0,4,8"`` or a Python-style range ``"start:stop[:step]"``; a malformed spec is a ``ValueError``
    naming it (whether the layers exist is :func:`plan_sweep`'s check)."""
    if spec == "all":
        return list(range(num_layers))
    try:
        if ":" in spec:
            return list(range(*(int(part) for part in spec.split(":"))))
        return [int(part) for part in spec.split(",") if part.strip()]
    except (TypeError, ValueError):
        raise ValueError(
            f"start layers {spec!r} are not understood: give 'all', a list like '0,4,8' or a range 'start:stop[:step]'"
        ) from None
