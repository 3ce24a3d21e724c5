"""Average pooling of each image's feature grid before the language model: the downsampling baseline.

The unified pruning benchmarks find that plainly lowering an image's resolution is a strong baseline for
token pruning; this method is that baseline inside the same engine, at any budget. Each image's grid of
projected features (what the language model would read) is average-pooled to ``g x g`` tokens with
``g = round(side * sqrt(ratio))`` (at least 1), ``side`` being the tower's grid side: 2x2 windows on
LLaVA-1.5's 24 x 24 grid at ``ratio=0.25`` (144 tokens), 3x3 at ``ratio=1/9`` (64). Windows are torch's
adaptive-pooling windows (rows ``floor(i * side / g)`` to ``ceil((i + 1) * side / g)``), so a ``g`` that does
not divide ``side`` gives windows one row or column wider, some overlapping, never a patch left out.

**LLaVA-NeXT**: every tile (the base image and each crop) is pooled on its own grid, so a pooled token never
mixes two tiles. The model's own packing (``pack_image_features``) is run once on each patch's (tile, row,
column) label to learn which placeholder holds which patch, so unpadding is the model's: a window whose
patches were all cut away gives no token, one partly cut averages the patches left. A row's newline token is
kept when its row holds a pooled token, so the pooled grid keeps one newline per row as a smaller image
would.

**Where the pooled tokens go**: each pooled token takes the placeholder slot of its window's first patch (the
top-left one left after unpadding) with that slot's position id; the other placeholders are dropped before
layer 0, as for VisionZip-style selection (:mod:`himap_lmms.pruning.kernels.visionzip`), so the engine treats pooling
as a step before layer 0 that keeps exactly those slots.
"""

from __future__ import annotations

import math

import torch
from transformers import PreTrainedModel

from himap_lmms.compat import image_features_per_image, image_token_id, llava_model_of
from himap_lmms.llava_forward import write_image_features
from himap_lmms.pruning.pool import PooledStep, pooled_side

_NEWLINE = -1


def check_pool(model: PreTrainedModel) -> None:
    """Pooling needs a square patch grid per tile: LLaVA-1.5 or LLaVA-NeXT reading the patches without the
    class token (``vision_feature_select_strategy='default'``)."""
    config = model.config
    if config.model_type == "llava_onevision":  # docs/models.md
        raise ValueError(
            "method=pool does not run on llava_onevision (LLaVA-OneVision) yet: its packing can downsample a tile "
            "grid (vision_aspect_ratio), which the per-tile windows of LLaVA-NeXT's pooling do not follow"
        )
    if config.model_type not in ("llava", "llava_next"):
        raise ValueError(f"method=pool supports llava and llava_next checkpoints, not {config.model_type!r}")
    if config.vision_feature_select_strategy != "default":
        raise ValueError(
            "method=pool needs vision_feature_select_strategy='default' (patch tokens only, a square grid), "
            f"got {config.vision_feature_select_strategy!r}"
        )


def grid_side(model: PreTrainedModel) -> int:
    """Patches per side of one tile's grid (24 for CLIP-L/14 at 336 px)."""
    vision = model.config.vision_config
    return vision.image_size // vision.patch_size


def pool_embeddings(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    pixel_values: torch.Tensor | None,
    image_sizes: torch.Tensor | None,
    step: PooledStep,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input embeddings with each image's pooled tokens at their slots, and ``(batch, n)`` which slots to keep."""
    embeds = model.get_input_embeddings()(input_ids)
    chosen = torch.zeros(input_ids.shape, dtype=torch.bool, device=input_ids.device)
    if pixel_values is None or pixel_values.numel() == 0:
        return embeds, chosen
    features = image_features_per_image(model, pixel_values.to(embeds.dtype), image_sizes)
    side = grid_side(model)
    pooled, kept = [], []
    for image_features, labels in zip(features, slot_labels(model, [len(f) for f in features], image_sizes)):
        vectors, keep = pool_grid(image_features, labels.to(image_features.device), side, step.ratio)
        pooled.append(vectors)
        kept.append(keep)
    embeds = write_image_features(model, input_ids, embeds, torch.cat(pooled))
    chosen[input_ids == image_token_id(model.config)] = torch.cat(kept).to(chosen.device)
    return embeds, chosen


def slot_labels(model: PreTrainedModel, lengths: list[int], image_sizes: torch.Tensor | None) -> list[torch.Tensor]:
    """Per image, ``(slots, 3)`` long: the (tile, row, column) of the patch each placeholder holds, ``-1`` for a
    newline token. ``lengths`` are the images' placeholder counts, checked against the labels."""
    side = grid_side(model)
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    if model.config.model_type == "llava":
        labels = [torch.stack([torch.zeros(side * side, dtype=torch.long), rows.flatten(), cols.flatten()], 1)]
        labels *= len(lengths)
    else:
        from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

        grids = []
        for size in image_sizes:
            tiles = image_size_to_num_patches(
                size, model.config.image_grid_pinpoints, model.config.vision_config.image_size
            )
            tile = torch.arange(tiles)[:, None].expand(tiles, side * side)
            grids.append(
                torch.stack([tile, rows.flatten().expand(tiles, -1), cols.flatten().expand(tiles, -1)], -1).double()
            )
        newline = torch.full((3,), float(_NEWLINE), dtype=torch.float64)
        packed, _ = llava_model_of(model).pack_image_features(grids, image_sizes, "default", image_newline=newline)
        labels = [p.round().long() for p in packed]
    for image, (label, length) in enumerate(zip(labels, lengths)):
        if len(label) != length:
            raise ValueError(
                f"method=pool: image {image} has {length} feature tokens but its grid of {side} x {side} patches per "
                f"tile gives {len(label)}: the checkpoint's features are not the patch grid pooling expects"
            )
    return labels


def pool_grid(
    features: torch.Tensor, labels: torch.Tensor, side: int, ratio: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """One image: ``features`` ``(slots, hidden)`` with each window's mean written at its first slot, and
    ``(slots,)`` the slots kept (those, plus the newline ending each row that holds one)."""
    g = pooled_side(side, ratio)
    starts = torch.tensor([math.floor(i * side / g) for i in range(g)], device=labels.device)
    ends = torch.tensor([math.ceil((i + 1) * side / g) for i in range(g)], device=labels.device)
    tile, row, col = labels.unbind(dim=1)
    patch = tile != _NEWLINE
    in_row = (row[:, None] >= starts) & (row[:, None] < ends)  # (slots, g): the window rows holding each patch
    in_col = (col[:, None] >= starts) & (col[:, None] < ends)
    tiles = int(tile.max()) + 1
    on_tile = tile[:, None] == torch.arange(tiles, device=labels.device)
    # (slots, windows): window (t, i, j) holds the patch of tile t in window row i and window column j.
    member = (on_tile[:, :, None, None] & in_row[:, None, :, None] & in_col[:, None, None, :]).flatten(1)
    member &= patch[:, None]
    member = member[:, member.any(dim=0)]  # windows unpadding emptied give no token
    exact = torch.promote_types(features.dtype, torch.float32)  # average in at least float32
    weights = member.to(exact)
    means = (weights.T @ features.to(exact)) / weights.sum(dim=0)[:, None]
    first = weights.argmax(dim=0)  # the first member slot of each window
    pooled = features.clone()
    pooled[first] = means.to(features.dtype)
    keep = torch.zeros(len(labels), dtype=torch.bool, device=labels.device)
    keep[first] = True
    newline = ~patch
    if bool(newline.any()):
        line = torch.cumsum(newline.long(), dim=0) - newline.long()  # a newline ends the line it belongs to
        holds = torch.zeros(int(line.max()) + 1, dtype=torch.bool, device=labels.device)
        holds[line[keep]] = True
        keep |= newline & holds[line]
    return pooled, keep
