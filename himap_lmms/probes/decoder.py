"""What both probes need around a forward: one example's inputs, a kernel switch, frozen weights.

Neither probe runs the decoder layers itself. The disruption probe generates through the pruning engine's
loop with a per-layer attention edit (:mod:`himap_lmms.pruning.engine`); the saliency probe needs eager
attention probabilities inside one differentiable pass, which transformers' own ``LlamaModel.forward`` gives
once the kernel is switched to eager for the call.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from transformers import PreTrainedModel

from himap_lmms.llava_forward import language_model_of


def single_sample(inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and a boolean ``attention_mask`` of a batch of one; probes answer per example."""
    input_ids = inputs["input_ids"]
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"probes take one example (input_ids of shape (1, seq)), got {tuple(input_ids.shape)}")
    attention_mask = inputs.get("attention_mask")
    valid = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    return input_ids, valid


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
