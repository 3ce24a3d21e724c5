"""The FLOPs formula against what torch counts, with and without grouped-query attention."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

from himap_lmms.cost import kv_hidden_of, layer_flops, prefill_cost

QWEN2_5_VL_7B = {"hidden": 3584, "heads": 28, "kv_heads": 4, "intermediate": 18944}


def counted_layer_flops(config: LlamaConfig, tokens: int) -> int:
    """What ``torch.utils.flop_counter`` counts for one eager decoder layer's forward over ``tokens`` tokens."""
    layer = LlamaDecoderLayer(config, layer_idx=0).eval()
    hidden = torch.randn(1, tokens, config.hidden_size)
    positions = torch.arange(tokens)[None]
    embeddings = LlamaRotaryEmbedding(config)(hidden, positions)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        layer(hidden, position_embeddings=embeddings, position_ids=positions, attention_mask=None)
    return counter.get_total_flops()


@pytest.mark.parametrize("kv_heads", [8, 2, 1])
@pytest.mark.parametrize("tokens", [7, 33])
def test_swiglu_formula_is_half_of_the_counted_flops(kv_heads: int, tokens: int) -> None:
    """torch counts two FLOPs per multiply-accumulate; the formula counts one, for every key-value width."""
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=160,
        num_attention_heads=8,
        num_key_value_heads=kv_heads,
        attn_implementation="eager",  # attention as two matmuls the counter sees
    )
    kv_hidden = kv_hidden_of(config)
    assert kv_hidden == kv_heads * 8
    formula = layer_flops(tokens, 64, 160, "swiglu", kv_hidden=kv_hidden)
    assert counted_layer_flops(config, tokens) == 2 * formula


def test_grouped_query_attention_shrinks_only_the_key_value_projections() -> None:
    n = 1000
    d, heads, kv_heads, m = (QWEN2_5_VL_7B[k] for k in ("hidden", "heads", "kv_heads", "intermediate"))
    d_kv = kv_heads * d // heads  # 512 at Qwen2.5-VL-7B
    full, grouped = layer_flops(n, d, m, "fastv"), layer_flops(n, d, m, "fastv", kv_hidden=d_kv)
    assert full - grouped == 2 * n * d * (d - d_kv)
    assert layer_flops(n, d, m, "fastv", kv_hidden=d) == full  # LLaMA-1/2: the published convention unchanged


def test_ratios_follow_the_key_value_width() -> None:
    """Narrower key-value projections make the quadratic attention term a larger share of a layer, and it shrinks
    fastest under pruning: the same schedule costs a smaller share of a GQA decoder's prefill than of an MHA one."""
    counts = [700] * 2 + [300] * 26
    d, m = QWEN2_5_VL_7B["hidden"], QWEN2_5_VL_7B["intermediate"]
    grouped, full = prefill_cost(counts, d, m, kv_hidden=512), prefill_cost(counts, d, m)
    assert grouped.flops < full.flops and grouped.flops_ratio < full.flops_ratio
    assert prefill_cost(counts, d, m, kv_hidden=d).flops_ratio == full.flops_ratio


def test_a_key_value_width_beyond_the_hidden_size_is_refused() -> None:
    with pytest.raises(ValueError, match="kv_hidden=128 must be in"):
        layer_flops(10, 64, 160, kv_hidden=128)
