"""One method's runs in the cost benchmark, each through :meth:`PrunedLlava.generate`, and their instruments.

- :func:`count_prefill`: FLOPs (``torch.utils.flop_counter``), peak live tensors and KV cache of one prefill.
- :func:`timed_run`: a plain generation, timed by the engine (time to first token, total) and, on CUDA, its
  allocator peak.
- :func:`pruning_overhead`: a prefill under ``torch.profiler``, read back at the engine's pruning labels.
- :func:`reference_style_run`: the authors' way, a whole pruned prefill for every new token, no cache.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd import DeviceType
from torch.multiprocessing.reductions import StorageWeakRef
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count
from transformers import LlavaForConditionalGeneration

from himap_lmms.compat import cached_keys_values, language_model_of, projector_of, vision_tower_of
from himap_lmms.model_shapes import LlavaShape
from himap_lmms.pruning import PRUNING_LABELS, PrunedLlava, PruningConfig

Inputs = dict[str, torch.Tensor]


def _cpu_flash_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# torch's FLOP table has the CUDA SDPA kernels but not the CPU one: without this the n^2 term would be missing.
EXTRA_FLOP_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_attention_flops}


def _is_tensor(value: object) -> bool:
    return isinstance(value, torch.Tensor)


class LiveTensorMemory(TorchDispatchMode):
    """Peak bytes of the tensors created while active and still alive, on any device.

    The CPU has no allocator statistics, and the process's max RSS is a high-water mark that a method run after
    vanilla can never raise. So every op's outputs are recorded by storage (views and in-place results share one,
    counted once); before each op, storages that Python has freed since are dropped. Tensors that existed before
    (weights, inputs) are not counted, nor are views of them (``weight.t()`` inside a linear layer shares the
    weight's storage): an output whose storage is one of the op's inputs' and is not already tracked was not
    allocated by the run. Scratch buffers inside a kernel are not seen.
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


def count_prefill(
    model: LlavaForConditionalGeneration, shape: LlavaShape, inputs: Inputs, config: PruningConfig
) -> dict[str, Any]:
    """FLOPs by part of one prefill (a one-token generation), its token counts, peak live tensors and KV cache.

    The counter counts 2 FLOPs per multiply-accumulate of every matrix product and SDPA call, the attention
    square in full; FLOPs of the decoder layers are those counted inside the model's decoder-layer class.
    """
    # Built outside the instruments: its construction check runs a token through the first decoder layer.
    engine = PrunedLlava(model, config)
    counter = FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS)
    with LiveTensorMemory() as memory, counter:
        out = engine.generate(**inputs, max_new_tokens=1, return_cache=True)
    counts = counter.get_flop_counts()
    layer_class = type(language_model_of(model).layers[0]).__name__
    if layer_class not in counts:
        raise RuntimeError(f"FlopCounterMode saw no {layer_class}: its module names are {sorted(counts)}")
    tokens = out.stats.tokens_per_layer
    if not bool((tokens == tokens[0]).all()):
        raise RuntimeError("samples of the batch kept different token counts: the FLOP comparison assumes equal ones")

    def total(key: str) -> float:
        return float(sum(counts.get(key, {}).values()))

    vision_parts = (type(vision_tower_of(model)).__name__, type(projector_of(model)).__name__)
    return {
        "tokens_per_layer": tokens[0].tolist(),
        "flops_decoder_layers": total(layer_class),
        "flops_vision": sum(total(part) for part in vision_parts),
        "flops_lm_head": 2.0 * tokens.shape[0] * shape.hidden * shape.vocab,
        "flops_whole_prefill": total("Global"),
        "attention_ops_counted": [str(op) for op in counts[layer_class] if "attention" in str(op) or "bmm" in str(op)],
        "peak_live_tensor_bytes": memory.peak,
        "kv_cache_bytes": sum(keys.nbytes + values.nbytes for keys, values in cached_keys_values(out.cache)),
    }


def timed_run(
    model: LlavaForConditionalGeneration, inputs: Inputs, config: PruningConfig, new_tokens: int
) -> dict[str, float]:
    """One greedy generation timed by the engine (GPU-synchronised) and, on CUDA, its allocator peak."""
    device = inputs["input_ids"].device
    engine = PrunedLlava(model, config)  # its construction check stays out of the allocator peak
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        resident = torch.cuda.memory_allocated(device)
    out = engine.generate(**inputs, max_new_tokens=new_tokens)
    result = {"prefill": out.prefill_seconds, "total": out.total_seconds}
    if device.type == "cuda":
        result["cuda_peak_bytes"] = torch.cuda.max_memory_allocated(device) - resident
    return result


def pruning_overhead(model: LlavaForConditionalGeneration, inputs: Inputs, config: PruningConfig) -> dict[str, float]:
    """Seconds under each of the engine's pruning labels in one profiled prefill, and that prefill's seconds.

    On the CPU a label's time is the CPU time of its range; on CUDA it is the GPU time of the kernels launched in
    it (the range's CPU time there would include waiting for the layers queued before it). The profiler slows
    every op a little, so the share is taken against the prefill of the same profiled run.
    """
    device = inputs["input_ids"].device
    on_cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if on_cuda else [ProfilerActivity.CPU]
    engine = PrunedLlava(model, config)  # its construction check stays out of the profiled prefill
    with profile(activities=activities) as profiler:
        out = engine.generate(**inputs, max_new_tokens=1)
    seconds = dict.fromkeys(PRUNING_LABELS, 0.0)
    for event in profiler.events():
        if event.name in seconds and event.device_type == DeviceType.CPU:
            seconds[event.name] += 1e-6 * (event.device_time_total if on_cuda else event.cpu_time_total)
    if config.steps and not all(seconds.values()):
        raise RuntimeError(f"the profiler saw no time under some of the engine's labels {PRUNING_LABELS}: {seconds}")
    return seconds | {"prefill": out.prefill_seconds}


def reference_style_run(
    model: LlavaForConditionalGeneration, inputs: Inputs, config: PruningConfig, new_tokens: int
) -> tuple[float, float]:
    """The authors' loop: no cache, the whole pruned forward on prompt + answer so far for every new token.

    Returns (seconds to the first token, seconds for all ``new_tokens``), as the engine timed each prefill.
    """
    engine = PrunedLlava(model, config)  # built after any switch to eager: it reads the kernel on construction
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    seconds = []
    for _ in range(new_tokens):
        out = engine.generate(ids, mask, inputs["pixel_values"], max_new_tokens=1)
        seconds.append(out.total_seconds)
        ids, mask = torch.cat([ids, out.sequences], dim=1), torch.cat([mask, torch.ones_like(out.sequences)], dim=1)
    return seconds[0], sum(seconds)
