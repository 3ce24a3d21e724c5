"""VisionZip-style input selection: image tokens chosen in the vision tower, before the language model.

VisionZip (Yang et al., "VisionZip: Longer is Better but Not Necessary in Vision Language Models", CVPR 2025,
arXiv 2412.04467) observes that a CLIP tower gathers most of an image's information into a few tokens, the
ones its class token attends to. For each image of ``P`` patch tokens and a budget of ``B = D + C`` tokens:

1. **dominant**: the ``D`` patches the class token attends to most (heads averaged) in the tower layer whose
   output LLaVA reads (``vision_feature_layer``); ties go to the lower patch;
2. **contextual**: of the ``P - D`` other patches, ``C`` evenly spaced ones are targets, and every other
   remaining patch joins the target whose key (same layer, heads averaged) is most cosine-similar to its own
   (ties to the earlier target). A contextual token is the mean of its target's and its members' features.

Merging happens on the tower's features, before the projector, which then maps all ``B`` tokens as usual.

**Where the merged tokens go.** The contextual tokens are new vectors, not image positions, so each takes
the placeholder slot of its target: dominant tokens stay at their own slots, contextual ones at their
targets', and both keep the position ids those slots have in the unpruned prompt (RoPE sees them where the
full image grid would put them). The other placeholders are dropped before layer 0, so the language model
runs on ``B`` tokens per image, in slot order. The engine treats this as a step before layer 0 that keeps
exactly those slots, which is why ``stats.kept`` lists dominant and target slots together.
"""

from __future__ import annotations

import torch
from torch.profiler import record_function
from transformers import PreTrainedModel

from himap_lmms.compat import image_token_id, projector_of, vision_encoder_layers, vision_tower_of
from himap_lmms.llava_forward import write_image_features
from himap_lmms.pruning.config import PruneStep
from himap_lmms.pruning.scoring import SCORE_LABEL, select_top


def check_visionzip(model: PreTrainedModel) -> None:
    """VisionZip needs a LLaVA-1.5-style model: a CLIP tower (a class token) and one feature layer after it."""
    config = model.config
    if config.model_type != "llava":
        raise ValueError(
            f"method=visionzip supports llava (LLaVA-1.5) checkpoints, not {config.model_type!r}: "
            "LLaVA-NeXT's tiles and newline tokens are not handled"
        )
    if config.vision_config.model_type != "clip_vision_model":
        raise ValueError(
            f"method=visionzip needs a CLIP vision tower (its class token ranks the patches), "
            f"not {config.vision_config.model_type!r}"
        )
    layer = config.vision_feature_layer
    strategy = config.vision_feature_select_strategy
    if not isinstance(layer, int) or strategy != "default" or feature_index(model) < 1:
        raise ValueError(
            "method=visionzip needs one vision_feature_layer after the embeddings and "
            f"vision_feature_select_strategy='default' (got {layer!r}, {strategy!r})"
        )


def feature_index(model: PreTrainedModel) -> int:
    """Index in the tower's ``hidden_states`` of the features LLaVA reads; tower layer ``index - 1`` makes them
    (LLaVA-1.5's -2 is the output of the second-to-last layer)."""
    layer = model.config.vision_feature_layer
    return layer if layer >= 0 else len(vision_encoder_layers(vision_tower_of(model))) + 1 + layer


def visionzip_embeddings(
    model: PreTrainedModel, input_ids: torch.Tensor, pixel_values: torch.Tensor | None, step: PruneStep
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input embeddings with each image's selected tokens at their slots, and ``(batch, n)`` which slots to keep.

    Dropped slots keep their own (projected) features; they never reach a decoder layer.
    """
    embeds = model.get_input_embeddings()(input_ids)
    chosen = torch.zeros(input_ids.shape, dtype=torch.bool, device=input_ids.device)
    if pixel_values is None or pixel_values.numel() == 0:
        return embeds, chosen
    features, selected = select_tokens(model, pixel_values.to(embeds.dtype), step)
    embeds = write_image_features(model, input_ids, embeds, projector_of(model)(features).flatten(0, 1))
    chosen[input_ids == image_token_id(model.config)] = selected.flatten().to(chosen.device)
    return embeds, chosen


def select_tokens(
    model: PreTrainedModel, pixel_values: torch.Tensor, step: PruneStep
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, P, vision_hidden)`` tower features with the contextual tokens written over their targets,
    and ``(images, P)`` the slots kept (dominant and targets)."""
    tower = vision_tower_of(model)
    states = tower(pixel_values, output_hidden_states=True, return_dict=True).hidden_states
    # The tower runs for every method; what VisionZip adds to it is labelled as its score.
    with record_function(SCORE_LABEL):
        return _select(model, states, step)


def _select(
    model: PreTrainedModel, states: tuple[torch.Tensor, ...], step: PruneStep
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`select_tokens` on the tower's hidden states: the dominant patches, then the merged ones."""
    tower = vision_tower_of(model)
    feature = feature_index(model)
    features = states[feature][:, 1:].clone()
    class_attention, keys = _class_attention_and_keys(vision_encoder_layers(tower)[feature - 1], states[feature - 1])
    images, patches = class_attention.shape
    total = step.budget(patches)
    contextual = round(step.contextual * total)
    everything = torch.ones_like(class_attention, dtype=torch.bool)
    budget = torch.full((images,), total - contextual, device=class_attention.device)
    selected = select_top(class_attention, everything, budget)
    exact = torch.promote_types(features.dtype, torch.float32)  # average in at least float32
    for image in range(images if contextual else 0):
        rest = (~selected[image]).nonzero().flatten()
        targets = rest[torch.linspace(0, rest.numel() - 1, contextual).round().long().to(rest.device)]
        members = rest[~torch.isin(rest, targets)]
        unit = torch.nn.functional.normalize(keys[image], dim=-1)
        nearest = (unit[members] @ unit[targets].T).argmax(dim=1)
        merged = features[image, targets].to(exact).index_add(0, nearest, features[image, members].to(exact))
        counts = torch.ones(contextual, dtype=exact, device=merged.device).index_add(
            0, nearest, torch.ones(nearest.shape, dtype=exact, device=merged.device)
        )
        features[image, targets] = (merged / counts[:, None]).to(features.dtype)
        selected[image, targets] = True
    return features, selected


def _class_attention_and_keys(layer: torch.nn.Module, layer_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Head-averaged attention of the class token to every patch in CLIP ``layer``, and the patches' keys
    averaged over heads (both without the class token's own column), recomputed from the layer's input."""
    attn = layer.self_attn
    hidden = layer.layer_norm1(layer_input)
    images, length, _ = hidden.shape
    query = attn.q_proj(hidden[:, :1]).view(images, 1, -1, attn.head_dim).transpose(1, 2)
    keys = attn.k_proj(hidden).view(images, length, -1, attn.head_dim).transpose(1, 2)
    dtype = torch.promote_types(hidden.dtype, torch.float32)
    probs = (torch.matmul(query.to(dtype), keys.to(dtype).transpose(-1, -2)) * attn.scale).softmax(dim=-1)
    return probs.mean(dim=1)[:, 0, 1:], keys.to(dtype).mean(dim=1)[:, 1:]
