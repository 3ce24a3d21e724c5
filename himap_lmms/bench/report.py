"""The benchmark's files: ``bench.json`` (everything, raw times included), ``bench.md`` (the tables and the
goals; docs/cost-benchmark.md says what the columns mean) and ``bench.png`` (speed-up against
1 / FLOPs ratio, with the ideal y = x)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd

from himap_lmms.bench.goals import goal_set_for, verdict
from himap_lmms.bench.settings import REFERENCE
from himap_lmms.model_shapes import PREFIX_TOKENS, TEXT_TOKENS

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# formula (FastV's convention, then the SwiGLU FFN's), counted in the decoder layers, counted in the whole prefill
FLOPS_RATIOS = (
    "flops_ratio_formula_fastv",
    "flops_ratio_formula_swiglu",
    "flops_ratio_counted",
    "flops_ratio_whole_prefill_counted",
)


def write_outputs(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "bench.md").write_text(markdown(results))
    plot(results, out / "bench.png")


def _table(rows: list[dict[str, str]]) -> str:
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


def _spread(values: dict[str, float], unit: str = "x", digits: int = 2) -> str:
    return f"{values['median']:.{digits}f}{unit} [{values['min']:.{digits}f}-{values['max']:.{digits}f}]"


def _interval(ratio: dict[str, Any]) -> str:
    return "n/a" if ratio["low"] is None else f"{ratio['low']:.3f}-{ratio['high']:.3f}"


def _mib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:.0f}"


def markdown(results: dict[str, Any]) -> str:
    s = results["settings"]
    lines = [
        f"# Cost benchmark: {results['shape']['summary']}",
        "",
        f"{results['device_name']} ({s['device']}), {s['dtype']}, SDPA, torch {results['torch']}, "
        f"torch threads: {results['threads']}; prompt {PREFIX_TOKENS} + {results['shape']['num_image_tokens']} "
        f"image + {TEXT_TOKENS} text tokens; {s['new_tokens']} new tokens; timed rounds: {s['repeats']} (medians "
        f"[min-max]); run took {results['seconds']:.0f} s. docs/cost-benchmark.md explains the columns.",
    ]
    for batch, rows in results["batches"].items():
        labels = {name: results["methods"][name]["label"] for name in rows}
        speed = [
            {
                "method": labels[name],
                "tokens per layer": "->".join(str(n) for n in dict.fromkeys(r["tokens_per_layer"])),
                "1 / FLOPs ratio": f"{r['inverse_flops_ratio']:.2f}x",
                "prefill speed-up": _spread(r["prefill_speedup"]),
                f"end-to-end speed-up, {s['new_tokens']} tokens": _spread(r["total_speedup"]),
                "pruning overhead": f"{100 * r['overhead_share']['median']:.2f} %",
            }
            for name, r in rows.items()
        ]
        cost = [
            {
                "method": labels[name],
                "FLOPs ratio fastv / swiglu / counted / counted whole prefill": " / ".join(
                    f"{r[key]:.4f}" for key in FLOPS_RATIOS
                ),
                "prefill s": _spread(r["prefill_s"], "", 3),
                "total s": _spread(r["total_s"], "", 3),
                "peak live tensors MiB": _mib(r["peak_live_tensor_bytes"]),
                "KV cache MiB": _mib(r["kv_cache_bytes"]),
                "CUDA peak MiB": _mib(r["cuda_peak_bytes"]["max"]) if r["cuda_peak_bytes"] else "n/a",
            }
            for name, r in rows.items()
        ]
        vanilla = rows["vanilla"]
        lines += ["", f"## Batch {batch}", "", _table(speed), "", _table(cost), ""]
        paired = [
            {
                "method": labels[name],
                "FastV at its FLOPs": labels[p["partner"]],
                "FLOPs ratio method / FastV": f"{p['flops_ratio']:.4f} / {p['flops_ratio_partner']:.4f}",
                "prefill time / FastV's [range]": _spread(p["prefill_ratio"], "", 3),
                "median's interval": _interval(p["prefill_ratio"]),
                "pruning overhead method / FastV": (
                    f"{100 * p['overhead_share']:.2f} % / {100 * p['overhead_share_partner']:.2f} %"
                ),
            }
            for name, r in rows.items()
            if (p := r.get("vs_equal_flops_fastv"))
        ]
        if paired:
            lines += [
                "At equal FLOPs: each method against FastV from K=2 at its FLOPs ratio (swiglu formula), timed in the "
                "same rounds; prefill time ratios are paired within a round, and the median's interval is the sign "
                "test's (95 %, distribution-free; none under 6 rounds).",
                "",
            ]
            lines += [_table(paired), ""]
        if results.get("unpaired"):
            lines += [
                f"No FastV partner for {', '.join(results['unpaired'])}: FastV from K=2 keeping a single image token "
                "costs more FLOPs at this shape.",
                "",
            ]
        if REFERENCE in rows:
            split = ", ".join(
                f"{part.rsplit('.', 1)[-1]} {1e3 * t:.1f} ms"
                for part, t in rows[REFERENCE]["overhead_s_by_label"].items()
            )
            lines.append(f"Pruning overhead of {labels[REFERENCE]} per profiled prefill (medians): {split}.")
        lines.append(
            f"Vanilla prefill: {vanilla['flops_decoder_layers'] / 1e9:.1f} GFLOP counted in the decoder layers "
            f"({100 * vanilla['counted_vs_formula_absolute']:+.4f} % against 2 x batch x the swiglu formula), "
            f"{vanilla['flops_vision'] / 1e9:.2f} in the vision tower + projector, "
            f"{vanilla['flops_lm_head'] / 1e9:.2f} in lm_head; attention ops counted: "
            f"{', '.join(vanilla['attention_ops_counted']) or 'none'}."
        )
    if "reference_style" in results:
        ref = results["reference_style"]
        vanilla_s, himap_s = (ref["seconds"][name]["total"]["median"] for name in ("vanilla", REFERENCE))
        ours = results["batches"].get("1", {})
        ours_s = [ours[name]["total_s"]["median"] for name in ("vanilla", REFERENCE) if name in ours]
        ours_text = (
            f" Ours (SDPA, KV cache): vanilla {ours_s[0]:.3f} s, HiMAP {ours_s[1]:.3f} s." if len(ours_s) == 2 else ""
        )
        lines += [
            "",
            "## Reference style (eager attention, no KV cache, pruned forward redone per token)",
            "",
            f"Batch 1, {ref['new_tokens']} new tokens, rounds: {s['reference_repeats']}; vanilla {vanilla_s:.3f} s, "
            f"HiMAP reference {himap_s:.3f} s; end-to-end speed-up {_spread(ref['speedup_total'])}, first token "
            f"{_spread(ref['speedup_first_token'])}.{ours_text}",
        ]
    goal_lines = [f"{verdict(g)}  {g['goal']}: {g['value']}" for g in results["goals"]]
    lines += ["", "## Goals", "", "```", *(goal_lines or [f"none checked: {REFERENCE} did not run"]), "```"]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    """Speed-up against 1 / FLOPs ratio per method: prefill and end-to-end per batch size, ideal line y = x."""
    figure, axis = plt.subplots(figsize=(8, 5.5), dpi=130)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    limit, top = 1.0, 1.0
    for index, (batch, rows) in enumerate(results["batches"].items()):
        colour = colours[index % len(colours)]
        x = [r["inverse_flops_ratio"] for r in rows.values()]
        prefill = [r["prefill_speedup"] for r in rows.values()]
        limit, top = max(limit, *x), max(top, *(p["max"] for p in prefill))
        errors = [[p["median"] - p["min"] for p in prefill], [p["max"] - p["median"] for p in prefill]]
        medians = [p["median"] for p in prefill]
        axis.errorbar(x, medians, yerr=errors, fmt="o", color=colour, capsize=3, label=f"prefill, batch {batch}")
        axis.scatter(
            x,
            [r["total_speedup"]["median"] for r in rows.values()],
            marker="^",
            color=colour,
            facecolors="none",
            label=f"end-to-end, {results['settings']['new_tokens']} tokens, batch {batch}",
        )
        if index == 0:
            for name, xy in zip(rows, zip(x, medians)):
                if not results["methods"][name]["paired_with"]:  # a FastV partner sits on its method's x
                    axis.annotate(name, xy, textcoords="offset points", xytext=(-6, 8), ha="right", fontsize=8)
    reference = results["batches"].get("1", {}).get(REFERENCE)
    if "reference_style" in results and reference:
        axis.scatter(
            [reference["inverse_flops_ratio"]],
            [results["reference_style"]["speedup_total"]["median"]],
            marker="*",
            s=160,
            color="black",
            label="HiMAP end-to-end, reference style (eager, no cache)",
        )
    limit *= 1.08
    axis.plot([1, limit], [1, limit], "k--", linewidth=1, label="ideal: speed-up = 1 / FLOPs ratio")
    goal = goal_set_for(results["settings"]["device"]).prefill_efficiency
    axis.plot([1, limit], [goal, goal * limit], "k:", linewidth=1, label=f"goal: {goal} x ideal")
    axis.set_xlim(0.8, limit)
    axis.set_ylim(0.8, max(limit, top) * 1.05)
    axis.set_xlabel("1 / FLOPs ratio (swiglu formula, decoder layers)")
    axis.set_ylabel("speed-up over vanilla (median of rounds)")
    s = results["settings"]
    axis.set_title(f"{s['shape']} shape, {results['device_name']} ({s['device']}), {s['dtype']}", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7.5, loc="upper left")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
