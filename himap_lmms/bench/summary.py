"""From a batch's raw measurements to per-method rows (FLOPs ratios, paired speed-ups, overhead, the prefill
against an equal-FLOPs FastV); the goals they are held to are in :mod:`himap_lmms.bench.goals`."""

from __future__ import annotations

import math
import statistics
from typing import Any

from himap_lmms.cost import prefill_cost
from himap_lmms.model_shapes import LlavaShape
from himap_lmms.pruning import PRUNING_LABELS

Runs = dict[str, list[dict[str, float]]]


INTERVAL_LEVEL = 0.95


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def median_interval(values: list[float], level: float = INTERVAL_LEVEL) -> tuple[float, float] | None:
    """The sign test's distribution-free interval for the median of ``values``: the k-th smallest and k-th largest
    value, for the largest k at which a fair coin shows fewer than k heads in ``len(values)`` tosses with
    probability at most (1 - level) / 2. None when even k = 1 (the range) covers less than ``level``: fewer than 6
    values at 95 %.

    Rounds on a shared machine are not normally distributed (another job slows a few of them a lot), which this
    interval does not assume; it needs only that rounds are independent.
    """
    n, tail = len(values), (1 - level) / 2
    below = 0.0  # P(fewer than k heads), k = 1, 2, ...
    k = 0
    while k < n // 2:
        below += math.comb(n, k) / 2**n
        if below > tail:
            break
        k += 1
    if k == 0:
        return None
    ordered = sorted(values)
    return ordered[k - 1], ordered[n - k]


def paired_ratio(values: list[float], level: float = INTERVAL_LEVEL) -> dict[str, Any]:
    """Median, range and the median's interval (:func:`median_interval`) of within-round ratios."""
    interval = median_interval(values, level)
    low, high = interval if interval else (None, None)
    return spread(values) | {"low": low, "high": high, "level": level, "rounds": len(values)}


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
        rows[name]["vs_equal_flops_fastv"] = equal_flops_pair(rows, name, partner)
    return rows


def equal_flops_pair(rows: dict[str, dict[str, Any]], name: str, partner: str) -> dict[str, Any]:
    """``name``'s row against its equal-FLOPs FastV ``partner``'s: FLOPs ratios, overheads, and the prefill ratio
    of each round (its ``raw`` times, round i against round i), so it can be recomputed from a ``bench.json``."""
    mine, theirs = rows[name], rows[partner]
    return {
        "partner": partner,
        "flops_ratio": mine["flops_ratio_formula_swiglu"],
        "flops_ratio_partner": theirs["flops_ratio_formula_swiglu"],
        "prefill_ratio": paired_ratio([m["prefill"] / f["prefill"] for m, f in zip(mine["raw"], theirs["raw"])]),
        "overhead_share": mine["overhead_share"]["median"],
        "overhead_share_partner": theirs["overhead_share"]["median"],
    }
