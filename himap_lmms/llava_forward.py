"""Pieces of transformers' LLaVA forward that the pruning engine and the probes both rebuild around.

The engine runs the decoder layers itself (to drop tokens between layers, or to edit a layer's mask for the
disruption probe); the saliency probe calls transformers' decoder on embeddings it merged. Both need what
``LlavaModel.forward`` and ``LlamaModel.forward`` do around that loop: the merged multimodal embeddings,
padding-aware position ids, an explicit mask, the final projection.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from himap_lmms.compat import image_features, image_token_id, language_model_of, lm_head_of

# Kernels that accept an explicit 4D additive mask; FlashAttention takes only padding masks.
SUPPORTED_ATTENTION = ("sdpa", "eager")


def check_attention(model: PreTrainedModel, purpose: str) -> None:
    implementation = language_model_of(model).config._attn_implementation
    if implementation not in SUPPORTED_ATTENTION:
        raise ValueError(
            f"attn_implementation={implementation!r} is not supported by {purpose}: "
            f"use one of {', '.join(SUPPORTED_ATTENTION)}"
        )


def embed_multimodal(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    pixel_values: torch.Tensor | None = None,
    image_sizes: torch.Tensor | None = None,
    batch_num_images: torch.Tensor | None = None,
) -> torch.Tensor:
    """Token embeddings with the projected image features written over the image placeholders."""
    embeds = model.get_input_embeddings()(input_ids)
    if pixel_values is None or pixel_values.numel() == 0:
        return embeds
    features = image_features(model, pixel_values.to(embeds.dtype), image_sizes, batch_num_images)
    return write_image_features(model, input_ids, embeds, features)


def write_image_features(
    model: PreTrainedModel, input_ids: torch.Tensor, embeds: torch.Tensor, features: torch.Tensor
) -> torch.Tensor:
    """``embeds`` with ``features`` (one row per image placeholder, in reading order) over the placeholders."""
    features = features.to(embeds.device, embeds.dtype)
    placeholders = input_ids == image_token_id(model.config)
    if int(placeholders.sum()) != features.shape[0]:
        raise ValueError(
            f"the prompts hold {int(placeholders.sum())} image placeholder tokens but the images give "
            f"{features.shape[0]} feature rows: the processor and the model disagree on image tokens per image"
        )
    return embeds.masked_scatter(placeholders[..., None].expand_as(embeds).to(embeds.device), features)


def position_ids_of(valid: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens (transformers' generate does the same): left padding changes nothing."""
    return (valid.long().cumsum(dim=-1) - 1).clamp(min=0)


def causal_allowed(valid: torch.Tensor, query_length: int) -> torch.Tensor:
    """``(batch, q, kv)``: which keys each of the last ``query_length`` positions may attend to."""
    kv = valid.shape[1]
    keys = torch.arange(kv, device=valid.device)
    queries = torch.arange(kv - query_length, kv, device=valid.device)
    return (keys[None, :] <= queries[:, None])[None] & valid[:, None, :]


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(batch, 1, q, kv)`` float mask: 0 where allowed, a large finite negative number elsewhere.

    A finite value rather than -inf turns a fully masked row (a padding query) into a harmless uniform softmax
    instead of NaNs, which would otherwise reach real rows through ``0 * NaN`` in the attention product.
    It must stay finite in float32 too, where eager attention takes its softmax: float64's minimum would not.
    """
    fill = max(torch.finfo(dtype).min, torch.finfo(torch.float32).min)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill(~allowed, fill)[:, None]


def last_token_logits(model: PreTrainedModel, hidden: torch.Tensor) -> torch.Tensor:
    """Logits at the last position only, in the model's dtype: projecting the whole prompt is wasted work."""
    return lm_head_of(model)(language_model_of(model).norm(hidden[:, -1:]))[:, -1]
