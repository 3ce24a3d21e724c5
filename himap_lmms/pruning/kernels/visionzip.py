"""VisionZip's input selection: image tokens chosen in the vision tower, before the language model.

VisionZip (Yang et al., "VisionZip: Longer is Better but Not Necessary in Vision Language Models", CVPR 2025,
arXiv 2412.04467) observes that a CLIP tower gathers most of an image's information into a few tokens, the
ones its class token attends to.

**As its authors run it** (``variant=authors``; ``CLIPVisionTower_VisionZip.forward`` in ``visionzip/
clip_encoder.py`` of dvlab-research/VisionZip), for each image, with ``dominant`` and ``contextual`` counts, in the
tower layer whose output LLaVA reads:

1. **dominant**: the class token itself and the ``dominant - 1`` patches whose attention from the class token,
   summed over heads, is largest; they keep their order (class token first);
2. **contextual**: the other tokens, in order, have their keys averaged over heads and L2-normalised; the
   ``contextual`` targets are every ``R // contextual``-th of those ``R`` tokens (from the first), each other
   token joins the target its key is most similar to, and a contextual token is its target's features plus
   the mean of its members' features (a target no token joins stays as it is).

The ``dominant + contextual`` features (dominant first, then contextual in target order) go through the projector
and into the language model in a row where the image's placeholders begin; the rest of the placeholders are
dropped and the prompt is numbered 0..n'-1 again, as if the image had that many tokens.

**This repo's earlier reading** (``variant=prior``), for each image of ``P`` patch tokens and a budget of
``B = D + C`` tokens:

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
from himap_lmms.pruning.scoring import SCORE_LABEL, select_top
from himap_lmms.pruning.visionzip import VisionZipStep


def check_visionzip(model: PreTrainedModel) -> None:
    """VisionZip needs a LLaVA-1.5-style model: a CLIP tower (a class token) and one feature layer after it."""
    config = model.config
    if config.model_type == "llava_onevision":  # docs/models.md: VisionZip's authors ported it to CLIP only
        raise ValueError(
            "method=visionzip does not run on llava_onevision (LLaVA-OneVision): its SigLIP tower has no class token "
            "to rank the patches, and VisionZip's authors give no rule without one (their code patches CLIP only)"
        )
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
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    pixel_values: torch.Tensor | None,
    image_sizes: torch.Tensor | None,
    step: VisionZipStep,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input embeddings with each image's selected tokens at their slots, and ``(batch, n)`` which slots to keep.

    Dropped slots keep their own (projected) features; they never reach a decoder layer.
    """
    embeds = model.get_input_embeddings()(input_ids)
    chosen = torch.zeros(input_ids.shape, dtype=torch.bool, device=input_ids.device)
    if pixel_values is None or pixel_values.numel() == 0:
        return embeds, chosen
    features, selected = select_tokens(model, pixel_values.to(embeds.dtype), step)
    if step.score == "visionzip":  # the B tokens fill each image's first B placeholders
        slots = int((input_ids == image_token_id(model.config)).sum()) // features.shape[0]
        projected = projector_of(model)(features)
        total = projected.shape[1]
        features = projected.new_zeros(projected.shape[0], slots, projected.shape[2])
        features[:, :total] = projected
        selected = torch.arange(slots, device=features.device)[None].expand(projected.shape[0], -1) < total
    else:
        features = projector_of(model)(features)
    embeds = write_image_features(model, input_ids, embeds, features.flatten(0, 1))
    chosen[input_ids == image_token_id(model.config)] = selected.flatten().to(chosen.device)
    return embeds, chosen


def select_tokens(
    model: PreTrainedModel, pixel_values: torch.Tensor, step: VisionZipStep
) -> tuple[torch.Tensor, torch.Tensor]:
    """``variant=authors``: ``(images, dominant + contextual, vision_hidden)`` the tokens VisionZip hands the
    projector, and ``(images, dominant - 1)`` the patches (0-based) chosen as dominant, in order.
    ``variant=prior``: ``(images, P, vision_hidden)`` tower features with the contextual tokens written over their
    targets, and ``(images, P)`` the slots kept (dominant and targets)."""
    tower = vision_tower_of(model)
    states = tower(pixel_values, output_hidden_states=True, return_dict=True).hidden_states
    # The tower runs for every method; what VisionZip adds to it is labelled as its score.
    with record_function(SCORE_LABEL):
        if step.score == "visionzip":
            patches = states[0].shape[1] - 1
            dominant, contextual = step.counts(patches)
            if dominant + contextual > patches:
                raise ValueError(
                    f"dominant={dominant} + contextual={contextual} is more than the {patches} tokens of an "
                    "image: lower them"
                )
            return _select_as_authors(model, states, dominant, contextual)
        return _select(model, states, step)


def _select_as_authors(
    model: PreTrainedModel, states: tuple[torch.Tensor, ...], dominant: int, contextual: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`select_tokens` for ``variant=authors``, step by step as ``CLIPVisionTower_VisionZip.forward``."""
    feature = feature_index(model)
    layer = vision_encoder_layers(vision_tower_of(model))[feature - 1]
    hidden = states[feature]  # with the class token, which is one of the dominant tokens
    class_attention, metric = _class_attention_sum_and_metric(layer, states[feature - 1])
    patches = class_attention.topk(dominant - 1, dim=1).indices
    class_token = torch.zeros(patches.shape[0], 1, dtype=patches.dtype, device=patches.device)
    everything = torch.cat([class_token, patches + 1], dim=1)
    rest = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device).scatter_(1, everything, False)
    images, length, width = hidden.shape
    dominant_tokens = hidden[~rest].view(images, dominant, width)
    if contextual == 0:  # the authors' code divides by it; no contextual token is the only reading
        return dominant_tokens, patches.sort(dim=1).values
    remaining = length - dominant
    metric = metric[rest].view(images, remaining, -1)
    hidden_rest = hidden[rest].view(images, remaining, width)
    metric = metric / metric.norm(dim=-1, keepdim=True)
    targets = torch.arange(0, remaining, max(1, remaining // contextual), device=hidden.device)[:contextual]
    members = ~torch.isin(torch.arange(remaining, device=hidden.device), targets)
    similarity = torch.bmm(metric[:, members], metric[:, targets].transpose(1, 2))
    assign = torch.zeros(images, int(members.sum()), contextual, dtype=hidden.dtype, device=hidden.device)
    assign.scatter_(2, similarity.argmax(dim=2, keepdim=True), 1)
    counts = assign.sum(dim=1).clamp(min=1).unsqueeze(-1)
    merged = torch.bmm(assign.transpose(1, 2), hidden_rest[:, members]) / counts
    return torch.cat([dominant_tokens, hidden_rest[:, targets] + merged], dim=1), patches.sort(dim=1).values


def _class_attention_sum_and_metric(
    layer: torch.nn.Module, layer_input: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The class token's attention to every patch summed over heads (``(images, P)``), and every token's keys
    averaged over heads (``(images, 1 + P, head_dim)``), from CLIP ``layer``'s input, in the model's dtype as
    the authors' patched ``CLIPAttention_forward`` computes them (queries scaled before the product)."""
    attn = layer.self_attn
    hidden = layer.layer_norm1(layer_input)
    images, length, _ = hidden.shape
    query = (attn.q_proj(hidden[:, :1]) * attn.scale).view(images, 1, -1, attn.head_dim).transpose(1, 2)
    keys = attn.k_proj(hidden).view(images, length, -1, attn.head_dim).transpose(1, 2)
    probs = torch.matmul(query, keys.transpose(-1, -2)).softmax(dim=-1)
    return probs[:, :, 0, 1:].sum(dim=1), keys.mean(dim=1)


def _select(
    model: PreTrainedModel, states: tuple[torch.Tensor, ...], step: VisionZipStep
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
