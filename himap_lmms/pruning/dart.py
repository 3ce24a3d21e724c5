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
"""

from __future__ import annotations

import torch
from transformers.models.llama.modeling_llama import repeat_kv


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
