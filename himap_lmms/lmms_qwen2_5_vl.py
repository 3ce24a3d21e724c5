"""``himap_qwen2_5_vl``: :class:`~himap_lmms.lmms_model.HimapLlava` for transformers' Qwen2.5-VL.

Everything but the prompt and the processor is ``himap_llava``'s: the model_args (``method`` and its knobs,
``dtype``, ``batch_size``, ``cost_log``, ...), batching, decoding, cost records and errors. What follows stock
lmms-eval's ``qwen2_5_vl`` chat class (``lmms_eval/models/chat/qwen2_5_vl.py``, docs/models.md) instead:

- the prompt: one user turn of the images then the context, through the processor's own chat template
  (``chat_template=model``, the default here), generation prompt added;
- ``min_pixels`` / ``max_pixels`` (the same defaults, 256 and 2048 merged 28 px patches) go to the processor (as
  its ``size``), which resizes each image to a multiple of 28 px a side within that area. The stock class resizes
  with ``qwen_vl_utils`` first, to the same size; an image needing no resize reaches the model identically.

The stock class always loads bfloat16; here ``dtype`` says (``auto``: the checkpoint's).
"""

from __future__ import annotations

from typing import Any

from transformers import Qwen2_5_VLForConditionalGeneration

from himap_lmms.lmms_model import PROCESSOR_TEMPLATE, HimapLlava
from himap_lmms.values import parse_int

# lmms-eval's defaults (lmms_eval/models/simple/qwen2_5_vl.py, which the chat class inherits)
MIN_PIXELS, MAX_PIXELS = 256 * 28 * 28, 2048 * 28 * 28


class HimapQwen2_5_VL(HimapLlava):
    """Qwen2.5-VL with visual-token pruning, for ``lmms-eval --model himap_qwen2_5_vl``."""

    name = "himap_qwen2_5_vl"
    model_classes = {"qwen2_5_vl": Qwen2_5_VLForConditionalGeneration}
    probes = False

    def __init__(
        self,
        pretrained: str = "Qwen/Qwen2.5-VL-7B-Instruct",
        chat_template: str = PROCESSOR_TEMPLATE,
        min_pixels: int | str = MIN_PIXELS,
        max_pixels: int | str = MAX_PIXELS,
        **kwargs: Any,
    ) -> None:
        self.min_pixels = parse_int("min_pixels", min_pixels, minimum=1)
        self.max_pixels = parse_int("max_pixels", max_pixels, minimum=self.min_pixels)
        super().__init__(pretrained=pretrained, chat_template=chat_template, **kwargs)

    def _processor_arguments(self) -> dict[str, Any]:
        """The pixel range as the image processor's ``size`` (its ``min_pixels``/``max_pixels`` keywords, which the
        stock class passes, are deprecated aliases of it in transformers 5)."""
        return {"size": {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels}}

    def _prompt(self, context: str, num_images: int) -> str:
        content = [{"type": "image"}] * num_images + [{"type": "text", "text": context}]
        return self.processor.apply_chat_template(
            [{"role": "user", "content": content}], chat_template=self.chat_template, add_generation_prompt=True
        )
