"""Where the prefix, the image block and the text of one LLaVA prompt are.

The sequence layout (``docs/method.md``) is ``[prefix][image tokens][text]``. The positions come from the prompt itself
(``input_ids == image_token_id``) rather than from LLaVA-1.5's fixed 35 + 576 split, so other chat
templates, padding and models with another image-token count (LLaVA-NeXT) get the right groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

GROUPS = ("prefix", "image", "text")


@dataclass(frozen=True)
class SequenceLayout:
    """Boolean masks over the positions of one sample; padding belongs to no group.

    ``prefix`` is every real position before the first image token, ``image`` every image token and ``text``
    every real position after the last image token. With several images, the few non-image tokens between
    them are in no group: they are neither instruction nor picture.
    """

    prefix: torch.Tensor
    image: torch.Tensor
    text: torch.Tensor

    def group(self, name: str) -> torch.Tensor:
        if name not in GROUPS:
            raise ValueError(f"group={name!r} is not one of {', '.join(GROUPS)}")
        return getattr(self, name)

    @property
    def sizes(self) -> dict[str, int]:
        return {name: int(self.group(name).sum()) for name in GROUPS}

    @property
    def length(self) -> int:
        return self.image.shape[0]


def sequence_layout(input_ids: torch.Tensor, image_token_id: int, valid: torch.Tensor | None = None) -> SequenceLayout:
    """Layout of one sample (``input_ids`` of shape ``(seq,)``); ``valid`` marks non-padding positions."""
    if input_ids.dim() != 1:
        raise ValueError(f"input_ids must be one sample of shape (seq,), got shape {tuple(input_ids.shape)}")
    valid = torch.ones_like(input_ids, dtype=torch.bool) if valid is None else valid.bool()
    image = (input_ids == image_token_id) & valid
    if not bool(image.any()):
        raise ValueError(f"the prompt has no image token (image_token_id={image_token_id}): nothing to probe")
    positions = torch.arange(input_ids.shape[0], device=input_ids.device)
    image_positions = positions[image]
    prefix = (positions < image_positions[0]) & valid
    text = (positions > image_positions[-1]) & valid
    return SequenceLayout(prefix=prefix, image=image, text=text)


def batch_layouts(
    input_ids: torch.Tensor, image_token_id: int, attention_mask: torch.Tensor | None = None
) -> list[SequenceLayout]:
    """One :class:`SequenceLayout` per row of a ``(batch, seq)`` batch."""
    if attention_mask is None:
        return [sequence_layout(row, image_token_id) for row in input_ids]
    return [sequence_layout(row, image_token_id, valid) for row, valid in zip(input_ids, attention_mask)]
