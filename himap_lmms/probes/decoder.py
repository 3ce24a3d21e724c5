"""A hand-written LLaVA forward that lets a probe choose every layer's attention mask.

Both probes need what ``LlavaForConditionalGeneration.forward`` does not offer: the saliency probe needs
the eager attention probabilities of every layer inside one differentiable pass, the disruption probe needs
a different 4D mask in some layers than in others. This module is the loop of transformers'
``LlamaModel.forward`` (embeddings, rotary position embeddings, one call per decoder layer, final norm)
with the mask passed per layer. A mask is always explicit and additive, so eager attention (which only adds
the mask it is given) and SDPA compute the same thing. The pieces shared with the pruning engine (embeddings,
positions, masks, logits) are in :mod:`himap_lmms.llava_forward`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from transformers import Cache, PreTrainedModel

from himap_lmms.llava_forward import language_model_of


def single_sample(inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and a boolean ``attention_mask`` of a batch of one; probes answer per example."""
    input_ids = inputs["input_ids"]
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"probes take one example (input_ids of shape (1, seq)), got {tuple(input_ids.shape)}")
    attention_mask = inputs.get("attention_mask")
    valid = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    return input_ids, valid


def run_decoder(
    model: PreTrainedModel,
    hidden: torch.Tensor,
    position_ids: torch.Tensor,
    masks: Sequence[torch.Tensor],
    cache: Cache | None = None,
) -> torch.Tensor:
    """Run every decoder layer, layer ``l`` under ``masks[l]``; returns the last layer's hidden states."""
    decoder = language_model_of(model)
    if len(masks) != len(decoder.layers):
        raise ValueError(f"got {len(masks)} attention masks for {len(decoder.layers)} decoder layers")
    position_embeddings = decoder.rotary_emb(hidden, position_ids)
    for layer, mask in zip(decoder.layers, masks):
        hidden = layer(
            hidden,
            attention_mask=mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=cache is not None,
            position_embeddings=position_embeddings,
        )
    return hidden


@contextmanager
def attention_implementation(model: PreTrainedModel, implementation: str) -> Iterator[None]:
    """Switch the language model's attention kernel for the duration of a probe, then restore it.

    Attention modules read ``config._attn_implementation`` at every call, so flipping the (shared) text
    config is enough; the model object and its weights are left as they were.
    """
    config = language_model_of(model).config
    previous = config._attn_implementation
    config._attn_implementation = implementation
    try:
        yield
    finally:
        config._attn_implementation = previous


@contextmanager
def frozen_parameters(model: PreTrainedModel) -> Iterator[None]:
    """Turn off gradients for every weight during a probe's backward pass, then restore the flags.

    Only gradients with respect to the attention probabilities are wanted. Frozen weights mean autograd
    neither saves the activations their gradients would need nor allocates a gradient per weight (another
    full copy of the model).
    """
    flags = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)
