"""Probe 2 of ``docs/method.md``: cut one kind of attention edge in a window of layers and see what breaks.

Flows that can be cut (query rows may no longer attend to the image keys named):

- ``img2txt``: text rows (everything after the image block, generated tokens included) see no image key;
- ``img2img``: image rows see no image key, their own included (they still see the prefix);
- ``img2rnd``: the control. As many query rows as the prompt has text rows, drawn with a seeded generator
  from the prompt's image and text positions, see no image key. The rows are drawn once per example, so
  generated tokens are not cut and decoding with the KV cache equals recomputing the whole sequence.

The cut is an attention edit (:data:`~himap_lmms.pruning.engine.AttentionEdit`) that generation through the
pruning engine (method ``none``) applies in the layers of the window only, in the prefill and at every decoding
step; the other layers keep their plain causal mask. So an empty window runs exactly the undisturbed
computation, and SDPA stays usable. Generation is greedy with a KV cache: keys and values of the prompt were
computed under the cut, exactly as a full recomputation per step would compute them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from himap_lmms.compat import image_token_id
from himap_lmms.llava_forward import language_model_of
from himap_lmms.probes.decoder import single_sample
from himap_lmms.probes.layout import SequenceLayout, sequence_layout
from himap_lmms.pruning.config import PruningConfig
from himap_lmms.pruning.engine import PrunedLlava

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

    def attention_edit(self, layout: SequenceLayout, num_layers: int) -> FlowCut:
        """This cut on the prompt of ``layout`` as the engine's attention edit (see :class:`FlowCut`)."""
        rows = cut_rows(self.flow, layout, self.seed)
        return FlowCut(self.window(num_layers), rows, layout.image, cut_generated=self.flow == "img2txt")


@dataclass
class ProbeGeneration:
    """Greedy output of one example: new token ids, and the first step's logits (at least fp32) and top-5 ids."""

    token_ids: list[int]
    first_logits: torch.Tensor
    top5: list[int]


def cut_rows(flow: str, layout: SequenceLayout, seed: int = 0) -> torch.Tensor:
    """``(n,)`` bool over the prompt: the query rows that ``flow``'s cut keeps away from every image key."""
    image, text = layout.image, layout.text
    if flow == "img2txt":
        return text
    if flow == "img2img":
        return image
    if flow == "img2rnd":
        pool = torch.nonzero(image | text).flatten()
        generator = torch.Generator().manual_seed(seed)
        chosen = pool[torch.randperm(pool.numel(), generator=generator)[: int(text.sum())].to(pool.device)]
        rows = torch.zeros_like(image)
        rows[chosen] = True
        return rows
    raise ValueError(f"flow={flow!r} is not a known flow: choose one of {', '.join(FLOWS)}")


def random_rows(layout: SequenceLayout, seed: int) -> torch.Tensor:
    """The query rows ``img2rnd`` cuts for this example and seed (for reports)."""
    return torch.nonzero(cut_rows("img2rnd", layout, seed)).flatten()


@dataclass(frozen=True)
class FlowCut:
    """A :class:`Disruption` as the engine's attention edit: in ``window``, ``rows`` lose the ``image`` keys.

    ``rows`` and ``image`` cover the prompt. Positions after it are generated tokens: never image keys, and
    cut rows only if ``cut_generated`` (they are text rows, so under img2txt they lose the image too).
    """

    window: range
    rows: torch.Tensor
    image: torch.Tensor
    cut_generated: bool

    def __call__(self, layer: int, allowed: torch.Tensor) -> torch.Tensor:
        if layer not in self.window:
            return allowed
        queries, keys = allowed.shape[-2:]
        generated = keys - self.image.numel()
        rows = torch.cat([self.rows, self.rows.new_full((generated,), self.cut_generated)])[keys - queries :]
        image = torch.cat([self.image, self.image.new_zeros(generated)])
        return allowed & ~(rows[:, None] & image[None, :])


def disrupted_generate(
    model: PreTrainedModel,
    inputs: Mapping[str, torch.Tensor],
    disruption: Disruption | None = None,
    max_new_tokens: int = 8,
    eos_token_id: int | list[int] | None = None,
) -> ProbeGeneration:
    """Greedy generation for one example (batch 1), with ``disruption``'s cut or undisturbed (``None``)."""
    input_ids, valid = single_sample(inputs)
    edit = None
    if disruption is not None:
        layout = sequence_layout(input_ids[0], image_token_id(model.config), valid[0])
        edit = disruption.attention_edit(layout, len(language_model_of(model).layers))
    # The probes compare logits at the model's precision when it exceeds float32 (float64 test models).
    logits_dtype = torch.promote_types(language_model_of(model).dtype, torch.float32)
    engine = PrunedLlava(model, PruningConfig(), attention_edit=edit, logits_dtype=logits_dtype)
    stops = _eos_ids(model, eos_token_id)
    generation = engine.generate(
        input_ids,
        valid.long(),
        inputs.get("pixel_values"),
        inputs.get("image_sizes"),
        max_new_tokens=max_new_tokens,
        eos_token_id=sorted(stops) or None,
        return_logits=True,
    )
    first_logits = generation.logits[0][0]
    return ProbeGeneration(
        token_ids=generation.sequences[0].tolist(),
        first_logits=first_logits,
        top5=first_logits.topk(TOP_K).indices.tolist(),
    )


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
