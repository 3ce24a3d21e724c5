"""Image-token scores read from a few rows of one layer's attention.

The decoder layers run with the model's own attention kernel (SDPA by default), which never materialises
the attention probabilities. A score only needs some rows of them at one layer: the text rows for HiMAP's
shallow step, the image rows for its deep step, the last prompt row for FastV. So after that layer has run,
:func:`attention_rows` recomputes just those rows: the queries of the chosen positions from the layer's
input, and the keys the layer has just written to the KV cache. That is ``rows x n`` work instead of
``n x n``, and no change to any layer's kernel.

The rows are taken a block at a time and reduced to the per-key score at once, so the probabilities held at
any moment are ``batch x heads x head_dim x n`` floats: the size of one layer's hidden states, whatever the
prompt's length. A 12k-token prompt whose text rows were all taken together would need gigabytes here.

The ``*_rule`` functions are the scoring rules the method specs name (:class:`~himap_lmms.pruning.registry.
ScoreContext` in, scores out): HiMAP's and FastV's attention scores and the content-blind baselines' positions.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

from himap_lmms.compat import per_token_rotary
from himap_lmms.pruning.registry import ScoreContext

# The profiler labels of a pruning step's three parts, in the engine's loop (and, for the score, VisionZip's
# selection in the vision tower), which the cost benchmark reads back as the pruning's overhead.
SCORE_LABEL = "himap_lmms.pruning.score"  # the budget and the image tokens' scores
TOP_K_LABEL = "himap_lmms.pruning.top_k"  # which image tokens each sample keeps
COMPACT_LABEL = "himap_lmms.pruning.compact"  # the gathers that shorten the sequence to the kept tokens
PRUNING_LABELS = (SCORE_LABEL, TOP_K_LABEL, COMPACT_LABEL)


def attention_rows(
    layer: nn.Module,
    layer_input: torch.Tensor,
    rows: torch.Tensor,
    keys: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    valid: torch.Tensor,
) -> torch.Tensor:
    """Head-averaged attention probabilities of query positions ``rows`` in decoder layer ``layer``.

    Args:
        layer: a Llama-style decoder layer (``input_layernorm``, ``self_attn.q_proj``).
        layer_input: ``(batch, n, hidden)``, the hidden states that entered the layer.
        rows: ``(r,)`` query positions (shared by the batch; pick a superset and weight rows later).
        keys: ``(batch, kv_heads, n, head_dim)``, the layer's post-RoPE keys (from its KV cache).
        position_embeddings: the ``(cos, sin)`` the layer ran with, each ``(batch, n, head_dim)``.
        valid: ``(batch, n)``, False on padding.

    Returns:
        ``(batch, r, n)`` float32 probabilities with the causal and padding masks applied, on the layer's
        device (with ``device_map="auto"`` the layer may sit on another GPU than the loop's tensors).
    """
    attn = layer.self_attn
    batch = layer_input.shape[0]
    device = keys.device  # no-op on one device; under device_map="auto" the layer's own GPU
    rows, valid, layer_input = rows.to(device), valid.to(device), layer_input.to(device)
    hidden = layer.input_layernorm(layer_input[:, rows])
    query = attn.q_proj(hidden).view(batch, rows.numel(), -1, attn.head_dim).transpose(1, 2)
    cos, sin = (t.to(device)[:, rows] for t in per_token_rotary(position_embeddings, attn))
    query, _ = apply_rotary_pos_emb(query, query, cos, sin)
    keys = repeat_kv(keys, attn.num_key_value_groups)
    logits = torch.matmul(query.float(), keys.float().transpose(-1, -2)) * attn.scaling
    columns = torch.arange(keys.shape[-2], device=keys.device)
    allowed = (columns[None, :] <= rows[:, None])[None] & valid[:, None, :]
    logits = logits.masked_fill(~allowed[:, None], torch.finfo(logits.dtype).min)
    return logits.softmax(dim=-1).mean(dim=1)


def attention_rule(context: ScoreContext) -> torch.Tensor:
    """The rule of ``instruction``, ``visual`` and ``last_token``: :func:`score_image_tokens` of layer
    ``layer - 1``'s attention, recomputed from its input and the keys it cached."""
    c = context
    previous = c.language_model.layers[c.layer - 1]
    keys = c.keys(c.layer - 1)
    return score_image_tokens(
        c.step.score, previous, c.layer_input, keys, c.position_embeddings, c.valid, c.is_image, c.is_text
    )


def score_image_tokens(
    kind: str,
    layer: nn.Module,
    layer_input: torch.Tensor,
    keys: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    valid: torch.Tensor,
    is_image: torch.Tensor,
    is_text: torch.Tensor,
) -> torch.Tensor:
    """``(batch, n)`` score of every key position; only the image positions' scores are used.

    - ``instruction`` (HiMAP shallow, phi_sh): attention each token receives from the text rows.
    - ``visual`` (HiMAP deep, phi_dp): attention each token receives from the image rows.
    - ``last_token`` (FastV): attention each token receives from the last prompt position.
    """
    n = valid.shape[1]
    if kind == "last_token":
        rows = torch.tensor([n - 1], device=valid.device)
        row_weight = valid[:, rows]
    else:
        group = is_text if kind == "instruction" else is_image
        present = group.any(dim=0).nonzero().flatten()
        if present.numel() == 0:
            return torch.zeros(valid.shape, dtype=torch.float32, device=valid.device)
        rows = torch.arange(int(present[0]), int(present[-1]) + 1, device=valid.device)
        row_weight = group[:, rows]
    scores = torch.zeros(valid.shape, dtype=torch.float32, device=valid.device)
    block = row_block_size(layer)
    for start in range(0, rows.numel(), block):
        chunk = slice(start, start + block)
        probs = attention_rows(layer, layer_input, rows[chunk], keys, position_embeddings, valid).to(valid.device)
        scores += torch.einsum("br,brn->bn", row_weight[:, chunk].float(), probs)
    return scores


def row_block_size(layer: nn.Module) -> int:
    """Query rows scored at a time: ``head_dim``, so that ``heads x rows`` probabilities per key equal the
    hidden size and the block costs what the layer's own hidden states cost."""
    return layer.self_attn.head_dim


def random_rule(context: ScoreContext) -> torch.Tensor:
    """``random``'s rule: seeded values (:func:`positional_scores`)."""
    return positional_scores("random", context.is_image, context.budget, context.step.seed)


def uniform_rule(context: ScoreContext) -> torch.Tensor:
    """``input``'s rule: evenly spaced image tokens (:func:`positional_scores`)."""
    return positional_scores("uniform", context.is_image, context.budget, seed=0)


def positional_scores(kind: str, is_image: torch.Tensor, budget: torch.Tensor, seed: int) -> torch.Tensor:
    """Scores that ignore the content, for the ``random`` and ``uniform`` baselines.

    Each sample is scored over its own image tokens, in order, so a sample gets the same choice alone or in
    a batch: ``random`` draws one seeded value per image token; ``uniform`` marks ``budget`` evenly spaced ones.
    """
    scores = torch.zeros(is_image.shape, dtype=torch.float32)
    for row, (image, keep) in enumerate(zip(is_image.cpu(), budget.tolist())):
        positions = image.nonzero().flatten()
        if kind == "random":
            values = torch.rand(positions.numel(), generator=torch.Generator().manual_seed(seed))
        else:
            chosen = torch.linspace(0, positions.numel() - 1, keep).round().long() if keep else positions[:0]
            values = torch.zeros(positions.numel()).index_fill_(0, chosen, 1.0)
        scores[row, positions] = values
    return scores.to(is_image.device)


def select_top(scores: torch.Tensor, candidates: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
    """Mark the ``budget[b]`` best-scored candidate positions of each row.

    Ties are broken towards the lower position (a stable descending sort keeps positional order among
    equal scores), so the choice is deterministic across runs and batch compositions.
    """
    masked = scores.masked_fill(~candidates, float("-inf"))
    order = torch.sort(masked, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return (rank < budget[:, None]) & candidates
