"""Tiny Qwen2.5-VL and LLaVA-OneVision checkpoints built locally: transformers' own classes, no hub download.

The field reports token pruning on these two families next to LLaVA-1.5. Their real weights cannot be fetched
here, so tests build random ones of the same classes with :func:`build_tiny_qwen2_5_vl` and
:func:`build_tiny_llava_onevision`: a byte-level BPE tokenizer (as Qwen2's) trained on a small corpus with the
family's special tokens, the family's image processor and processor with a ChatML chat template, and a decoder with
grouped-query attention (Qwen2 layers, biases in q/k/v). Each is written with ``save_pretrained`` and loads back
through ``AutoProcessor`` / ``AutoModelForImageTextToText``, the path a hub id takes.

What differs from LLaVA-1.5 and matters to pruning: Qwen2.5-VL merges 2 x 2 ViT patches into one image token,
its image-token count follows each image's resolution (``image_grid_thw``), and its rotary positions have three
components per token (``rope_deltas`` carries decoding on); LLaVA-OneVision has a SigLIP tower (no class token),
AnyRes tiles and an image-newline token per row of its packed grid.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessor,
    LlavaOnevisionProcessor,
    LlavaOnevisionVideoProcessor,
    PreTrainedTokenizerFast,
)

from himap_lmms.prompting import SYSTEM_PROMPT

PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
QWEN_VISION_TOKENS = {
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
    "vision_start_token": "<|vision_start|>",
    "vision_end_token": "<|vision_end|>",
}
ONEVISION_VISION_TOKENS = {"image_token": "<image>", "video_token": "<video>"}


def chatml_template(image_placeholder: str) -> str:
    """A ChatML chat template (Qwen's and LLaVA-OneVision's format) that writes ``image_placeholder`` for every
    image part of a message and the assistant's turn opener on ``add_generation_prompt``."""
    return (
        "{% for message in messages %}" + IM_START + "{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
        "{% for part in message['content'] %}"
        "{% if part['type'] == 'image' %}" + image_placeholder + "{% elif part['type'] == 'text' %}{{ part['text'] }}"
        "{% endif %}{% endfor %}{% endif %}" + IM_END + "\n{% endfor %}"
        "{% if add_generation_prompt %}" + IM_START + "assistant\n{% endif %}"
    )


def build_bytelevel_tokenizer(
    corpus: Iterable[str], vocab_size: int, vision_tokens: dict[str, str], chat_template: str
) -> PreTrainedTokenizerFast:
    """A Qwen2-like byte-level BPE tokenizer: any text tokenizes, special tokens are single ids, left padding."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, IM_START, IM_END, *vision_tokens.values()],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    base = [SYSTEM_PROMPT, "system user assistant", "Answer with the option's letter from the given choices directly."]
    tokenizer.train_from_iterator([*base, *corpus], trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=IM_END,
        pad_token=PAD,
        padding_side="left",
        extra_special_tokens=vision_tokens,
    )
    fast.chat_template = chat_template
    return fast


def _decoder_config(tokenizer: PreTrainedTokenizerFast, layers: int, **extra) -> dict:
    """A 12-layer Qwen2 decoder with grouped-query attention (4 query heads share 2 key-value heads)."""
    return {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": len(tokenizer),
        "max_position_embeddings": 2048,
        "initializer_range": 0.2,  # wide enough that random weights answer differently per prompt
        "bos_token_id": None,
        "eos_token_id": tokenizer.convert_tokens_to_ids(IM_END),
        "pad_token_id": tokenizer.pad_token_id,
        **extra,
    }


def _save(model: torch.nn.Module, processor, out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def build_tiny_qwen2_5_vl(out_dir: str | Path, corpus: Iterable[str] = (), layers: int = 12, seed: int = 0) -> Path:
    """Write a random Qwen2.5-VL (two-block windowed ViT with 2 x 2 merge, Qwen2 decoder, 3-component rotary
    positions) with its tokenizer and processor to ``out_dir``. Images of 56 to 224 px a side give 4 to 64 image
    tokens each."""
    # Qwen2.5-VL's classes arrived in 4.49: imported here so that LLaVA-OneVision's builder also runs on 4.48.
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    tokenizer = build_bytelevel_tokenizer(corpus, 400, QWEN_VISION_TOKENS, chatml_template(_qwen_image()))
    image_processor = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=224 * 224, patch_size=14, merge_size=2)
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=tokenizer.chat_template,
    )
    token_id = tokenizer.convert_tokens_to_ids
    rope = {"rope_type": "default", "mrope_section": [2, 3, 3]}  # temporal, height, width halves of head_dim 16
    config = Qwen2_5_VLConfig(
        text_config=_decoder_config(tokenizer, layers, rope_scaling=rope),
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,
            "fullatt_block_indexes": [1],
        },
        image_token_id=token_id(QWEN_VISION_TOKENS["image_token"]),
        video_token_id=token_id(QWEN_VISION_TOKENS["video_token"]),
        vision_start_token_id=token_id(QWEN_VISION_TOKENS["vision_start_token"]),
        vision_end_token_id=token_id(QWEN_VISION_TOKENS["vision_end_token"]),
    )
    torch.manual_seed(seed)
    return _save(Qwen2_5_VLForConditionalGeneration(config), processor, out_dir)


def _qwen_image() -> str:
    tokens = QWEN_VISION_TOKENS
    return tokens["vision_start_token"] + tokens["image_token"] + tokens["vision_end_token"]


ONEVISION_TILE = 56  # px: a 4 x 4 grid of 14 px SigLIP patches per tile
ONEVISION_PINPOINTS = [[56, 56], [56, 112], [112, 56], [112, 112]]


def build_tiny_llava_onevision(
    out_dir: str | Path, corpus: Iterable[str] = (), layers: int = 12, seed: int = 0
) -> Path:
    """Write a random LLaVA-OneVision (two-layer SigLIP tower, no class token; AnyRes over 56 px tiles; Qwen2
    decoder) with its tokenizer and processor to ``out_dir``. A 56 px square gives 16 base tokens plus its tile's
    16 and 4 image-newline tokens: 36 image tokens."""
    tokenizer = build_bytelevel_tokenizer(corpus, 400, ONEVISION_VISION_TOKENS, chatml_template("<image>\n"))
    size = {"height": ONEVISION_TILE, "width": ONEVISION_TILE}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=ONEVISION_PINPOINTS),
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(size=size),
        num_image_tokens=(ONEVISION_TILE // 14) ** 2,
        vision_feature_select_strategy="full",
        chat_template=tokenizer.chat_template,
    )
    token_id = tokenizer.convert_tokens_to_ids
    config = LlavaOnevisionConfig(
        text_config={"model_type": "qwen2", **_decoder_config(tokenizer, layers)},
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": ONEVISION_TILE,
            "patch_size": 14,
        },
        # `..._index`, the field on every version: `image_token_id` is only a later alias of it (4.48 ignores it)
        image_token_index=token_id(ONEVISION_VISION_TOKENS["image_token"]),
        video_token_index=token_id(ONEVISION_VISION_TOKENS["video_token"]),
        image_grid_pinpoints=ONEVISION_PINPOINTS,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )
    torch.manual_seed(seed)
    return _save(LlavaOnevisionForConditionalGeneration(config), processor, out_dir)
