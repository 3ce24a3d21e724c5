"""What the pruning engine does differently per model family: input merge, position ids, and the methods it refuses.

The engine's loop (:mod:`himap_lmms.pruning.engine`) is the same for every family; a family only says how the
prompt becomes embeddings and position ids, and where decoding continues after it. :func:`family_of` picks one
from the model's ``model_type``, so the engine never tests the family itself.

- LLaVA-1.5 / LLaVA-NeXT / LLaVA-OneVision (:class:`LlavaFamily`): one position per token, counted over the real
  (non-padding) tokens as transformers' ``generate`` counts them; decoding goes on from the last prompt position.
- Qwen2.5-VL (:class:`Qwen2_5_VLFamily`): three position components per token (temporal, height, width) from
  the model's own ``get_rope_index``, so an image's merged 2 x 2 patches sit on a grid and the text after it
  starts past the grid's largest side; decoding goes on from the model's own ``rope_deltas``. Pruning keeps each
  kept token's three components as the unpruned model assigned them. A "token" is one merged patch.

The position ids are ``(batch, n)`` or ``(components, batch, n)``: the engine gathers them along the last
dimension, so it handles both without knowing which.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from himap_lmms.compat import QWEN2_5_VL_IN_ENGINE, VERSION, qwen2_5_vl_image_features, qwen2_5_vl_rope_index
from himap_lmms.llava_forward import embed_multimodal, position_ids_of, write_image_features
from himap_lmms.pruning.config import PruningConfig


class LlavaFamily:
    """LLaVA-1.5, LLaVA-NeXT and LLaVA-OneVision: transformers' LLaVA input merge (OneVision's with its
    processor's ``batch_num_images``) and 1-D positions over the real tokens."""

    def check(self, model: PreTrainedModel, config: PruningConfig) -> None:
        """Every method runs on LLaVA (a method's own ``check`` may still refuse a checkpoint)."""

    def embed(
        self,
        model: PreTrainedModel,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None,
        image_sizes: torch.Tensor | None,
        image_grid_thw: torch.Tensor | None,
        batch_num_images: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if image_grid_thw is not None:
            raise ValueError(f"image_grid_thw is Qwen2.5-VL's; {type(model).__name__} takes image_sizes")
        return embed_multimodal(model, input_ids, pixel_values, image_sizes, batch_num_images)

    def positions(
        self,
        model: PreTrainedModel,
        input_ids: torch.Tensor,
        valid: torch.Tensor,
        image_grid_thw: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(batch, n)`` position ids and ``(batch, 1)``: the position the first new token follows."""
        position_ids = position_ids_of(valid)
        return position_ids, position_ids[:, -1:]


class Qwen2_5_VLFamily:
    """Qwen2.5-VL: the model's own image features (``image_grid_thw``) and 3-component rotary positions.

    Refused here (``ValueError`` naming method and model):

    - steps that renumber the kept tokens 0..n'-1 (PyramidDrop's and VisionZip's authors' rule): on 3-component
      positions "renumbering" has no definition (an image's tokens share temporal ids and repeat height and width
      ids), and neither method's authors ported it to Qwen2.5-VL; ``variant=prior`` keeps the original positions.

    DART's authors did port their selection to Qwen2-VL (``Qwen2-VL/Qwen2VL_DART/modeling_qwen2_vl_self.py``,
    ``get_retained_image_token``): it indexes tokens by their place in the prompt, not by rotary position, and
    keeps each kept token's three position components (``position_ids[:, :, keep_indexs]``), which is what the
    engine does on this family.
    """

    name = "Qwen2.5-VL (Qwen2_5_VLForConditionalGeneration)"

    def __init__(self) -> None:
        if not QWEN2_5_VL_IN_ENGINE:
            raise ValueError(
                f"transformers {VERSION}: the pruning engine runs {self.name} on transformers 5 (tested 5.12.1 "
                "and 5.24.0), whose rope_deltas it continues decoding from; install transformers>=5"
            )

    def check(self, model: PreTrainedModel, config: PruningConfig) -> None:
        for step in config.steps:
            if step.positions == "renumber":
                raise ValueError(
                    f"method={config.method} renumbers the kept tokens' positions 0..n'-1, which is undefined for "
                    f"{self.name}'s 3-component rotary positions (no authors' port defines it): use variant=prior, "
                    "which keeps each token's positions"
                )

    def embed(
        self,
        model: PreTrainedModel,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None,
        image_sizes: torch.Tensor | None,
        image_grid_thw: torch.Tensor | None,
        batch_num_images: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if image_sizes is not None or batch_num_images is not None:
            given = "image_sizes" if image_sizes is not None else "batch_num_images"
            raise ValueError(f"{given} is LLaVA-NeXT's or LLaVA-OneVision's; {self.name} takes image_grid_thw")
        embeds = model.get_input_embeddings()(input_ids)
        if pixel_values is None or pixel_values.numel() == 0:
            return embeds
        if image_grid_thw is None:
            raise ValueError(f"{self.name} needs image_grid_thw (the processor's) with pixel_values")
        features = qwen2_5_vl_image_features(model, pixel_values, image_grid_thw)
        return write_image_features(model, input_ids, embeds, features)

    def positions(
        self,
        model: PreTrainedModel,
        input_ids: torch.Tensor,
        valid: torch.Tensor,
        image_grid_thw: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(3, batch, n)`` position ids from ``get_rope_index`` and ``(3, batch, 1)``: the position the first new
        token follows, which transformers' generate reaches as (real tokens - 1) + ``rope_deltas`` on all three."""
        position_ids, rope_deltas = qwen2_5_vl_rope_index(model, input_ids, image_grid_thw, valid)
        last = valid.sum(dim=1, keepdim=True) - 1 + rope_deltas.to(valid.device)
        return position_ids, last.expand(3, -1, -1)


_FAMILIES = {"qwen2_5_vl": Qwen2_5_VLFamily}


def family_of(model: PreTrainedModel) -> LlavaFamily | Qwen2_5_VLFamily:
    """The family of ``model``, by its config's ``model_type`` (LLaVA's for every type not listed)."""
    return _FAMILIES.get(model.config.model_type, LlavaFamily)()
