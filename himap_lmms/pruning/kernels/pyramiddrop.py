"""PyramidDrop's ranking as its authors' code computes it (Xing et al., arXiv 2410.17247; ``pdrop_rank_drop`` in
``llava/model/modeling_llama_pdrop.py`` of Cooperx521/PyramidDrop).

After layer ``K - 1`` has run, the stage that starts at layer ``K`` ranks the image tokens by the attention the
last prompt position pays them, computed with layer ``K``'s own input norm and query/key projections on layer
``K - 1``'s output, at the sequence's current position ids (rotary embedding), causally masked: the attention
layer ``K`` would compute if nothing were dropped. The probabilities are taken in float32 and rounded back to the
model's dtype before the heads are averaged, as there.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

from himap_lmms.compat import per_token_rotary
from himap_lmms.pruning.registry import ScoreContext


def next_layer_last_token_rule(context: ScoreContext) -> torch.Tensor:
    """The rule of ``next_layer_last_token`` (``variant=authors``), read with layer ``layer``'s own projections."""
    c = context
    return next_layer_last_token_scores(c.language_model.layers[c.layer], c.hidden, c.position_embeddings, c.valid)


def next_layer_last_token_scores(
    layer: nn.Module,
    hidden: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    valid: torch.Tensor,
) -> torch.Tensor:
    """``(batch, n)`` head-averaged attention of the last position to every position, in decoder ``layer``.

    Args:
        layer: the Llama-style decoder layer about to run (``input_layernorm``, ``self_attn``).
        hidden: ``(batch, n, hidden)`` its input (the previous layer's output).
        position_embeddings: the ``(cos, sin)`` of the sequence's current position ids.
        valid: ``(batch, n)``, False on padding (which the last position may not attend to).
    """
    attn = layer.self_attn
    batch, n, _ = hidden.shape
    device = attn.q_proj.weight.device  # under device_map="auto" the layer's own GPU
    normed = layer.input_layernorm(hidden.to(device))
    query = attn.q_proj(normed[:, -1:]).view(batch, 1, -1, attn.head_dim).transpose(1, 2)
    keys = attn.k_proj(normed).view(batch, n, -1, attn.head_dim).transpose(1, 2)
    cos, sin = (t.to(device) for t in per_token_rotary(position_embeddings, attn))
    query, _ = apply_rotary_pos_emb(query, query, cos[:, -1:], sin[:, -1:])
    _, keys = apply_rotary_pos_emb(keys, keys, cos, sin)
    keys = repeat_kv(keys, attn.num_key_value_groups)
    logits = torch.matmul(query, keys.transpose(2, 3)) / math.sqrt(attn.head_dim)
    padding = ~valid.to(device)[:, None, None, :]
    logits = logits.masked_fill(padding, torch.finfo(logits.dtype).min)
    probs = nn.functional.softmax(logits, dim=-1, dtype=torch.float32).to(query.dtype)
    return probs.mean(dim=1)[:, 0].to(valid.device)
