"""Cost of vanilla / FastV / HiMAP side by side: prefill and end-to-end time, FLOPs (formula and measured), memory.

    python scripts/bench_cost.py                                  # CPU, scaled LLaVA shape (hidden 1024, 32 layers)
    python scripts/bench_cost.py --shape 7b --device cuda --batch-sizes 1,8      # LLaVA-1.5-7B shape, bf16, SDPA
    python scripts/bench_cost.py --shape 13b --device cuda --batch-sizes 1,8
    python scripts/bench_cost.py --reference-style               # also time the authors' way (see below)

Everything runs in one process on the same inputs (random weights; 35 prefix + 576 image + 39 text tokens, a
ScienceQA-like prompt), methods interleaved inside every repeat so that machine noise hits all of them alike;
medians over repeats with min and max, one warm-up round excluded. Reported per method and batch size:

- prefill time (time to the first token, vision tower included) and total time for ``--new-tokens`` tokens;
- FLOPs ratio by the engine's formula (both conventions) and as counted by ``torch.utils.flop_counter`` on the
  decoder layers of the actual prefill (vision tower, lm_head and the scoring rows are outside both);
- the pruning's own overhead (scoring + top-k) as a share of the prefill;
- peak memory on CUDA (``max_memory_allocated``); on the CPU torch has no allocator statistics, so none.

``--reference-style`` adds the authors' way of running: eager attention in every layer, no KV cache, the whole
pruned forward redone for every new token. Writes JSON, a Markdown table and a PNG (speed-up against
1 / FLOPs ratio with the ideal line) to ``results/bench/<shape>-<device>/``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count
from tqdm import tqdm
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

import himap_lmms.pruning.engine as engine_module
from himap_lmms.cost import prefill_cost
from himap_lmms.pruning import PrunedLlava, PruningConfig

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHAPES = {  # hidden, layers, heads, FFN width; vision: hidden, layers, heads, FFN width
    "tiny": ((64, 12, 4, 128), (32, 1, 2, 64)),  # for tests of this script
    "scaled": ((1024, 32, 16, 2816), (64, 1, 2, 128)),
    "7b": ((4096, 32, 32, 11008), (1024, 24, 16, 4096)),
    "13b": ((5120, 40, 40, 13824), (1024, 24, 16, 4096)),
}
METHODS = {
    "vanilla": PruningConfig.none(),
    "fastv_50": PruningConfig.fastv(k=2, keep=288),
    "fastv_75": PruningConfig.fastv(k=2, keep=144),
    "himap_ref": PruningConfig.himap(k1=2, keep1=288, k2=8, keep2=72),
    "himap_25": PruningConfig.himap(k1=2, keep1=144, k2=8, keep2=36),
}
PREFIX, IMAGE, TEXT = 35, 576, 39


def build_model(shape: str, dtype: torch.dtype, device: str, attention: str) -> LlavaForConditionalGeneration:
    (hidden, layers, heads, ffn), (v_hidden, v_layers, v_heads, v_ffn) = SHAPES[shape]
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=v_hidden, num_hidden_layers=v_layers, num_attention_heads=v_heads,
            intermediate_size=v_ffn, image_size=336, patch_size=14,
        ),
        text_config=LlamaConfig(
            hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
            num_key_value_heads=heads, intermediate_size=ffn, vocab_size=32064,
        ),
        image_token_id=32000,
    )  # fmt: skip
    config._attn_implementation = attention
    torch.manual_seed(0)
    with torch.device(device):
        model = LlavaForConditionalGeneration(config)
    return model.to(dtype).eval()


def make_inputs(model, batch: int, device: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    text = lambda n: torch.randint(100, 31000, (batch, n), generator=generator)  # noqa: E731
    image = torch.full((batch, IMAGE), model.config.image_token_id)
    input_ids = torch.cat([text(PREFIX), image, text(TEXT)], dim=1)
    pixels = torch.randn(batch, 3, 336, 336, generator=generator)
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": torch.ones_like(input_ids, device=device),
        "pixel_values": pixels.to(device, dtype),
    }


class OverheadTimer:
    """Time spent in the engine's scoring and top-k selection, by wrapping those two functions."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds = device, 0.0
        self.originals = {name: getattr(engine_module, name) for name in ("score_image_tokens", "select_top")}

    def __enter__(self) -> OverheadTimer:
        for name, function in self.originals.items():
            setattr(engine_module, name, self._timed(function))
        return self

    def __exit__(self, *exc) -> None:
        for name, function in self.originals.items():
            setattr(engine_module, name, function)

    def _timed(self, function):
        def wrapper(*args, **kwargs):
            start = engine_module._now(self.device)
            result = function(*args, **kwargs)
            self.seconds += engine_module._now(self.device) - start
            return result

        return wrapper


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# torch counts SDPA's CUDA kernels but has no formula for the CPU one, which would leave out the n^2 term.
CPU_ATTENTION_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}


def measured_layer_flops(model, inputs: dict, config: PruningConfig) -> float:
    """FLOPs torch counts inside the decoder layers of one prefill.

    The engine calls each layer itself, so the counter files every layer's operations under the layer class
    name; the scoring rows (a direct ``q_proj`` call and a matmul) land outside it, like the vision tower.
    """
    counter = FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS)
    with counter:
        PrunedLlava(model, config).prefill(**inputs)
    layer_class = type(model.model.language_model.layers[0]).__name__
    return float(sum(counter.get_flop_counts()[layer_class].values()))


def reference_style_seconds(model, inputs: dict, config: PruningConfig, new_tokens: int) -> float:
    """The authors' loop: the whole pruned forward (prompt + answer so far) again for every new token."""
    engine = PrunedLlava(model, config)
    start = engine_module._now(inputs["input_ids"].device)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    for _ in range(new_tokens):
        logits, _, _ = engine.prefill(ids, mask, inputs["pixel_values"])
        token = logits.argmax(dim=-1, keepdim=True)
        ids, mask = torch.cat([ids, token], dim=1), torch.cat([mask, torch.ones_like(token)], dim=1)
    return engine_module._now(ids.device) - start


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    model = build_model(args.shape, dtype, args.device, "sdpa")
    hidden, _, _, ffn = SHAPES[args.shape][0]
    results = {"shape": args.shape, "device": str(device), "dtype": args.dtype, "new_tokens": args.new_tokens}
    results["device_name"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows = []
    for batch in args.batch_sizes:
        inputs = make_inputs(model, batch, args.device, dtype)
        times = defaultdict(lambda: defaultdict(list))
        for repeat in tqdm(range(args.repeats + 1), desc=f"batch {batch}"):
            for name, config in METHODS.items():
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                with OverheadTimer(device) as overhead:
                    out = PrunedLlava(model, config).generate(**inputs, max_new_tokens=args.new_tokens)
                if repeat == 0:  # warm-up
                    times[name]["tokens"] = out.stats.tokens_per_layer[0].tolist()
                    continue
                times[name]["prefill"].append(out.prefill_seconds)
                times[name]["total"].append(out.total_seconds)
                times[name]["overhead"].append(overhead.seconds / out.prefill_seconds)
                if device.type == "cuda":
                    times[name]["memory_gib"].append(torch.cuda.max_memory_allocated(device) / 2**30)
        vanilla_flops = measured_layer_flops(model, inputs, METHODS["vanilla"])
        base = times["vanilla"]
        for name, config in METHODS.items():
            measured = measured_layer_flops(model, inputs, config) / vanilla_flops
            row = {
                "method": name,
                "config": config.describe(),
                "batch": batch,
                "tokens_per_layer": times[name]["tokens"],
                "flops_ratio_fastv": prefill_cost(times[name]["tokens"], hidden, ffn, "fastv").flops_ratio,
                "flops_ratio_swiglu": prefill_cost(times[name]["tokens"], hidden, ffn, "swiglu").flops_ratio,
                "flops_ratio_measured": measured,
                "prefill_s": spread(times[name]["prefill"]),
                "total_s": spread(times[name]["total"]),
                "overhead_share": spread(times[name]["overhead"]),
                "prefill_speedup": statistics.median(base["prefill"]) / statistics.median(times[name]["prefill"]),
                "total_speedup": statistics.median(base["total"]) / statistics.median(times[name]["total"]),
                "peak_memory_gib": max(times[name]["memory_gib"]) if times[name]["memory_gib"] else None,
            }
            rows.append(row)
    results["rows"] = rows
    if args.reference_style:
        eager = build_model(args.shape, dtype, args.device, "eager")
        inputs = make_inputs(eager, 1, args.device, dtype)
        seconds = {name: [] for name in ("vanilla", "himap_ref")}
        for repeat in tqdm(range(args.repeats + 1), desc="reference style"):
            for name in seconds:
                elapsed = reference_style_seconds(eager, inputs, METHODS[name], args.new_tokens)
                if repeat:
                    seconds[name].append(elapsed)
        results["reference_style"] = {name: spread(values) for name, values in seconds.items()} | {
            "himap_speedup": statistics.median(seconds["vanilla"]) / statistics.median(seconds["himap_ref"])
        }
    return results


def goals(results: dict) -> list[str]:
    """The issue's goals at the reference setting, batch 1: PASS or MISS with the numbers."""
    row = next(r for r in results["rows"] if r["method"] == "himap_ref" and r["batch"] == results["rows"][0]["batch"])
    ideal = 1 / row["flops_ratio_swiglu"]
    checks = [
        ("prefill speed-up >= 0.85 x 1/FLOPs ratio", row["prefill_speedup"] >= 0.85 * ideal,
         f"{row['prefill_speedup']:.2f}x vs {0.85 * ideal:.2f}x"),
        ("pruning overhead < 3 % of prefill", row["overhead_share"]["median"] < 0.03,
         f"{100 * row['overhead_share']['median']:.2f} %"),
        (f"end-to-end speed-up >= 2.0x ({results['new_tokens']} new tokens)", row["total_speedup"] >= 2.0,
         f"{row['total_speedup']:.2f}x"),
        ("formula and measured FLOPs ratio within 5 %",
         abs(row["flops_ratio_measured"] / row["flops_ratio_swiglu"] - 1) < 0.05,
         f"{row['flops_ratio_measured']:.4f} vs {row['flops_ratio_swiglu']:.4f}"),
    ]  # fmt: skip
    return [f"{'PASS' if ok else 'MISS'}  {what}: {value}" for what, ok, value in checks]


def markdown(results: dict) -> str:
    lines = [
        f"Shape {results['shape']}, {results['device_name']}, {results['dtype']}, {results['new_tokens']} new tokens; "
        "medians of the repeats (min-max in the JSON).",
        "",
        "| batch | method | FLOPs ratio (fastv / swiglu / measured) | prefill speed-up | end-to-end speed-up "
        "| 1 / FLOPs ratio | pruning overhead | peak memory |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        memory = f"{r['peak_memory_gib']:.2f} GiB" if r["peak_memory_gib"] is not None else "n/a (CPU)"
        lines.append(
            f"| {r['batch']} | {r['method']} | {r['flops_ratio_fastv']:.3f} / {r['flops_ratio_swiglu']:.3f} / "
            f"{r['flops_ratio_measured']:.3f} | {r['prefill_speedup']:.2f}x | {r['total_speedup']:.2f}x | "
            f"{1 / r['flops_ratio_swiglu']:.2f}x | {100 * r['overhead_share']['median']:.2f} % | {memory} |"
        )
    if "reference_style" in results:
        ref = results["reference_style"]
        lines += ["", f"Reference style (eager, no KV cache, re-pruned every token), batch 1: HiMAP end-to-end "
                  f"speed-up {ref['himap_speedup']:.2f}x over vanilla run the same way."]  # fmt: skip
    lines += ["", *goals(results)]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(5, 4), dpi=120)
    for batch in sorted({r["batch"] for r in results["rows"]}):
        rows = [r for r in results["rows"] if r["batch"] == batch]
        axis.scatter([1 / r["flops_ratio_swiglu"] for r in rows], [r["prefill_speedup"] for r in rows],
                     label=f"prefill, batch {batch}")  # fmt: skip
        for r in rows:
            axis.annotate(r["method"], (1 / r["flops_ratio_swiglu"], r["prefill_speedup"]), fontsize=7)
    limit = max(1 / r["flops_ratio_swiglu"] for r in results["rows"]) * 1.1
    axis.plot([1, limit], [1, limit], "k--", label="ideal (speed-up = 1 / FLOPs ratio)")
    axis.set_xlabel("1 / FLOPs ratio")
    axis.set_ylabel("measured speed-up over vanilla")
    axis.set_title(f"{results['shape']} on {results['device_name']}")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="scaled")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="float32 on CPU, bfloat16 on CUDA by default")
    parser.add_argument("--batch-sizes", default="1", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--reference-style", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    results = run(args)
    out = args.out or REPO / "results" / "bench" / f"{args.shape}-{results['device_name'].replace(' ', '_')}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(results, indent=1))
    (out / "bench.md").write_text(markdown(results))
    plot(results, out / "bench.png")
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
