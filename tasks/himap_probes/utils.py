"""Scoring and reporting of the HiMAP probe tasks (himap_saliency, himap_disruption).

The prompt, the visual, the target and the data checks are those of ``tasks/scienceqa_img_himap`` (the paper's
prompt, from :mod:`himap_lmms.scienceqa`), so both task families always ask the same question. The model side
is ``himap_llava``: it sees ``probe`` in the generation_kwargs, runs :func:`himap_lmms.probes.run_probe_request`
and returns the probe's JSON record as the "generated text", which :func:`saliency_process_results` /
:func:`disruption_process_results` parse here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from himap_lmms.probes.disruption import top5_jaccard
from himap_lmms.probes.report import average_flows, label_consistent, peak_layer, probe_dir, write_saliency_report
from himap_lmms.scienceqa import doc_to_target, doc_to_text, doc_to_visual, is_correct, process_docs  # noqa: F401

# (doc_to_visual and process_docs are not used here: the YAMLs name them as hooks of this module.)

# ----------------------------------------------------------------------------------------------------------
# Saliency
# ----------------------------------------------------------------------------------------------------------


def saliency_process_results(doc: Mapping[str, Any], results: list[str]) -> dict[str, Any]:
    """Per doc: exact match of the model's answer, and the probe record for the two curve metrics.

    The record goes to both peak-layer metrics because lmms-eval aggregates each metric on its own items.
    """
    record = _parse(results, "saliency")
    record["question"] = doc["question"]
    record["correct"] = is_correct(record["prediction"], doc_to_target(doc))
    return {"exact_match": float(record["correct"]), "img2txt_peak_layer": record, "img2img_peak_layer": record}


def saliency_aggregate_img2txt_peak(items: list[Mapping[str, Any]]) -> int:
    """Write the per-example and averaged flows and both figures; report where img->txt flow peaks."""
    paths = write_saliency_report(items, probe_dir())
    print(f"himap_saliency: wrote {', '.join(str(path) for path in paths.values())}")
    return peak_layer(average_flows(items)["img2txt"])


def saliency_aggregate_img2img_peak(items: list[Mapping[str, Any]]) -> int:
    """The layer where the averaged intra-visual (img->img) flow peaks (around 8-10 for 7B in the paper)."""
    return peak_layer(average_flows(items)["img2img"])


# ----------------------------------------------------------------------------------------------------------
# Disruption
# ----------------------------------------------------------------------------------------------------------


def disruption_process_results(doc: Mapping[str, Any], results: list[str]) -> dict[str, float]:
    """Per doc: disrupted and undisturbed exact match, their difference, label consistency, top-5 Jaccard."""
    record = _parse(results, "disruption")
    gold = doc_to_target(doc)
    disrupted = float(is_correct(record["disrupted"]["text"], gold))
    undisturbed = float(is_correct(record["undisturbed"]["text"], gold))
    return {
        "accuracy": disrupted,
        "undisturbed_accuracy": undisturbed,
        "accuracy_drop": undisturbed - disrupted,
        "label_consistency": float(label_consistent(record["disrupted"]["text"], gold)),
        "top5_jaccard": top5_jaccard(record["disrupted"]["top5"], record["undisturbed"]["top5"]),
    }


def _parse(results: list[str], probe: str) -> dict[str, Any]:
    """The probe's JSON record; anything else means the task ran on a model that does not run probes."""
    text = results[0] if results else ""
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict) or record.get("probe") != probe:
        raise ValueError(
            f"expected a {probe} probe record (JSON) as the model output, got {text[:80]!r}: "
            "run the probe tasks with --model himap_llava"
        )
    return record
