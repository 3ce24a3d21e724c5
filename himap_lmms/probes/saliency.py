"""Probe 1 of ``docs/method.md``: how much of the answer flows through each attention edge, layer by layer.

For one example and its gold letter, a single forward and backward pass with eager attention gives, per
layer l, the saliency map I_l = mean over heads of |A_l * dL/dA_l| (elementwise; L is the cross-entropy of
the next-token logits at the last prompt position against the token the model emits for the letter). Each
I_l is reduced to a handful of numbers (flow into the prefix / image / text rows, img->txt, img->img, ...)
the moment its gradient arrives, inside a tensor hook, so no layer's map outlives its own backward step.

Peak memory per example at the LLaVA-1.5-7B shape (fp16, L = 32 layers, H = 32 heads, d = 4096,
FFN m = 11008, n ~ 650 tokens: 576 image + ~35 prefix + ~40 text), by arithmetic:

- weights: 7.06e9 x 2 B = 14.1 GB. They are frozen for the probe, so no 14 GB of weight gradients.
- attention probabilities that autograd must save anyway: H n^2 = 32 x 650^2 = 13.5e6 entries per layer,
  once in fp32 (softmax output, 54 MB) and once in fp16 (input of A @ V, 27 MB): 81 MB x 32 = 2.6 GB.
- the other saved activations (norm inputs in fp32, q/k/v, projection inputs, the SwiGLU's four n x m
  tensors): about 110 MB per layer, 3.5 GB in all.
- transient, one layer at a time during backward: dL/dA (27 MB fp16), softmax's fp32 input gradient
  (54 MB) and the hook's fp32 product and its head mean (54 MB + 1.7 MB): about 0.15-0.25 GB.

So about 20.5 GB peak. Keeping every layer's fp32 probabilities and gradients until the end (e.g. with
``retain_grad``) would add 32 x 2 x 54 MB = 3.5 GB, and the vocabulary projection of the whole prompt
(650 x 32064 fp32 = 83 MB) is avoided by taking logits at the last position only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from himap_lmms.compat import image_token_id, lm_head_of
from himap_lmms.llava_forward import (
    additive_mask,
    causal_allowed,
    embed_multimodal,
    language_model_of,
    position_ids_of,
)
from himap_lmms.probes.decoder import attention_implementation, frozen_parameters, single_sample
from himap_lmms.probes.layout import GROUPS, SequenceLayout, sequence_layout

# Per-layer numbers reported for each example. ``into_<group>`` is the flow into one row of the group (the
# group's row sums of I_l divided by its size); ``a2b`` sums I_l over rows b and columns a; ``total`` sums all.
FLOW_KEYS = ("into_prefix", "into_image", "into_text", "img2txt", "img2img", "txt2txt", "prefix2txt", "total")

# Pieces that mark the start of a word in SentencePiece (Llama) and byte-level BPE (GPT-2 style) vocabularies.
WORD_START_MARKERS = ("▁", "Ġ")

Reduced = TypeVar("Reduced")


@dataclass
class SaliencyResult:
    """One example's per-layer flows (``flows[key][layer]``) and what the model predicted."""

    flows: dict[str, list[float]]
    group_sizes: dict[str, int]
    target_token_id: int
    predicted_token_id: int
    loss: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def answer_token_id(tokenizer: PreTrainedTokenizerBase, letter: str) -> int:
    """The vocabulary id of the piece a model emits when it answers ``letter`` after ``"ASSISTANT:"``.

    Llama tokenizers write the answer as the word-start piece (``"▁A"``), not as the bare ``"A"`` that also
    exists in the vocabulary; the loss must target the former or it measures an answer the model never
    gives. Both ``"A"`` and ``" A"`` are encoded; a single piece carrying a word-start marker wins.
    """
    candidates = []
    for text in (letter, " " + letter):
        ids = tokenizer.encode(text, add_special_tokens=False)
        # A lone word-start piece ("▁") may precede the letter when the tokenizer prepends a space itself.
        ids = [i for i in ids if tokenizer.convert_ids_to_tokens(i) not in WORD_START_MARKERS]
        if len(ids) == 1:
            candidates.append(ids[0])
    if not candidates:
        raise ValueError(f"answer letter {letter!r} is not a single token for this tokenizer")
    marked = [i for i in candidates if tokenizer.convert_ids_to_tokens(i).startswith(WORD_START_MARKERS)]
    return (marked or candidates)[0]


def layer_flows(layout: SequenceLayout, attention: torch.Tensor, grad: torch.Tensor) -> dict[str, float]:
    """Reduce one layer's ``(1, heads, n, n)`` probabilities and gradients to the :data:`FLOW_KEYS` numbers."""
    dtype = torch.promote_types(attention.dtype, torch.float32)
    # Out of place: softmax's backward still needs ``attention`` after this hook (in fp32 models it is the
    # very tensor softmax saved).
    saliency = (attention[0].to(dtype) * grad[0].to(dtype)).abs_().mean(dim=0)
    row_sums = saliency.sum(dim=1)
    flows = {}
    for group in GROUPS:
        rows = layout.group(group)
        flows[f"into_{group}"] = float(row_sums[rows].sum() / rows.sum().clamp(min=1))
    prefix, image, text = layout.prefix, layout.image, layout.text
    flows["img2txt"] = float(saliency[text][:, image].sum())
    flows["img2img"] = float(saliency[image][:, image].sum())
    flows["txt2txt"] = float(saliency[text][:, text].sum())
    flows["prefix2txt"] = float(saliency[text][:, prefix].sum())
    flows["total"] = float(row_sums.sum())
    return flows


def attention_gradients(
    model: PreTrainedModel,
    inputs: Mapping[str, torch.Tensor],
    target_token_id: int,
    reduce: Callable[[int, torch.Tensor, torch.Tensor], Reduced],
) -> tuple[list[Reduced], torch.Tensor, torch.Tensor]:
    """One forward and backward pass; ``reduce(layer, A, dL/dA)`` is called per layer during the backward.

    ``A`` is the layer's ``(1, heads, n, n)`` attention probabilities under eager attention (whatever kernel
    the model was loaded with, for this call only). Returns the per-layer reductions, the next-token logits
    at the last position and the loss. The model is left as it was: weights untouched, no ``.grad``.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("the saliency probe needs gradients: call it outside torch.inference_mode()")
    input_ids, valid = single_sample(inputs)
    decoder = language_model_of(model)
    num_layers = len(decoder.layers)
    reduced: list[Any] = [None] * num_layers

    def capture(layer_index: int) -> Callable:
        def forward_hook(module: torch.nn.Module, args: tuple, output: tuple) -> None:
            if output[1] is None:
                raise RuntimeError(f"layer {layer_index}: attention returned no probabilities (not eager?)")
            # The hook drops its reference once used, so the probabilities die with their autograd node.
            held = [output[1].detach()]

            def on_grad(grad: torch.Tensor) -> None:
                reduced[layer_index] = reduce(layer_index, held.pop(), grad)

            output[1].register_hook(on_grad)

        return forward_hook

    handles = [layer.self_attn.register_forward_hook(capture(i)) for i, layer in enumerate(decoder.layers)]
    try:
        with attention_implementation(model, "eager"), frozen_parameters(model):
            with torch.no_grad():
                hidden = embed_multimodal(model, input_ids, inputs.get("pixel_values"), inputs.get("image_sizes"))
            hidden = hidden.detach().requires_grad_(True)
            with torch.enable_grad():
                # transformers' own decoder forward; a prepared 4D mask is used as given, and its finite
                # fill keeps padding rows free of NaNs (see ``additive_mask``).
                out = decoder(
                    inputs_embeds=hidden,
                    attention_mask=additive_mask(causal_allowed(valid, input_ids.shape[1]), hidden.dtype),
                    position_ids=position_ids_of(valid),
                    use_cache=False,
                )
                logits = lm_head_of(model)(out.last_hidden_state[:, -1])
                logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
                target = torch.tensor([target_token_id], device=logits.device)
                loss = torch.nn.functional.cross_entropy(logits, target)
                torch.autograd.grad(loss, hidden)
    finally:
        for handle in handles:
            handle.remove()
    missing = [i for i, value in enumerate(reduced) if value is None]
    if missing:
        raise RuntimeError(f"no gradient reached the attention of layer(s) {missing}")
    return reduced, logits.detach(), loss.detach()


def saliency_probe(model: PreTrainedModel, inputs: Mapping[str, torch.Tensor], target_token_id: int) -> SaliencyResult:
    """Per-layer information flow of one example (batch 1) towards the answer token ``target_token_id``."""
    input_ids, valid = single_sample(inputs)
    layout = sequence_layout(input_ids[0], image_token_id(model.config), valid[0])
    per_layer, logits, loss = attention_gradients(
        model, inputs, target_token_id, lambda _, attention, grad: layer_flows(layout, attention, grad)
    )
    return SaliencyResult(
        flows={key: [layer[key] for layer in per_layer] for key in FLOW_KEYS},
        group_sizes=layout.sizes,
        target_token_id=int(target_token_id),
        predicted_token_id=int(logits[0].argmax()),
        loss=float(loss),
    )
