"""The benchmark's schedule: one model, every method on the same inputs, methods interleaved in rounds.

For each batch size: one counting pass per method (untimed; it also warms the kernels up), ``warmup`` untimed
rounds, then ``repeats`` rounds in which every method runs once timed and once profiled (a prefill), in an order
rotated from round to round, so that machine noise hits all methods alike and speed-ups can be paired within a
round. A method's equal-FLOPs FastV partner runs right after it in every round.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from transformers import LlavaForConditionalGeneration

from himap_lmms.bench.goals import check_goals, goal_set_for
from himap_lmms.bench.measure import count_prefill, pruning_overhead, reference_style_run, timed_run
from himap_lmms.bench.settings import (
    PAIR_PREFIX,
    REFERENCE,
    BenchSettings,
    Method,
    bench_methods,
    wants_fastv_partner,
)
from himap_lmms.bench.summary import equal_flops_pair, spread, summarise_batch
from himap_lmms.model_shapes import LLAVA_SHAPES, LlavaShape, build_random_llava, prompt_inputs


def run_benchmark(settings: BenchSettings) -> dict[str, Any]:
    """Build the model once and measure every method; torch's thread count is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads or threads)
    try:
        return _run_benchmark(settings)
    finally:
        torch.set_num_threads(threads)


def _run_benchmark(settings: BenchSettings) -> dict[str, Any]:
    shape = LLAVA_SHAPES[settings.shape]
    device = torch.device(settings.device)
    dtype = getattr(torch, settings.dtype)
    started = time.perf_counter()
    model = build_random_llava(shape, dtype, device, "sdpa")
    methods = bench_methods(settings.methods, shape, settings.fastv_pairs, settings.preset_files)
    names = list(methods)
    runs_per_batch = len(names) * (1 + settings.warmup + settings.repeats)
    reference_runs = 2 * (settings.reference_repeats + 1) if settings.reference_style else 0
    bar = tqdm(total=runs_per_batch * len(settings.batch_sizes) + reference_runs, disable=not settings.progress)

    results: dict[str, Any] = {
        "settings": vars(settings) | {"batch_sizes": list(settings.batch_sizes), "methods": list(settings.methods)},
        "shape": vars(shape) | {"num_image_tokens": shape.num_image_tokens, "summary": shape.describe()},
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "methods": {
            name: {"label": m.label, "config": m.config.describe(), "paired_with": m.paired_with}
            for name, m in methods.items()
        },
        "batches": {},
    }
    if settings.fastv_pairs:  # methods FastV from K=2 cannot match: the report names them
        results["unpaired"] = [
            name
            for name in settings.methods
            if wants_fastv_partner(methods[name].config) and PAIR_PREFIX + name not in methods
        ]
    for batch in settings.batch_sizes:
        inputs = prompt_inputs(shape, batch, device, dtype)
        counted = {}
        for name in names:
            bar.set_description(f"batch {batch} counting {name}")
            counted[name] = count_prefill(model, shape, inputs, methods[name].config)
            bar.update()
        timed: dict[str, list[dict[str, float]]] = {name: [] for name in names}
        profiled: dict[str, list[dict[str, float]]] = {name: [] for name in names}
        for round_index in range(settings.warmup + settings.repeats):
            warm = round_index < settings.warmup
            for name in rotated(names, round_index):
                label = "warm-up" if warm else f"round {round_index - settings.warmup + 1}"
                bar.set_description(f"batch {batch} {label} {name}")
                config = methods[name].config
                run = timed_run(model, inputs, config, settings.new_tokens)
                if not warm:
                    timed[name].append(run)
                    profiled[name].append(pruning_overhead(model, inputs, config))
                bar.update()
        pairs = {m.paired_with: name for name, m in methods.items() if m.paired_with}
        results["batches"][str(batch)] = summarise_batch(shape, batch, counted, timed, profiled, pairs)

    if settings.reference_style:
        results["reference_style"] = run_reference_style(model, shape, settings, methods, bar)
    bar.close()
    results["seconds"] = time.perf_counter() - started
    results["goal_set"] = goal_set_for(settings.device).name
    results["goals"] = check_goals(results, goal_set_for(settings.device))
    return results


def reassess(results: dict[str, Any]) -> dict[str, Any]:
    """``results`` (a ``bench.json``) with its equal-FLOPs comparisons and goals recomputed from the rounds it
    recorded, by this version's rules; no measurement changes. A run made before a rule changed is read again
    rather than rerun (and a rerun on a noisier day would not measure the same thing)."""
    batches = {
        batch: {
            name: row | {"vs_equal_flops_fastv": equal_flops_pair(rows, name, row["vs_equal_flops_fastv"]["partner"])}
            if "vs_equal_flops_fastv" in row
            else row
            for name, row in rows.items()
        }
        for batch, rows in results["batches"].items()
    }
    goal_set = goal_set_for(results["settings"]["device"])
    reassessed = results | {"batches": batches, "goal_set": goal_set.name}
    return reassessed | {"goals": check_goals(reassessed, goal_set)}


def run_reference_style(
    model: LlavaForConditionalGeneration,
    shape: LlavaShape,
    settings: BenchSettings,
    methods: dict[str, Method],
    bar: tqdm,
) -> dict[str, Any]:
    """Vanilla and the reference HiMAP at batch 1 the authors' way; the model goes back to SDPA after."""
    inputs = prompt_inputs(shape, 1, torch.device(settings.device), getattr(torch, settings.dtype))
    names = ["vanilla", REFERENCE]
    model.set_attn_implementation("eager")  # same weights, no copy: every attention module reads the config per call
    try:
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
        for round_index in range(settings.reference_repeats + 1):
            for name in rotated(names, round_index):
                bar.set_description(f"reference style {'warm-up' if round_index == 0 else round_index} {name}")
                # The warm-up makes one token only: that runs eager attention on the prompt's shapes, at a fraction
                # of the cost of a whole no-cache generation.
                tokens = 1 if round_index == 0 else settings.new_tokens
                result = reference_style_run(model, inputs, methods[name].config, tokens)
                if round_index:
                    times[name].append(result)
                bar.update()
    finally:
        model.set_attn_implementation("sdpa")
    pairs = list(zip(times["vanilla"], times[REFERENCE]))
    return {
        "batch": 1,
        "new_tokens": settings.new_tokens,
        "seconds": {
            name: {"first_token": spread([f for f, _ in values]), "total": spread([t for _, t in values])}
            for name, values in times.items()
        },
        "speedup_first_token": spread([v[0] / h[0] for v, h in pairs]),
        "speedup_total": spread([v[1] / h[1] for v, h in pairs]),
    }


def rotated(names: list[str], round_index: int) -> list[str]:
    """The methods in a different order every round, so none is always the one that runs after vanilla."""
    shift = round_index % len(names)
    return names[shift:] + names[:shift]


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo where there is one (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"
