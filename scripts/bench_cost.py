"""What pruning buys in time, FLOPs and memory: vanilla, FastV and HiMAP side by side, one process, same inputs.

Usage::

    # CPU (the defaults: scaled LLaVA shape, bf16, 1 thread, batch 1 and 2, 8 new tokens, 5 rounds + 1 warm-up);
    # about 4 minutes on 2 shared cores, 3 without --reference-style
    python scripts/bench_cost.py --shape scaled --reference-style
    # GPU: LLaVA-1.5-7B and 13B shapes (random weights, bf16, SDPA, the real CLIP-L/336 tower), batch 1 and 8
    python scripts/bench_cost.py --shape 7b --device cuda --reference-style
    python scripts/bench_cost.py --shape 13b --device cuda --reference-style

Writes ``bench.json`` (everything, raw per-repeat times included), ``bench.md`` (the tables, the goals, these notes)
and ``bench.png`` (speed-up against 1 / FLOPs ratio, with the ideal y = x) to ``results/bench/<shape>-<device>/``.

The inputs are ScienceQA-like prompts without a tokenizer: 35 prefix ids, LLaVA-1.5's 576 image tokens, 39 text
ids (74 text tokens in all), random pixels, random weights (:mod:`himap_lmms.shapes`); timing does not depend on
what the weights are. For each batch size:

1. A counting pass, one greedy generation per method, untimed (it also warms up the kernels on the CPU):
   ``torch.utils.flop_counter.FlopCounterMode`` around the prefill, a live-tensor tracker around the whole run.
2. ``--warmup`` plain rounds, untimed (default 1).
3. ``--repeats`` timed rounds. Every method runs once per round, in an order rotated from round to round, so that
   machine noise (other jobs on the cores, clocks) hits all of them alike; speed-ups are taken within a round
   (vanilla's time over the method's, same round) and reported as the median over rounds, with min and max.

What is timed: *prefill* is the time to the first token, i.e. CLIP tower + projector + embedding merge + every
decoder layer with the pruning in between + final norm and lm_head at the last position + argmax (the GPU is
synchronised). With a one-token answer (ScienceQA's letters) that is the whole end-to-end time of an example.
*total* adds ``--new-tokens - 1`` cached decoding steps.

FLOPs, and why the formula and the count agree. The formula (``himap_lmms.cost``, docs/method.md "Cost accounting") is
per layer ``4nd^2 + 2n^2d + 2ndm`` (FastV's convention) or ``+ 3ndm`` (a LLaMA SwiGLU FFN's three matrices). It
counts multiply-accumulates of the matrix products of the decoder layers only. The counter counts 2 FLOPs per
multiply-accumulate of every matrix product and SDPA call (on CUDA torch knows the flash / efficient / cuDNN SDPA
kernels; the CPU's flash kernel is not in its table, so this script maps it to torch's own ``sdpa_flop_count``),
and nothing for elementwise work. Both count the full ``n x n`` attention square although a causal kernel computes
about half of it. So, on the decoder layers, counted = 2 x batch x swiglu-formula exactly, and the two ratios are
equal; the differences that remain in general are:

- the formula's FastV convention leaves out the third FFN matrix (a few % on the ratio, see the table);
- the formula assumes multi-head attention (``4nd^2`` for q, k, v, o); a model with grouped-query attention
  (fewer k/v heads) has smaller k/v projections, which the counter sees and the formula does not (not LLaVA-1.5);
- RMSNorm, RoPE, SiLU and the residual adds are elementwise: in neither count (they still take time);
- the scoring rows (a ``q_proj`` on the scored rows and a rows x n product at layers K-1) run outside the layers:
  counted under "other", not in the decoder-layer count nor the formula;
- padding: the counter counts padded positions, the formula only real tokens (no padding here: equal-length
  prompts and fixed budgets);
- the vision tower, projector and lm_head are outside the formula; they are counted separately here and give the
  "whole prefill" ratio, which bounds the time-to-first-token speed-up better than the formula does.

The pruning's own overhead is measured by wrapping, in the engine's module namespace, the functions that do it
(``score_image_tokens``, ``select_top``, ``_compact_order``) with synchronised timers; the engine itself is not
changed. The gathers that compact the sequence are inline in the engine's loop, so they are replayed on tensors of
the same shapes right after the run and added.

Memory. On CUDA: ``torch.cuda.max_memory_allocated`` during each timed run, minus what was allocated before it
(weights, inputs). On the CPU torch has no allocator statistics and the process's max RSS is a high-water mark that
a method run after vanilla can never raise, so instead every run's peak of *live tensors created during the run*
is tracked by a ``TorchDispatchMode`` (storages counted once, freed ones dropped; weights excluded; scratch
buffers inside a kernel, e.g. SDPA's, are not seen). It is reported on both devices, next to the KV cache size
measured from the cache after the prefill.

``--reference-style`` also runs the way the authors' code does, so that our numbers can be set beside the paper's
like for like: eager attention in every layer, no KV cache, the whole pruned forward (image included) redone on
prompt + tokens so far for every new token, at batch 1.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count
from tqdm import tqdm

import himap_lmms.pruning.engine as engine_module
from himap_lmms.cost import prefill_cost
from himap_lmms.pruning import PrunedLlava, PruningConfig
from himap_lmms.shapes import SHAPES, LlavaShape, build_random_llava, prompt_inputs

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

# name -> (schedule, label). FastV's R is the share pruned; the engine's ratio is the share kept.
METHODS: dict[str, tuple[PruningConfig, str]] = {
    "vanilla": (PruningConfig.none(), "vanilla"),
    "fastv_50": (PruningConfig.fastv(k=2, ratio=0.5), "FastV K=2 R=50%"),
    "fastv_75": (PruningConfig.fastv(k=2, ratio=0.25), "FastV K=2 R=75%"),
    "himap_ref": (PruningConfig.himap(k1=2, keep1=288, k2=8, keep2=72), "HiMAP 2/288 8/72 (reference)"),
    "himap_25": (PruningConfig.himap(k1=2, keep1=144, k2=8, keep2=36), "HiMAP 2/144 8/36"),
}
REFERENCE = "himap_ref"
GOAL_PREFILL_EFFICIENCY = 0.85  # prefill speed-up >= 0.85 x 1 / FLOPs ratio
GOAL_OVERHEAD = 0.03  # scoring + selection + gathers < 3 % of the prefill
GOAL_END_TO_END = 2.0  # end-to-end speed-up over our own vanilla
GOAL_FLOPS_AGREEMENT = 0.05  # counted vs formula FLOPs ratio


# ----------------------------------------------------------------------------------------------------------------
# Instruments


def _cpu_flash_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# torch's FLOP table has the CUDA SDPA kernels but not the CPU one: without this the n^2 term would be missing.
EXTRA_FLOP_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_attention_flops}


def _is_tensor(value: object) -> bool:
    return isinstance(value, torch.Tensor)


class LiveTensorMemory(TorchDispatchMode):
    """Peak bytes of the tensors created while active and still alive, on any device.

    Every op's outputs are recorded by storage (views and in-place results share one, counted once); before each op,
    storages that Python has freed since are dropped. Tensors that existed before (weights, inputs) are not counted,
    nor are views of them (``weight.t()`` inside a linear layer shares the weight's storage): an output whose storage
    is one of the op's inputs' and is not already tracked was not allocated by the run.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self._drop_freed()
        out = func(*args, **(kwargs or {}))
        inputs = {StorageWeakRef(t.untyped_storage()).cdata for t in tree_leaves((args, kwargs)) if _is_tensor(t)}
        for tensor in tree_leaves(out):
            if _is_tensor(tensor):
                self._add(tensor.untyped_storage(), inputs)
        self.peak = max(self.peak, self.current)
        return out

    def _add(self, storage: torch.UntypedStorage, input_storages: set[int]) -> None:
        ref = StorageWeakRef(storage)
        if ref.cdata not in self.live and ref.cdata not in input_storages:
            self.live[ref.cdata] = (ref, storage.nbytes())
            self.current += storage.nbytes()

    def _drop_freed(self) -> None:
        for key in [key for key, (ref, _) in self.live.items() if ref.expired()]:
            self.current -= self.live.pop(key)[1]


class PruningOverheadTimer:
    """Seconds spent in the engine's pruning functions, by wrapping them where the engine looks them up.

    The engine calls ``score_image_tokens``, ``select_top`` and ``_compact_order`` through its module globals, so
    replacing those names (and restoring them on exit) times every call without editing the engine. Each call is
    bracketed by the engine's own clock, which synchronises the GPU; the engine already syncs next to most of those
    points (it reads token counts back), so the timers add little stall that the run did not have.
    """

    WRAPPED = ("score_image_tokens", "select_top", "_compact_order")

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.by_function = dict.fromkeys(self.WRAPPED, 0.0)
        self.originals = {name: getattr(engine_module, name) for name in self.WRAPPED}

    @property
    def seconds(self) -> float:
        return sum(self.by_function.values())

    def __enter__(self) -> PruningOverheadTimer:
        for name, function in self.originals.items():
            setattr(engine_module, name, self._timed(name, function))
        return self

    def __exit__(self, *exc: object) -> None:
        for name, function in self.originals.items():
            setattr(engine_module, name, function)

    def _timed(self, name: str, function: Callable) -> Callable:
        def timed(*args, **kwargs):
            start = engine_module._now(self.device)
            result = function(*args, **kwargs)
            self.by_function[name] += engine_module._now(self.device) - start
            return result

        return timed


def replayed_gather_seconds(
    tokens_per_layer: list[int], batch: int, hidden: int, dtype: torch.dtype, device: torch.device, repeats: int = 5
) -> float:
    """Time of the engine's inline compaction gathers, replayed on tensors of the same shapes (median of repeats).

    At each layer where the token count drops, the engine gathers the hidden states ``(batch, n_after, hidden)`` out
    of ``(batch, n_before, hidden)`` and four ``(batch, n)`` index/mask tensors.
    """
    drops = [(a, b) for a, b in zip(tokens_per_layer, tokens_per_layer[1:]) if b < a]
    total = 0.0
    for before, after in drops:
        states = torch.randn(batch, before, hidden, dtype=dtype, device=device)
        small = [torch.zeros(batch, before, dtype=torch.long, device=device) for _ in range(4)]
        order = torch.arange(before - after, before, device=device).expand(batch, after)
        times = []
        for _ in range(repeats):
            start = engine_module._now(device)
            states.gather(1, order[..., None].expand(-1, -1, hidden))
            for t in small:
                t.gather(1, order)
            times.append(engine_module._now(device) - start)
        total += statistics.median(times)
    return total


# ----------------------------------------------------------------------------------------------------------------
# Runs


def greedy(engine: PrunedLlava, inputs: dict[str, torch.Tensor], new_tokens: int, counter: FlopCounterMode):
    """Prefill under ``counter``, then ``new_tokens - 1`` cached greedy steps; returns the stats and the KV bytes.

    This is :meth:`PrunedLlava.generate` without EOS handling, spelled out so that the FLOP counter can enclose the
    prefill alone and the KV cache can be measured between prefill and decoding.
    """
    with counter:
        logits, state, stats = engine.prefill(**inputs)
    kv_bytes = sum(layer.keys.nbytes + layer.values.nbytes for layer in state.cache.layers)
    token = logits.argmax(dim=-1)
    for _ in range(new_tokens - 1):
        token = engine.decode(state, token[:, None]).argmax(dim=-1)
    return stats, kv_bytes


def count_run(model, shape: LlavaShape, inputs: dict[str, torch.Tensor], config: PruningConfig, new_tokens: int):
    """The untimed counting pass of one method: FLOPs by part of the prefill, token counts, memory."""
    counter = FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS)
    with LiveTensorMemory() as memory:
        stats, kv_bytes = greedy(PrunedLlava(model, config), inputs, new_tokens, counter)
    counts = counter.get_flop_counts()
    layer_class = type(model.model.language_model.layers[0]).__name__
    vision_parts = (type(model.model.vision_tower).__name__, type(model.model.multi_modal_projector).__name__)

    def total(key: str) -> float:
        return float(sum(counts.get(key, {}).values()))

    if layer_class not in counts:
        raise RuntimeError(f"FlopCounterMode saw no {layer_class}: its module names are {sorted(counts)}")
    layers, whole = total(layer_class), total("Global")
    vision = sum(total(part) for part in vision_parts)
    tokens = stats.tokens_per_layer
    if not bool((tokens == tokens[0]).all()):
        raise RuntimeError("samples of the batch kept different token counts: the FLOP comparison assumes equal ones")
    attention_ops = [str(op) for op in counts[layer_class] if "attention" in str(op) or "bmm" in str(op)]
    return {
        "tokens_per_layer": tokens[0].tolist(),
        "flops_decoder_layers": layers,
        "flops_vision": vision,
        "flops_lm_head": 2.0 * tokens.shape[0] * shape.hidden * shape.vocab,
        "flops_whole_prefill": whole,
        "attention_ops_counted": attention_ops,
        "peak_live_tensor_bytes": memory.peak,
        "kv_cache_bytes": kv_bytes,
    }


def timed_run(model, inputs: dict[str, torch.Tensor], config: PruningConfig, new_tokens: int) -> dict[str, float]:
    """One greedy generation with the engine's own timers, the pruning overhead timer and the CUDA peak."""
    device = inputs["input_ids"].device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        resident = torch.cuda.memory_allocated(device)
    with PruningOverheadTimer(device) as overhead:
        out = PrunedLlava(model, config).generate(**inputs, max_new_tokens=new_tokens)
    result = {"prefill": out.prefill_seconds, "total": out.total_seconds, "overhead": overhead.seconds}
    result |= {f"overhead_{name}": seconds for name, seconds in overhead.by_function.items()}
    if device.type == "cuda":
        result["cuda_peak_bytes"] = torch.cuda.max_memory_allocated(device) - resident
    return result


def reference_style_run(model, inputs: dict[str, torch.Tensor], config: PruningConfig, new_tokens: int):
    """The authors' loop: no cache, the whole pruned forward on prompt + answer so far for every token.

    Returns (seconds to the first token, seconds for all ``new_tokens``).
    """
    engine = PrunedLlava(model, config)  # built after the switch to eager: it reads the kernel on construction
    device = inputs["input_ids"].device
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    start = engine_module._now(device)
    first = 0.0
    for step in range(new_tokens):
        logits, _, _ = engine.prefill(ids, mask, inputs["pixel_values"])
        token = logits.argmax(dim=-1, keepdim=True)
        if step == 0:
            first = engine_module._now(device) - start
        ids, mask = torch.cat([ids, token], dim=1), torch.cat([mask, torch.ones_like(token)], dim=1)
    return first, engine_module._now(device) - start


def rotated(names: list[str], round_index: int) -> list[str]:
    """The methods in a different order every round, so none is always the one that runs after vanilla."""
    shift = round_index % len(names)
    return names[shift:] + names[:shift]


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


@dataclass
class BenchSettings:
    """What one benchmark run measures. The command line fills it; these defaults are the CPU's."""

    shape: str = "scaled"
    device: str = "cpu"
    dtype: str = "bfloat16"
    batch_sizes: tuple[int, ...] = (1, 2)
    repeats: int = 5
    warmup: int = 1
    new_tokens: int = 8
    reference_style: bool = False
    reference_repeats: int = 3
    threads: int | None = None
    methods: tuple[str, ...] = tuple(METHODS)
    progress: bool = True


def run_benchmark(settings: BenchSettings) -> dict[str, Any]:
    """Build the model once, then measure every method on the same inputs for every batch size.

    torch's thread count is set for the run (``settings.threads``) and restored afterwards.
    """
    if "vanilla" not in settings.methods:
        raise ValueError("the methods must include vanilla: every speed-up is taken against it")
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads or threads)
    try:
        return _run_benchmark(settings)
    finally:
        torch.set_num_threads(threads)


def _run_benchmark(settings: BenchSettings) -> dict[str, Any]:
    shape = SHAPES[settings.shape]
    device = torch.device(settings.device)
    dtype = getattr(torch, settings.dtype)
    started = time.perf_counter()
    model = build_random_llava(shape, dtype, device, "sdpa")
    names = list(settings.methods)
    plain_runs = len(names) * (settings.warmup + settings.repeats + 1)
    reference_runs = (settings.reference_repeats + 1) * 2 if settings.reference_style else 0
    bar = tqdm(total=plain_runs * len(settings.batch_sizes) + reference_runs, disable=not settings.progress)

    results: dict[str, Any] = {
        "settings": vars(settings) | {"batch_sizes": list(settings.batch_sizes), "methods": names},
        "shape": vars(shape) | {"summary": shape.describe()},
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "methods": {name: {"label": METHODS[name][1], "config": METHODS[name][0].describe()} for name in names},
        "batches": {},
    }
    for batch in settings.batch_sizes:
        inputs = prompt_inputs(shape, batch, device, dtype)
        counted = {}
        for name in names:
            bar.set_description(f"batch {batch} counting {name}")
            counted[name] = count_run(model, shape, inputs, METHODS[name][0], settings.new_tokens)
            bar.update()
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
        for round_index in range(settings.warmup + settings.repeats):
            warm = round_index < settings.warmup
            for name in rotated(names, round_index):
                label = "warm-up" if warm else f"round {round_index - settings.warmup + 1}"
                bar.set_description(f"batch {batch} {label} {name}")
                run = timed_run(model, inputs, METHODS[name][0], settings.new_tokens)
                if not warm:
                    runs[name].append(run)
                bar.update()
        results["batches"][str(batch)] = summarise_batch(shape, batch, counted, runs, dtype, device)

    if settings.reference_style:
        results["reference_style"] = run_reference_style(model, shape, settings, device, dtype, bar)
    bar.close()
    results["seconds"] = time.perf_counter() - started
    results["goals"] = goals(results)
    return results


def run_reference_style(model, shape: LlavaShape, settings: BenchSettings, device, dtype, bar) -> dict[str, Any]:
    """vanilla and HiMAP (reference setting) at batch 1 the authors' way; the model goes back to SDPA after."""
    inputs = prompt_inputs(shape, 1, device, dtype)
    names = ["vanilla", REFERENCE]
    model.set_attn_implementation("eager")  # same weights, no copy: every attention module reads the config per call
    try:
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
        for round_index in range(settings.reference_repeats + 1):
            for name in rotated(names, round_index):
                bar.set_description(f"reference style {'warm-up' if round_index == 0 else round_index} {name}")
                # The warm-up round makes one token only: that runs eager attention on the prompt's shapes, at a
                # fraction of the cost of a whole no-cache generation.
                tokens = 1 if round_index == 0 else settings.new_tokens
                result = reference_style_run(model, inputs, METHODS[name][0], tokens)
                if round_index:
                    times[name].append(result)
                bar.update()
    finally:
        model.set_attn_implementation("sdpa")
    first = [v / h for (v, _), (h, _) in zip(times["vanilla"], times[REFERENCE])]
    total = [v / h for (_, v), (_, h) in zip(times["vanilla"], times[REFERENCE])]
    return {
        "batch": 1,
        "new_tokens": settings.new_tokens,
        "seconds": {
            name: {
                "first_token": spread([f for f, _ in values]),
                "total": spread([t for _, t in values]),
            }
            for name, values in times.items()
        },
        "speedup_first_token": spread(first),
        "speedup_total": spread(total),
    }


def summarise_batch(shape: LlavaShape, batch: int, counted: dict, runs: dict, dtype, device) -> dict[str, Any]:
    """Per method: counts, medians with min/max, within-round speed-ups, overhead share, achievable bounds."""
    vanilla_counted, vanilla_runs = counted["vanilla"], runs["vanilla"]
    vanilla_prefill = statistics.median(r["prefill"] for r in vanilla_runs)
    vanilla_total = statistics.median(r["total"] for r in vanilla_runs)
    rows = {}
    for name, measured in counted.items():
        tokens = measured["tokens_per_layer"]
        formula = {c: prefill_cost(tokens, shape.hidden, shape.intermediate, c) for c in ("fastv", "swiglu")}
        counted_ratio = measured["flops_decoder_layers"] / vanilla_counted["flops_decoder_layers"]
        whole_ratio = measured["flops_whole_prefill"] / vanilla_counted["flops_whole_prefill"]
        gathers = replayed_gather_seconds(tokens, batch, shape.hidden, dtype, device)
        method_runs = runs[name]
        ideal = 1 / formula["swiglu"].flops_ratio
        # Amdahl: a prefill at exactly its whole-prefill FLOPs share of vanilla's time, plus the decoding time the
        # method was measured to take. Decoding shrinks little: at small batch a step reads every weight once, and
        # pruning only shortens the KV cache it also reads.
        decode = statistics.median(r["total"] - r["prefill"] for r in method_runs)
        achievable_total = vanilla_total / (vanilla_prefill * whole_ratio + decode)
        cuda_peaks = [r["cuda_peak_bytes"] for r in method_runs if "cuda_peak_bytes" in r]
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
            "prefill_s": spread([r["prefill"] for r in method_runs]),
            "total_s": spread([r["total"] for r in method_runs]),
            "decode_s": decode,
            "prefill_speedup": spread([v["prefill"] / r["prefill"] for v, r in zip(vanilla_runs, method_runs)]),
            "total_speedup": spread([v["total"] / r["total"] for v, r in zip(vanilla_runs, method_runs)]),
            "overhead_s": spread([r["overhead"] for r in method_runs]),
            "overhead_s_by_function": {
                function: statistics.median(r[f"overhead_{function}"] for r in method_runs)
                for function in PruningOverheadTimer.WRAPPED
            },
            "replayed_gather_s": gathers,
            "overhead_share": spread([(r["overhead"] + gathers) / r["prefill"] for r in method_runs]),
            "achievable_prefill_speedup": 1 / whole_ratio,
            "achievable_total_speedup": achievable_total,
            "cuda_peak_bytes": spread(cuda_peaks) if cuda_peaks else None,
            "raw": method_runs,
        }
        # how much of the FLOPs bound the prefill reaches: speed-up / (1 / FLOPs ratio)
        rows[name]["prefill_efficiency"] = rows[name]["prefill_speedup"]["median"] / ideal
    return rows


# ----------------------------------------------------------------------------------------------------------------
# Goals and reports


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's goals, at the reference setting for every batch size: what was asked, what was measured."""
    checks = []

    def check(goal: str, passed: bool, value: str) -> None:
        checks.append({"goal": goal, "passed": bool(passed), "value": value})

    new_tokens = results["settings"]["new_tokens"]
    for batch, rows in results["batches"].items():
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
            f"batch {batch}: pruning overhead (scoring + top-k + gathers) < {GOAL_OVERHEAD:.0%} of prefill",
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


def goal_lines(results: dict[str, Any]) -> list[str]:
    if not results["goals"]:
        return [f"no goals checked: the goals are set at the reference setting, {REFERENCE}, which did not run"]
    return [f"{'PASS' if g['passed'] else 'MISS'}  {g['goal']}: {g['value']}" for g in results["goals"]]


def _mib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:.0f}"


def markdown(results: dict[str, Any]) -> str:
    s = results["settings"]
    lines = [
        f"# Cost benchmark: {results['shape']['summary']}",
        "",
        f"{results['device_name']} ({s['device']}), {s['dtype']}, SDPA, torch {results['torch']}, "
        f"torch threads: {results['threads']}; prompt 35 + 576 image + 39 text tokens; {s['new_tokens']} new tokens; "
        f"medians of {s['repeats']} rounds (methods interleaved, order rotated), speed-ups paired within a round; "
        f"run took {results['seconds']:.0f} s.",
        "",
    ]
    for batch, rows in results["batches"].items():
        lines += [
            f"## Batch {batch}",
            "",
            "| method | tokens per layer | 1 / FLOPs ratio | prefill speed-up [min-max] "
            f"| end-to-end speed-up, {s['new_tokens']} tokens [min-max] | pruning overhead "
            "| counted vs formula FLOPs ratio (swiglu / fastv) |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, r in rows.items():
            schedule = "->".join(str(n) for n in dict.fromkeys(r["tokens_per_layer"]))
            lines.append(
                f"| {results['methods'][name]['label']} | {schedule} | {r['inverse_flops_ratio']:.2f}x "
                f"| {r['prefill_speedup']['median']:.2f}x [{r['prefill_speedup']['min']:.2f}-"
                f"{r['prefill_speedup']['max']:.2f}] | {r['total_speedup']['median']:.2f}x "
                f"[{r['total_speedup']['min']:.2f}-{r['total_speedup']['max']:.2f}] "
                f"| {100 * r['overhead_share']['median']:.2f} % | {100 * r['counted_vs_formula']:+.4f} % / "
                f"{100 * r['counted_vs_formula_fastv']:+.2f} % |"
            )
        lines += [
            "",
            "| method | FLOPs ratio: formula fastv / swiglu / counted (decoder layers) / counted whole prefill "
            "| prefill s [min-max] | total s [min-max] | peak live tensors MiB | KV cache MiB | CUDA peak MiB |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, r in rows.items():
            cuda = _mib(r["cuda_peak_bytes"]["max"]) if r["cuda_peak_bytes"] else "n/a"
            lines.append(
                f"| {results['methods'][name]['label']} | {r['flops_ratio_formula_fastv']:.4f} / "
                f"{r['flops_ratio_formula_swiglu']:.4f} / {r['flops_ratio_counted']:.4f} / "
                f"{r['flops_ratio_whole_prefill_counted']:.4f} | {r['prefill_s']['median']:.3f} "
                f"[{r['prefill_s']['min']:.3f}-{r['prefill_s']['max']:.3f}] | {r['total_s']['median']:.3f} "
                f"[{r['total_s']['min']:.3f}-{r['total_s']['max']:.3f}] | {_mib(r['peak_live_tensor_bytes'])} "
                f"| {_mib(r['kv_cache_bytes'])} | {cuda} |"
            )
        vanilla = rows["vanilla"]
        reference = rows.get(REFERENCE)
        if reference:
            split = ", ".join(f"{name} {1e3 * t:.1f} ms" for name, t in reference["overhead_s_by_function"].items())
            gathers, prefill = 1e3 * reference["replayed_gather_s"], 1e3 * reference["prefill_s"]["median"]
            lines += [
                "",
                f"Pruning overhead of {results['methods'][REFERENCE]['label']} per prefill (medians): {split}, "
                f"gathers (replayed) {gathers:.1f} ms, of a {prefill:.0f} ms prefill.",
            ]
        lines += [
            "",
            f"Vanilla prefill: {vanilla['flops_decoder_layers'] / 1e9:.1f} GFLOP counted in the decoder layers "
            f"({100 * vanilla['counted_vs_formula_absolute']:+.4f} % against 2 x batch x the swiglu formula), "
            f"{vanilla['flops_vision'] / 1e9:.2f} GFLOP in the vision tower + projector, "
            f"{vanilla['flops_lm_head'] / 1e9:.2f} GFLOP in lm_head. Attention ops counted in the layers: "
            f"{', '.join(vanilla['attention_ops_counted']) or 'none'}.",
            "",
        ]
    if "reference_style" in results:
        ref = results["reference_style"]
        ours_rows = results["batches"].get("1", {})
        ours = ours_rows.get(REFERENCE)
        ours_text = (
            f". Ours (SDPA, KV cache, pruned once), batch 1, same tokens: vanilla "
            f"{ours_rows['vanilla']['total_s']['median']:.3f} s, HiMAP {ours['total_s']['median']:.3f} s, "
            f"{ours['total_speedup']['median']:.2f}x end-to-end, {ours['prefill_speedup']['median']:.2f}x to the first "
            "token. Without a cache every new token costs a (pruned) prefill, so the reference style's end-to-end "
            "speed-up follows the prefill's, while ours is diluted by decoding steps that pruning barely shortens; "
            "ours is faster in absolute time for every method"
            if ours
            else ""
        )
        v, h = ref["seconds"]["vanilla"]["total"]["median"], ref["seconds"][REFERENCE]["total"]["median"]
        lines += [
            "## Reference style (the authors' way: eager attention, no KV cache, pruned forward redone per token)",
            "",
            f"Batch 1, {ref['new_tokens']} new tokens, {s['reference_repeats']} rounds: vanilla {v:.3f} s, HiMAP "
            f"reference {h:.3f} s; HiMAP end-to-end speed-up {ref['speedup_total']['median']:.2f}x "
            f"[{ref['speedup_total']['min']:.2f}-{ref['speedup_total']['max']:.2f}], first token "
            f"{ref['speedup_first_token']['median']:.2f}x{ours_text}. The paper's A800 latencies give "
            f"0.197 / 0.116 s = 1.70x (7B) and 0.320 / 0.158 s = 2.03x (13B).",
            "",
        ]
    lines += ["## Goals", "", "```", *goal_lines(results), "```", "", NOTES]
    return "\n".join(lines) + "\n"


NOTES = """## Notes

- Timed: *prefill* = time to the first token (vision tower + projector + embeddings + decoder with pruning + norm and
  lm_head at the last position + argmax); it is also the end-to-end time of a one-token answer. *total* adds the
  cached decoding steps. FLOP columns count the decoder layers only, unless marked "whole prefill".
- 1 / FLOPs ratio uses the swiglu formula (the FFN's three matrices), which is what the layers compute; the fastv
  convention's ratio is in the second table. Counted and formula ratios agree exactly here because both count the
  same matrix products (the formula in multiply-accumulates, the counter in 2 FLOPs each, the attention square in
  full, causal or not); they would differ with grouped-query attention (the formula assumes MHA), with padding
  (counted, not in the formula), and never include norms, RoPE, SiLU or the scoring rows (counted outside the layers).
- Prefill speed-ups a little above 1 / FLOPs ratio are within the spread of the rounds; the elementwise work that
  no FLOP count includes (norms, RoPE, SiLU, residual adds) shrinks with the tokens too.
- Achievable speed-ups: to the first token, 1 / (counted whole-prefill FLOPs ratio), since the vision tower,
  embeddings and lm_head do not shrink; end-to-end, Amdahl's law: vanilla's total time over (vanilla's prefill x
  that ratio + the method's measured decoding time). Decoding shrinks little (at small batch each step reads all
  weights; pruning only shortens the KV cache), so 2x end-to-end with several new tokens needs the decoding share
  of vanilla's time to stay small, whatever the prefill speed-up; with a one-token answer it is the prefill's.
- Memory: "peak live tensors" is the largest total of tensors created during the run and alive at once (prefill and
  decoding, weights excluded, kernel-internal scratch not seen), tracked by a dispatch mode; "CUDA peak" is the
  allocator's peak above what was allocated before the run. CPU RSS is not used (a process-wide high-water mark).
- Pruning overhead: time inside score_image_tokens + select_top + _compact_order (wrapped, synchronised) plus the
  compaction gathers replayed on same-shaped tensors, over the prefill time of the same run.
"""


def plot(results: dict[str, Any], path: Path) -> None:
    """Speed-up against 1 / FLOPs ratio per method: prefill and end-to-end per batch size, ideal line y = x."""
    figure, axis = plt.subplots(figsize=(8, 5.5), dpi=130)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    limit = 1.0
    for index, (batch, rows) in enumerate(results["batches"].items()):
        colour = colours[index % len(colours)]
        x = [r["inverse_flops_ratio"] for r in rows.values()]
        limit = max(limit, *x)
        prefill = [r["prefill_speedup"]["median"] for r in rows.values()]
        errors = [
            [r["prefill_speedup"]["median"] - r["prefill_speedup"]["min"] for r in rows.values()],
            [r["prefill_speedup"]["max"] - r["prefill_speedup"]["median"] for r in rows.values()],
        ]
        axis.errorbar(x, prefill, yerr=errors, fmt="o", color=colour, capsize=3, label=f"prefill, batch {batch}")
        axis.scatter(
            x,
            [r["total_speedup"]["median"] for r in rows.values()],
            marker="^",
            color=colour,
            facecolors="none",
            label=f"end-to-end, {results['settings']['new_tokens']} tokens, batch {batch}",
        )
        if index == 0:
            for name, r in rows.items():
                axis.annotate(
                    results["methods"][name]["label"].replace(" (reference)", ""),
                    (r["inverse_flops_ratio"], r["prefill_speedup"]["median"]),
                    textcoords="offset points",
                    xytext=(-6, 8),
                    ha="right",
                    fontsize=8,
                )
    if "reference_style" in results and REFERENCE in results["batches"].get("1", {}):
        ref = results["reference_style"]
        axis.scatter(
            [results["batches"]["1"][REFERENCE]["inverse_flops_ratio"]],
            [ref["speedup_total"]["median"]],
            marker="*",
            s=160,
            color="black",
            label="HiMAP end-to-end, reference style (eager, no cache)",
        )
    limit *= 1.08
    top = max(limit, *(r["prefill_speedup"]["max"] for rows in results["batches"].values() for r in rows.values()))
    axis.plot([1, limit], [1, limit], "k--", linewidth=1, label="ideal: speed-up = 1 / FLOPs ratio")
    axis.plot([1, limit], [GOAL_PREFILL_EFFICIENCY, GOAL_PREFILL_EFFICIENCY * limit], "k:", linewidth=1,
              label=f"goal: {GOAL_PREFILL_EFFICIENCY} x ideal")  # fmt: skip
    axis.set_xlim(0.8, limit)
    axis.set_ylim(0.8, top * 1.05)
    axis.set_xlabel("1 / FLOPs ratio (swiglu formula, decoder layers)")
    axis.set_ylabel("speed-up over vanilla (median of rounds)")
    s = results["settings"]
    axis.set_title(f"{s['shape']} shape, {results['device_name']} ({s['device']}), {s['dtype']}", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7.5, loc="upper left")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def write_outputs(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "bench.md").write_text(markdown(results))
    plot(results, out / "bench.png")


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo where there is one (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def device_slug(device: str) -> str:
    """``cpu``, or the GPU's name in lower case with dashes (``nvidia-h100-80gb-hbm3``)."""
    if not device.startswith("cuda"):
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(torch.device(device)).lower()).strip("-")


def parse_args(argv: list[str] | None) -> tuple[BenchSettings, Path | None]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="scaled")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--batch-sizes", default=None, help="comma-separated; default 1,2 on the CPU, 1,8 on CUDA")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (each runs every method once)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed plain rounds after the counting pass")
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {', '.join(METHODS)}")
    parser.add_argument("--reference-style", action="store_true", help="also time the authors' way (see above)")
    parser.add_argument("--reference-repeats", type=int, default=3)
    # One thread by default on the CPU: on this project's 2 cores shared with other jobs, 2 threads made the scaled
    # shape's prefill 5x slower (10.5 s against 2.0 s; a decoding step 20x), each op's threads waiting at its
    # barrier for the one whose core another job holds. On a dedicated machine, pass --threads <cores>.
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads; default 1 on the CPU, torch's on CUDA"
    )
    parser.add_argument("--out", type=Path, default=None, help="default results/bench/<shape>-<device>/")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    settings = BenchSettings(
        shape=args.shape,
        device=args.device,
        dtype=args.dtype,
        batch_sizes=tuple(int(b) for b in (args.batch_sizes or ("1,8" if cuda else "1,2")).split(",")),
        repeats=args.repeats,
        warmup=args.warmup,
        new_tokens=args.new_tokens,
        reference_style=args.reference_style,
        reference_repeats=args.reference_repeats,
        threads=args.threads if args.threads is not None else (None if cuda else 1),
        methods=tuple(args.methods.split(",")),
    )
    unknown = set(settings.methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}: choose from {', '.join(METHODS)}")
    return settings, args.out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    settings, out = parse_args(argv)
    results = run_benchmark(settings)
    out = out or REPO / "results" / "bench" / f"{settings.shape}-{device_slug(settings.device)}"
    write_outputs(results, out)
    print(markdown(results))
    print(f"written to {out}")
    return results


if __name__ == "__main__":
    main()
