"""Prefill FLOPs of a decoder whose sequence shrinks from layer to layer.

Per layer with ``n`` tokens, hidden size ``d`` and FFN width ``m`` (``docs/method.md``, "Cost accounting"):

- ``fastv`` convention, used by FastV and the papers that follow it: ``4nd^2 + 2n^2d + 2ndm``;
- ``swiglu``, what a LLaMA layer really computes with its three FFN matrices: ``4nd^2 + 2n^2d + 3ndm``.

With grouped-query attention (Qwen2 and Qwen2.5 decoders, Llama 3) the key and value projections are narrower:
``d_kv`` = key-value heads x head size, and the ``4nd^2`` term becomes ``2nd^2 + 2nd*d_kv`` (queries and output
stay ``d`` wide, and every query head still attends over all ``n`` tokens, so ``2n^2d`` is unchanged).

The ratio of a pruned prefill to the same example unpruned is ``sum_l cost(n_l) / (L * cost(n_0))``, with the
example's real token counts (padding excluded) and ``n_0`` its whole prompt (which differs from the first
layer's count only when a method prunes before layer 0). The counts are multiply-accumulates times two only in the
sense both conventions share; the ratio is what is compared, and it does not depend on that factor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Convention = Literal["fastv", "swiglu"]
CONVENTIONS: tuple[Convention, ...] = ("fastv", "swiglu")


def layer_flops(
    tokens: int,
    hidden: int,
    intermediate: int,
    convention: Convention = "fastv",
    kv_hidden: int | None = None,
) -> float:
    """FLOPs of one decoder layer over ``tokens`` tokens, by ``convention``; ``kv_hidden`` is the width of the key
    and value projections (``hidden`` when every head has its own keys and values, as in LLaMA-1/2)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention={convention!r} is not known: choose one of {', '.join(CONVENTIONS)}")
    if kv_hidden is not None and not 0 < kv_hidden <= hidden:
        raise ValueError(f"kv_hidden={kv_hidden} must be in (0, hidden={hidden}]")
    ffn_matrices = 2 if convention == "fastv" else 3
    n, d, m = float(tokens), float(hidden), float(intermediate)
    d_kv = d if kv_hidden is None else float(kv_hidden)
    return 2 * n * d * d + 2 * n * d * d_kv + 2 * n * n * d + ffn_matrices * n * d * m


def kv_hidden_of(text_config) -> int:
    """Width of a decoder's key and value projections from its config: key-value heads x head size."""
    heads = text_config.num_attention_heads
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
    return int(getattr(text_config, "num_key_value_heads", None) or heads) * int(head_dim)


@dataclass(frozen=True)
class PrefillCost:
    """Cost of one example's prefill: FLOPs by the formula and their share of the unpruned prefill."""

    tokens_per_layer: tuple[int, ...]
    flops: float
    flops_ratio: float
    convention: Convention


def prefill_cost(
    tokens_per_layer: Sequence[int],
    hidden: int,
    intermediate: int,
    convention: Convention = "fastv",
    prompt_tokens: int | None = None,
    kv_hidden: int | None = None,
) -> PrefillCost:
    """Cost of a prefill whose layer ``l`` saw ``tokens_per_layer[l]`` tokens, against the unpruned prompt.

    ``prompt_tokens`` defaults to the first layer's count, which is the prompt unless it was pruned before
    layer 0. ``kv_hidden`` as in :func:`layer_flops`.
    """
    counts = tuple(int(n) for n in tokens_per_layer)
    if not counts:
        raise ValueError("tokens_per_layer is empty: a prefill has at least one layer")
    flops = sum(layer_flops(n, hidden, intermediate, convention, kv_hidden) for n in counts)
    prompt = counts[0] if prompt_tokens is None else int(prompt_tokens)
    unpruned = len(counts) * layer_flops(prompt, hidden, intermediate, convention, kv_hidden)
    return PrefillCost(counts, flops, flops / unpruned, convention)


def metric_name(quantity: str, task: str | None = None) -> str:
    """Name under which the adapter logs a cost ``quantity`` (``flops_ratio``, ``latency_s``), per task or run-wide.

    lmms-eval's metric log averages every logged name into the results' ``throughput`` block as
    ``avg_<name>``: :func:`throughput_key` is what readers look up.
    """
    return quantity if task is None else f"{quantity}:{task}"


def throughput_key(quantity: str, task: str | None = None) -> str:
    """Key of a logged cost in the results JSON's ``throughput`` block."""
    return f"avg_{metric_name(quantity, task)}"
