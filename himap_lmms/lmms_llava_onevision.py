"""``himap_llava_onevision``: :class:`~himap_lmms.lmms_model.HimapLlava` for LLaVA-OneVision checkpoints
(transformers' ``LlavaOnevisionForConditionalGeneration``; lmms-eval's own name for the family is
``llava_onevision``).

Only the checkpoints it loads and its default prompt differ from ``himap_llava``'s, so the model_args, cost records
and errors are the same. The prompt is the one stock ``llava_hf``'s chat class sends (docs/models.md): the
checkpoint's own chat template over one user turn holding an image part per image, then the text. Like stock
``llava_hf``, the processor gets one flat list of images, so every image of a multi-image doc is tiled.
"""

from __future__ import annotations

from typing import Any

from transformers import LlavaOnevisionForConditionalGeneration

from himap_lmms.lmms_model import PROCESSOR_TEMPLATE, HimapLlava
from himap_lmms.prompting import content_parts_prompt


class HimapLlavaOnevision(HimapLlava):
    """LLaVA-OneVision with visual-token pruning, for ``lmms-eval --model himap_llava_onevision``."""

    name = "himap_llava_onevision"
    model_classes = {"llava_onevision": LlavaOnevisionForConditionalGeneration}
    probes = False

    def __init__(
        self,
        pretrained: str = "llava-hf/llava-onevision-qwen2-7b-ov-hf",
        chat_template: str = PROCESSOR_TEMPLATE,
        **kwargs: Any,
    ) -> None:
        super().__init__(pretrained=pretrained, chat_template=chat_template, **kwargs)

    def _prompt(self, context: str, num_images: int) -> str:
        """Images as content parts, then the text: the messages stock ``llava_hf``'s chat class sends (OneVision's
        hub template renders only list contents)."""
        return content_parts_prompt(self.tokenizer, context, num_images, self.chat_template)
