"""From a batch's raw measurements to per-method rows (FLOPs ratios, paired speed-ups, overhead, the prefill
against an equal-FLOPs FastV) and the goals."""

from __future__ import annotations

import statistics
from typing import Any

from himap_lmms.bench.settings import REFERENCE
from himap_lmms.cost import prefill_cost
from himap_lmms.pruning import PRUNING_LABELS
from himap_lmms.shapes import LlavaShape

GOAL_PREFILL_EFFICIENCY = 0.85  # prefill speed-up >= 0.85 x 1 / FLOPs ratio
GOAL_OVERHEAD = 0.03  # scoring + top-k + compaction < 3 % of the prefill
GOAL_END_TO_END = 2.0  # end-to-end speed-up over our own vanilla
GOAL_FLOPS_AGREEMENT = 0.05  # counted vs formula FLOPs ratio
GOAL_EQUAL_FLOPS_PREFILL = 0.05  # prefill time within 5 % of FastV's at the same FLOPs ratio
PAIR_FLOPS_TOLERANCE = 0.01  # a FastV partner's FLOPs ratio (swiglu formula) may differ by one point at most

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
        formula = {c: prefill_cost(tokens, shape.hidden, shape.intermediate, c, prompt) for c in ("fastv", "swiglu")}
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


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The goals for every batch size, at the reference setting and for every method with an equal-FLOPs FastV
    partner: what was asked, what was measured."""
    checks = []

    def check(goal: str, passed: bool, value: str) -> None:
        checks.append({"goal": goal, "passed": bool(passed), "value": value})

    new_tokens = results["settings"]["new_tokens"]
    for batch, rows in results["batches"].items():
        for name, pair in ((n, r["vs_equal_flops_fastv"]) for n, r in rows.items() if "vs_equal_flops_fastv" in r):
            ratio, flops = pair["prefill_ratio"], (pair["flops_ratio"], pair["flops_ratio_partner"])
            matched = abs(flops[0] - flops[1]) <= PAIR_FLOPS_TOLERANCE
            check(
                f"batch {batch}: {name}'s prefill within {GOAL_EQUAL_FLOPS_PREFILL:.0%} of FastV's at the same FLOPs "
                f"ratio ({pair['partner']})",
                matched and abs(ratio["median"] - 1) <= GOAL_EQUAL_FLOPS_PREFILL,
                f"{ratio['median']:.3f}x FastV's [{ratio['min']:.3f}-{ratio['max']:.3f}] at FLOPs ratios "
                f"{flops[0]:.4f} / {flops[1]:.4f}; pruning overhead {100 * pair['overhead_share']:.2f} % vs "
                f"{100 * pair['overhead_share_partner']:.2f} % of the prefill",
            )
        row = rows.get(REFERENCE)
        if row is None:
            continue
        prefill, total, share = row["prefill_speedup"]["median"], row["total_speedup"]["median"], row["overhead_share"]
        wanted = GOAL_PREFILL_EFFICIENCY * row["inverse_flops_ratio"]
        cap = row["achievable_prefill_speedup"] / row["inverse_flops_ratio"]
        check(
            f"batch {batch}: prefill speed-up >= {GOAL_PREFILL_EFFICIENCY} x 1/FLOPs ratio (swiglu formula)",
            prefill >= wanted,
            f"{prefill:.2f}x vs {wanted:.2f}x ({row['prefill_efficiency']:.2f} of the FLOPs bound; the unpruned "
            f"vision tower and lm_head alone cap it at {cap:.2f})",
        )
        check(
            f"batch {batch}: pruning overhead (scoring + top-k + compaction) < {GOAL_OVERHEAD:.0%} of prefill",
            share["median"] < GOAL_OVERHEAD,
            f"{100 * share['median']:.2f} % (max over rounds {100 * share['max']:.2f} %)",
        )
        check(
            f"batch {batch}: end-to-end speed-up, 1-token answer (= prefill) >= {GOAL_END_TO_END}x",
            prefill >= GOAL_END_TO_END,
            f"{prefill:.2f}x (achievable {row['achievable_prefill_speedup']:.2f}x)",
        )
        check(
            f"batch {batch}: end-to-end speed-up, {new_tokens} new tokens >= {GOAL_END_TO_END}x",
            total >= GOAL_END_TO_END,
            f"{total:.2f}x (achievable {row['achievable_total_speedup']:.2f}x with a FLOPs-proportional prefill and "
            "the measured decoding steps)",
        )
        worst = max(rows.values(), key=lambda r: abs(r["counted_vs_formula"]))
        check(
            f"batch {batch}: counted vs formula FLOPs ratio within {GOAL_FLOPS_AGREEMENT:.0%} (all methods)",
            abs(worst["counted_vs_formula"]) < GOAL_FLOPS_AGREEMENT,
            f"largest difference {100 * worst['counted_vs_formula']:+.4f} %",
        )
    return checks
