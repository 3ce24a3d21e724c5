"""LLaVA-1.5 shapes and the one builder of their configs; random-weight models and prompts for cost benchmarks;
LLaVA-OneVision's 7B shape (:data:`ONEVISION_SHAPES`, :func:`onevision_config`).

Every LLaVA this repo makes from scratch is a :class:`LlavaShape` turned into a config by :func:`llava_config`:
the benchmark's random-weight 7B/13B/scaled shapes (:data:`LLAVA_SHAPES`) and the small checkpoints of
:mod:`himap_lmms.tiny_llava` alike. Timing and FLOP counting do not depend on what the weights are, only on the
shapes, so a benchmark can run LLaVA-1.5-7B's or 13B's exact layer shapes without downloading a checkpoint. The
models are the stock transformers classes (``LlavaForConditionalGeneration`` with a CLIP vision tower and a Llama
decoder), so the pruning engine runs them exactly as it runs a real checkpoint. No tokenizer is needed either:
:func:`prompt_inputs` lays out ``[prefix][576 image tokens][text]`` with random text ids, which is all the
engine looks at (it finds the image block from ``image_token_id``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaOnevisionConfig

from himap_lmms.compat import dtype_argument

# LLaVA-1.5's prompt around the image: the reference code hard-codes 35 prefix tokens; a ScienceQA question with
# its options, the instruction and "ASSISTANT:" is about 40 more (docs/method.md: "about 74" in all).
PREFIX_TOKENS = 35
TEXT_TOKENS = 39


@dataclass(frozen=True)
class LlavaShape:
    """The sizes that decide a LLaVA's cost and layout.

    ``vocab`` includes llava-hf's 64 added rows (image and pad tokens); ``kv_heads`` None means multi-head
    attention, as in LLaVA-1.5. ``vision_feature_layer`` is the CLIP layer whose output feeds the projector
    (LLaVA-1.5 reads the penultimate one); ``init_std`` is the decoder's and projector's random-init std.
    """

    name: str
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vision_intermediate: int
    kv_heads: int | None = None
    vocab: int = 32064
    image_token_id: int = 32000
    image_size: int = 336
    patch_size: int = 14
    vision_feature_layer: int = -2
    init_std: float = 0.02
    context: int = 4096  # max_position_embeddings; the adapter refuses longer prompts

    @property
    def num_image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def kv_hidden(self) -> int:
        """Width of the key and value projections (the FLOPs formula's ``d_kv``): ``hidden`` without GQA."""
        return (self.kv_heads or self.heads) * (self.hidden // self.heads)

    def describe(self) -> str:
        kv = f", {self.kv_heads} key-value heads" if self.kv_heads else ""
        return (
            f"{self.name}: decoder {self.layers} x (hidden {self.hidden}, {self.heads} heads{kv}, "
            f"FFN {self.intermediate}), vocab {self.vocab}; CLIP {self.vision_layers} x (hidden {self.vision_hidden}, "
            f"FFN {self.vision_intermediate}), {self.image_size} px / {self.patch_size} = {self.num_image_tokens} "
            "image tokens"
        )


# The real CLIP-L/336 tower of LLaVA-1.5 for the 7B and 13B shapes. The CPU shapes keep its 576 output tokens
# but a two-layer, 64-wide tower: on two cores the real tower alone would take longer than the decoder. Two layers,
# because LLaVA-1.5 reads the second-to-last one (vision_feature_layer=-2): with one, that is the patch embeddings,
# and VisionZip-style selection, which reads the class token's attention in that layer, has no layer to read.
_CLIP_L = {"vision_hidden": 1024, "vision_layers": 24, "vision_heads": 16, "vision_intermediate": 4096}
_CLIP_TINY = {"vision_hidden": 64, "vision_layers": 2, "vision_heads": 2, "vision_intermediate": 256}

LLAVA_SHAPES: dict[str, LlavaShape] = {
    # For tests of the benchmark machinery only: the 12-layer decoder lets HiMAP's K2 = 8 exist.
    "tiny": LlavaShape(
        "tiny", hidden=64, layers=12, heads=4, intermediate=172, vocab=1064, image_token_id=1000,
        vision_hidden=32, vision_layers=2, vision_heads=2, vision_intermediate=64,
    ),
    # A CPU-sized LLaVA: LLaVA-1.5-7B's depth, sequence and width/FFN proportions at a quarter of its width.
    "scaled": LlavaShape("scaled", hidden=1024, layers=32, heads=16, intermediate=2816, **_CLIP_TINY),
    "7b": LlavaShape("7b", hidden=4096, layers=32, heads=32, intermediate=11008, **_CLIP_L),
    "13b": LlavaShape("13b", hidden=5120, layers=40, heads=40, intermediate=13824, **_CLIP_L),
    # Qwen2.5-VL-7B's decoder (grouped-query attention: 28 query heads share 4 key-value heads) in this LLaVA frame:
    # a decoder's cost depends on its shape and token counts only, so the benchmark times its layers as they are
    # (Qwen2's q/k/v biases aside) on the benchmark's 576 image tokens, about a 672 px square through Qwen's ViT.
    "qwen2.5-vl-7b": LlavaShape(
        "qwen2.5-vl-7b", hidden=3584, layers=28, heads=28, kv_heads=4, intermediate=18944, vocab=152064,
        context=32768, **_CLIP_L,
    ),
    # Its CPU-sized version: depth, head ratio and width/FFN proportions kept at a quarter of its width.
    "qwen-scaled": LlavaShape(
        "qwen-scaled", hidden=896, layers=28, heads=7, kv_heads=1, intermediate=4736, context=32768, **_CLIP_TINY
    ),
}  # fmt: skip


def llava_config(shape: LlavaShape, **text_config: Any) -> LlavaConfig:
    """A LLaVA-1.5 config (CLIP tower + 2-layer MLP projector + Llama decoder) of ``shape``.

    ``text_config`` goes to the ``LlamaConfig`` as well (a tokenizer's ``bos_token_id``, ``eos_token_id``,
    ``pad_token_id``).
    """
    return LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=shape.vision_hidden,
            num_hidden_layers=shape.vision_layers,
            num_attention_heads=shape.vision_heads,
            intermediate_size=shape.vision_intermediate,
            image_size=shape.image_size,
            patch_size=shape.patch_size,
            projection_dim=shape.vision_hidden,  # unused by LLaVA (no CLIP projection head); set for stable configs
        ),
        text_config=LlamaConfig(
            hidden_size=shape.hidden,
            num_hidden_layers=shape.layers,
            num_attention_heads=shape.heads,
            num_key_value_heads=shape.kv_heads or shape.heads,
            intermediate_size=shape.intermediate,
            vocab_size=shape.vocab,
            max_position_embeddings=shape.context,
            initializer_range=shape.init_std,
            **text_config,
        ),
        image_token_index=shape.image_token_id,
        vision_feature_layer=shape.vision_feature_layer,
        image_seq_length=shape.num_image_tokens,
    )


def build_random_llava(
    shape: LlavaShape,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    attn_implementation: str = "sdpa",
    seed: int = 0,
) -> LlavaForConditionalGeneration:
    """A LLaVA of ``shape`` with transformers' random initialisation, created directly in ``dtype`` on ``device``.

    Creating it in the target dtype and device (rather than float32 on the CPU, then converting) keeps the 13B
    shape at its bf16 size on the GPU and avoids copying 26 GB through host memory.
    """
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlavaForConditionalGeneration._from_config(
            llava_config(shape), **dtype_argument(dtype), attn_implementation=attn_implementation
        )
    return model.eval()


def prompt_inputs(
    shape: LlavaShape,
    batch: int,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    prefix_tokens: int = PREFIX_TOKENS,
    text_tokens: int = TEXT_TOKENS,
    seed: int = 1,
) -> dict[str, torch.Tensor]:
    """A batch of ``[prefix][image block][text]`` prompts with random ids and random pixels, no padding.

    Every sample has the same length, as a benchmark wants: with fixed ``keep`` budgets the pruned sequences
    then stay equal too, so no layer processes padding that the FLOP formula would not count.
    """
    generator = torch.Generator().manual_seed(seed)

    def text(n: int) -> torch.Tensor:
        return torch.randint(3, shape.image_token_id, (batch, n), generator=generator)

    image = torch.full((batch, shape.num_image_tokens), shape.image_token_id)
    input_ids = torch.cat([text(prefix_tokens), image, text(text_tokens)], dim=1)
    pixel_values = torch.randn(batch, 3, shape.image_size, shape.image_size, generator=generator)
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": torch.ones_like(input_ids).to(device),
        "pixel_values": pixel_values.to(device, dtype),
    }


@dataclass(frozen=True)
class OnevisionShape:
    """The sizes that decide a LLaVA-OneVision's cost: a Qwen2 decoder with grouped-query attention (``kv_heads``
    key-value heads) and a SigLIP tower without a class token, every one of whose ``(image_size / patch_size)^2``
    patches is an image token of each AnyRes tile."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vision_intermediate: int
    vocab: int
    image_token_id: int
    image_size: int = 384
    patch_size: int = 14

    @property
    def tokens_per_tile(self) -> int:
        return (self.image_size // self.patch_size) ** 2


# llava-hf/llava-onevision-qwen2-7b-ov-hf: Qwen2-7B's decoder; SigLIP-so400m at 384 px, stored with 26 of its 27
# layers (the last is never read: transformers' LlavaOnevisionConfig defaults, configuration_llava_onevision.py).
ONEVISION_SHAPES: dict[str, OnevisionShape] = {
    "onevision-7b": OnevisionShape(
        "onevision-7b", hidden=3584, layers=28, heads=28, kv_heads=4, intermediate=18944, vision_hidden=1152,
        vision_layers=26, vision_heads=16, vision_intermediate=4304, vocab=152128, image_token_id=151646,
    ),
}  # fmt: skip


def onevision_config(shape: OnevisionShape) -> LlavaOnevisionConfig:
    """A LLaVA-OneVision config of ``shape``: the last SigLIP layer's patches, all of them (no class token)."""
    return LlavaOnevisionConfig(
        text_config={
            "model_type": "qwen2",
            "hidden_size": shape.hidden,
            "num_hidden_layers": shape.layers,
            "num_attention_heads": shape.heads,
            "num_key_value_heads": shape.kv_heads,
            "intermediate_size": shape.intermediate,
            "vocab_size": shape.vocab,
        },
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": shape.vision_hidden,
            "num_hidden_layers": shape.vision_layers,
            "num_attention_heads": shape.vision_heads,
            "intermediate_size": shape.vision_intermediate,
            "image_size": shape.image_size,
            "patch_size": shape.patch_size,
        },
        image_token_index=shape.image_token_id,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )
