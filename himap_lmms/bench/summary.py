"""From a batch's raw measurements to per-method rows (FLOPs ratios, paired speed-ups, overhead, the prefill
against an equal-FLOPs FastV); the goals they are held to are in :mod:`himap_lmms.bench.goals`."""

from __future__ import annotations

import statistics
from typing import Any

from himap_lmms.cost import prefill_cost
from himap_lmms.model_shapes import LlavaShape
from himap_lmms.pruning import PRUNING_LABELS

Runs = dict[str, list[dict[str, float]]]


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise_batch(
    shape: LlavaShape,
    batch: int,
    counted: dict[str, dict[str, Any]],
    timed: Runs,
    profiled: Runs,
    pairs: dict[str, str],
) -> dict[str, dict[str, Any]]:
    """Per method: counts, medians with min/max, within-round speed-ups, overhead share, achievable bounds, and for
    a method with an equal-FLOPs FastV partner (``pairs``: method -> partner) its prefill against the partner's.

    ``timed[name][i]`` and ``profiled[name][i]`` come from round ``i``; a speed-up is vanilla's time over the
    method's in the same round, and so is a method's prefill over its partner's.
    """
    vanilla_counted, vanilla_runs = counted["vanilla"], timed["vanilla"]
    vanilla_prefill = statistics.median(r["prefill"] for r in vanilla_runs)
    vanilla_total = statistics.median(r["total"] for r in vanilla_runs)
    prompt = vanilla_counted["tokens_per_layer"][0]  # a method that prunes before layer 0 starts below it
    rows = {}
    for name, measured in counted.items():
        tokens = measured["tokens_per_layer"]
        formula = {
            c: prefill_cost(tokens, shape.hidden, shape.intermediate, c, prompt, shape.kv_hidden)
            for c in ("fastv", "swiglu")
        }
        counted_ratio = measured["flops_decoder_layers"] / vanilla_counted["flops_decoder_layers"]
        whole_ratio = measured["flops_whole_prefill"] / vanilla_counted["flops_whole_prefill"]
        runs, profiles = timed[name], profiled[name]
        ideal = 1 / formula["swiglu"].flops_ratio
        # Amdahl: a prefill at exactly its whole-prefill FLOPs share of vanilla's time, plus the decoding time the
        # method was measured to take (decoding shrinks little: a step reads every weight whatever the cache).
        decode = statistics.median(r["total"] - r["prefill"] for r in runs)
        overhead = [sum(p[label] for label in PRUNING_LABELS) for p in profiles]
        cuda_peaks = [r["cuda_peak_bytes"] for r in runs if "cuda_peak_bytes" in r]
        prefill_speedup = spread([v["prefill"] / r["prefill"] for v, r in zip(vanilla_runs, runs)])
        rows[name] = measured | {
            "flops_ratio_formula_fastv": formula["fastv"].flops_ratio,
            "flops_ratio_formula_swiglu": formula["swiglu"].flops_ratio,
            "flops_ratio_counted": counted_ratio,
            "flops_ratio_whole_prefill_counted": whole_ratio,
            "counted_vs_formula": counted_ratio / formula["swiglu"].flops_ratio - 1,
            "counted_vs_formula_fastv": counted_ratio / formula["fastv"].flops_ratio - 1,
            # the counter's own number against 2 FLOPs per multiply-accumulate x batch x the formula's
            "counted_vs_formula_absolute": measured["flops_decoder_layers"] / (2 * batch * formula["swiglu"].flops) - 1,
            "inverse_flops_ratio": ideal,
            "prefill_s": spread([r["prefill"] for r in runs]),
            "total_s": spread([r["total"] for r in runs]),
            "decode_s": decode,
            "prefill_speedup": prefill_speedup,
            "total_speedup": spread([v["total"] / r["total"] for v, r in zip(vanilla_runs, runs)]),
            "prefill_efficiency": prefill_speedup["median"] / ideal,  # share of the FLOPs bound reached
            "overhead_s": spread(overhead),
            "overhead_s_by_label": {label: statistics.median(p[label] for p in profiles) for label in PRUNING_LABELS},
            "overhead_share": spread([o / p["prefill"] for o, p in zip(overhead, profiles)]),
            "achievable_prefill_speedup": 1 / whole_ratio,
            "achievable_total_speedup": vanilla_total / (vanilla_prefill * whole_ratio + decode),
            "cuda_peak_bytes": spread(cuda_peaks) if cuda_peaks else None,
            "raw": runs,
            "raw_profiled": profiles,
        }
    for name, partner in pairs.items():
        rows[name]["vs_equal_flops_fastv"] = {
            "partner": partner,
            "flops_ratio": rows[name]["flops_ratio_formula_swiglu"],
            "flops_ratio_partner": rows[partner]["flops_ratio_formula_swiglu"],
            "prefill_ratio": spread([m["prefill"] / f["prefill"] for m, f in zip(timed[name], timed[partner])]),
            "overhead_share": rows[name]["overhead_share"]["median"],
            "overhead_share_partner": rows[partner]["overhead_share"]["median"],
        }
    return rows
