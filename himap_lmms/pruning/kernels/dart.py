"""DART's selection as its authors' code makes it (Wen et al., arXiv 2502.11494; ``get_retained_image_token`` in
``llava/model/language_model/modeling_llama_self.py`` of ZichenWen1/DART).

Before decoder layer ``K``, from what layer ``K - 1`` wrote:

1. **pivots**: the ``image_pivots`` image tokens and the ``text_pivots`` tokens after the image with the largest
   L1 norm of their keys (after the rotary embedding, all heads side by side);
2. **quotas**: each pivot in turn, in the order Python's ``set`` iterates over their prompt positions, takes the
   ``quota`` image tokens least cosine-similar to it among those no earlier pivot took and that are not image
   pivots; similarity is measured on layer ``K - 1``'s output after the model's final norm;
3. the image pivots and every token a pivot took go on; text pivots are never dropped (only image tokens are).

The pivots take turns, so the order matters; it is reproduced exactly, including the ``set`` iteration order
over prompt positions (which the authors' code inherits from CPython). Positions here are the sample's own,
without padding, as in the authors' batch-of-one run.

``variant=prior`` (:func:`duplication_scores`) ranks every image token once by its nearest pivot instead.
"""

from __future__ import annotations

import torch
from transformers.models.llama.modeling_llama import repeat_kv

from himap_lmms.llava_forward import position_ids_of
from himap_lmms.pruning.registry import ScoreContext
from himap_lmms.pruning.scoring import select_top


def pivot_quota_rule(context: ScoreContext) -> torch.Tensor:
    """The rule of ``pivot_quota`` (``variant=authors``): :func:`pivot_quota_keep` on layer ``layer - 1``'s
    output after the final norm and its cached keys. Tokens are named by their index in the unpadded prompt, as
    the authors' batch-of-one code names them, on LLaVA (where that is the position id, DART's step being the
    only one) and on Qwen2.5-VL (whose position ids have three components) alike."""
    c, step = context, context.step
    quota = torch.tensor([step.pivot_quota(int(n)) for n in c.is_image.sum(dim=1)])
    groups = c.language_model.layers[c.layer - 1].self_attn.num_key_value_groups
    return pivot_quota_keep(
        c.language_model.norm(c.hidden), c.keys(c.layer - 1), position_ids_of(c.valid), c.is_image, c.is_text,
        step.pivots,
        step.text_pivots, quota, groups,
    )  # fmt: skip


def duplication_rule(context: ScoreContext) -> torch.Tensor:
    """The rule of ``duplication`` (``variant=prior``): :func:`duplication_scores`."""
    c = context
    return duplication_scores(c.hidden, c.keys(c.layer - 1), c.is_image, c.budget, c.step.pivots)


def pivot_quota_keep(
    normed: torch.Tensor,
    keys: torch.Tensor,
    positions: torch.Tensor,
    is_image: torch.Tensor,
    is_text: torch.Tensor,
    image_pivots: int,
    text_pivots: int,
    quota: torch.Tensor,
    groups: int,
) -> torch.Tensor:
    """``(batch, n)`` True at the image tokens DART keeps.

    Args:
        normed: ``(batch, n, hidden)`` layer ``K - 1``'s output after the final norm.
        keys: ``(batch, kv_heads, n, head_dim)`` layer ``K - 1``'s keys after the rotary embedding (its cache).
        positions: ``(batch, n)`` the prompt position of every column (its index in the unpadded prompt).
        is_image, is_text: ``(batch, n)`` image tokens and the tokens after the last image token.
        quota: ``(batch,)`` image tokens each pivot takes.
        groups: query heads per key head; the authors' norm runs over the keys repeated to every query head.
    """
    flat = repeat_kv(keys, groups).to(normed.device).permute(0, 2, 1, 3).flatten(2)
    key_l1 = torch.norm(flat, p=1, dim=-1)
    kept = torch.zeros_like(is_image)
    for b in range(is_image.shape[0]):
        image = is_image[b].nonzero().flatten()
        if image.numel() == 0:
            continue
        text = is_text[b].nonzero().flatten()
        column_of = {int(positions[b, c]): int(c) for c in torch.cat([image, text])}
        image_pos = positions[b, image]
        text_pos = positions[b, text]
        image_top = key_l1[b, image].topk(min(image_pivots, image.numel())).indices
        text_top = key_l1[b, text].topk(min(text_pivots, text.numel())).indices
        image_indices = image_pos[image_top].tolist()
        query_indices = text_pos[text_top].tolist()
        chosen = set(image_indices + query_indices)
        valid = set(image_pos.tolist()) - set(image_indices)
        valid_list = list(valid)
        take = int(quota[b])
        for item in list(chosen):
            if not valid_list or take == 0:
                break
            vectors = normed[b, [column_of[p] for p in valid_list]]
            similarity = -torch.nn.functional.cosine_similarity(normed[b, column_of[item]], vectors, dim=-1)
            picked = [valid_list[i] for i in similarity.topk(min(take, len(valid_list))).indices.tolist()]
            chosen.update(picked)
            valid.difference_update(picked)
            valid_list = list(valid)
        chosen.difference_update(query_indices)
        kept[b, [column_of[p] for p in chosen]] = True
    return kept


def duplication_scores(
    hidden: torch.Tensor, keys: torch.Tensor, is_image: torch.Tensor, budget: torch.Tensor, pivots: int
) -> torch.Tensor:
    """DART's score: how little each image token duplicates the sample's pivot tokens.

    The pivots are each sample's ``min(pivots, budget)`` image tokens with the largest key norm (all heads of
    ``keys``, the previous layer's); they score ``+inf`` so they are always kept. Every other image token
    scores minus its highest cosine similarity to a pivot, in ``hidden`` (the states entering the pruning
    layer): the tokens least like any pivot carry what the pivots do not, so they go on.

    Args:
        hidden: ``(batch, n, hidden)``. keys: ``(batch, kv_heads, n, head_dim)``.
        is_image: ``(batch, n)``. budget: ``(batch,)`` image tokens each sample keeps.
    """
    dtype = torch.promote_types(hidden.dtype, torch.float32)
    key_norm = keys.to(is_image.device, dtype).transpose(1, 2).flatten(2).norm(dim=-1)
    is_pivot = select_top(key_norm, is_image, budget.clamp(max=pivots))
    most = int(is_pivot.sum(dim=1).max())
    if most == 0:
        return torch.zeros(is_image.shape, dtype=dtype, device=is_image.device)
    # each row's pivot positions first (a row with fewer pivots pads with non-pivots, masked below)
    index = torch.sort(is_pivot.int(), dim=1, descending=True, stable=True).indices[:, :most]
    present = is_pivot.gather(1, index)
    unit = torch.nn.functional.normalize(hidden.to(dtype), dim=-1)
    pivot_unit = unit.gather(1, index[..., None].expand(-1, -1, unit.shape[-1]))
    similarity = torch.einsum("bnd,bpd->bnp", unit, pivot_unit).masked_fill(~present[:, None, :], float("-inf"))
    return (-similarity.amax(dim=-1)).masked_fill(is_pivot, float("inf"))
