"""Probe 2 of ``docs/method.md``: cut one kind of attention edge in a window of layers and see what breaks.

Flows that can be cut (query rows may no longer attend to the image keys named):

- ``img2txt``: text rows (everything after the image block, generated tokens included) see no image key;
- ``img2img``: image rows see no image key, their own included (they still see the prefix);
- ``img2rnd``: the control. As many query rows as the prompt has text rows, drawn with a seeded generator
  from the prompt's image and text positions, see no image key. The rows are drawn once per example, so
  generated tokens are not cut and decoding with the KV cache equals recomputing the whole sequence.

The cut is an additive 4D mask, built once per example and passed to the layers of the window only; the
other layers get the plain causal mask. So an empty window runs exactly the undisturbed computation, and
SDPA stays usable. Generation is greedy with a KV cache: keys and values of the prompt were computed under
the cut, exactly as a full recomputation per step would compute them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel

from himap_lmms.llava_forward import (
    additive_mask,
    causal_allowed,
    check_attention,
    embed_multimodal,
    language_model_of,
    last_token_logits,
    position_ids_of,
)
from himap_lmms.probes.decoder import run_decoder, single_sample
from himap_lmms.probes.layout import SequenceLayout, sequence_layout

FLOWS = ("img2txt", "img2img", "img2rnd")
TOP_K = 5


@dataclass(frozen=True)
class Disruption:
    """Which flow to cut, in layers ``start_layer .. end_layer`` (inclusive; ``None``: to the last layer).

    ``end_layer < start_layer`` is an error, not an empty window: a cut that cuts nothing would report the
    undisturbed model under the flow's name.
    """

    flow: str
    start_layer: int
    end_layer: int | None = None
    seed: int = 0

    def window(self, num_layers: int) -> range:
        """The 0-based layers to cut; raises ``ValueError`` naming a bad flow or layer."""
        if self.flow not in FLOWS:
            raise ValueError(f"flow={self.flow!r} is not a known flow: choose one of {', '.join(FLOWS)}")
        end = num_layers - 1 if self.end_layer is None else self.end_layer
        for name, layer in (("start_layer", self.start_layer), ("end_layer", end)):
            if not 0 <= layer < num_layers:
                raise ValueError(f"{name}={layer} is outside [0, {num_layers}) for this {num_layers}-layer model")
        if end < self.start_layer:
            raise ValueError(f"end_layer={end} is below start_layer={self.start_layer}: the window would cut nothing")
        return range(self.start_layer, end + 1)


@dataclass
class ProbeGeneration:
    """Greedy output of one example: new token ids, and the first step's logits (at least fp32) and top-5 ids."""

    token_ids: list[int]
    first_logits: torch.Tensor
    top5: list[int]


def blocked_edges(flow: str, layout: SequenceLayout, seed: int = 0) -> torch.Tensor:
    """``(n, n)`` bool over the prompt: True where ``flow``'s cut forbids query row i to attend key j."""
    image, text = layout.image, layout.text
    if flow == "img2txt":
        rows = text
    elif flow == "img2img":
        rows = image
    elif flow == "img2rnd":
        pool = torch.nonzero(image | text).flatten()
        generator = torch.Generator().manual_seed(seed)
        chosen = pool[torch.randperm(pool.numel(), generator=generator)[: int(text.sum())].to(pool.device)]
        rows = torch.zeros_like(image)
        rows[chosen] = True
    else:
        raise ValueError(f"flow={flow!r} is not a known flow: choose one of {', '.join(FLOWS)}")
    return rows[:, None] & image[None, :]


def random_rows(layout: SequenceLayout, seed: int) -> torch.Tensor:
    """The query rows ``img2rnd`` cuts for this example and seed (for reports)."""
    return torch.nonzero(blocked_edges("img2rnd", layout, seed).any(dim=1)).flatten()


@torch.no_grad()
def disrupted_generate(
    model: PreTrainedModel,
    inputs: Mapping[str, torch.Tensor],
    disruption: Disruption | None = None,
    max_new_tokens: int = 8,
    eos_token_id: int | list[int] | None = None,
) -> ProbeGeneration:
    """Greedy generation for one example (batch 1), with ``disruption``'s cut or undisturbed (``None``)."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
    check_attention(model, "the disruption probe's per-layer masks")
    input_ids, valid = single_sample(inputs)
    decoder = language_model_of(model)
    num_layers = len(decoder.layers)
    window = disruption.window(num_layers) if disruption is not None else range(0)
    layout = sequence_layout(input_ids[0], model.config.image_token_id, valid[0])
    dtype = decoder.dtype

    hidden = embed_multimodal(model, input_ids, inputs.get("pixel_values"), inputs.get("image_sizes"))
    allowed = causal_allowed(valid, input_ids.shape[1])
    plain = additive_mask(allowed, dtype)
    masks = [plain] * num_layers
    if len(window) > 0:
        cut = additive_mask(allowed & ~blocked_edges(disruption.flow, layout, disruption.seed)[None], dtype)
        masks = [cut if layer in window else plain for layer in range(num_layers)]
    cache = DynamicCache(config=decoder.config)
    position_ids = position_ids_of(valid)
    logits = last_token_logits(model, run_decoder(model, hidden, position_ids, masks, cache))

    stops = _eos_ids(model, eos_token_id)
    # Generated tokens are text rows: under img2txt they lose the image keys too, in the window's layers.
    cut_generated = len(window) > 0 and disruption.flow == "img2txt"
    first_logits, tokens = logits[0].to(torch.promote_types(logits.dtype, torch.float32)), []
    position = position_ids[:, -1:]
    for _ in range(max_new_tokens):
        token = int(logits[0].argmax())
        tokens.append(token)
        if token in stops or len(tokens) == max_new_tokens:
            break
        valid = torch.cat([valid, valid.new_ones(1, 1)], dim=1)
        image_keys = torch.cat([layout.image, layout.image.new_zeros(valid.shape[1] - layout.length)])
        step_allowed = valid[:, None, :]
        step_plain = additive_mask(step_allowed, dtype)
        step_masks = [step_plain] * num_layers
        if cut_generated:
            step_cut = additive_mask(step_allowed & ~image_keys[None, None, :], dtype)
            step_masks = [step_cut if layer in window else step_plain for layer in range(num_layers)]
        position = position + 1
        hidden = model.get_input_embeddings()(torch.tensor([[token]], device=input_ids.device))
        logits = last_token_logits(model, run_decoder(model, hidden, position, step_masks, cache))
    return ProbeGeneration(token_ids=tokens, first_logits=first_logits, top5=first_logits.topk(TOP_K).indices.tolist())


def top5_jaccard(first: list[int], second: list[int]) -> float:
    """Overlap of two top-k id lists: |intersection| / |union|."""
    a, b = set(first), set(second)
    return len(a & b) / len(a | b) if a | b else 1.0


def _eos_ids(model: PreTrainedModel, eos_token_id: int | list[int] | None) -> set[int]:
    if eos_token_id is None:
        eos_token_id = model.generation_config.eos_token_id
    if eos_token_id is None:
        eos_token_id = model.config.get_text_config().eos_token_id
    if eos_token_id is None:
        return set()
    return {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id)
