"""Build small LLaVA checkpoints locally: same classes as llava-hf, no hub download.

Real LLaVA weights cannot be fetched here, so tests, the demo and the trained testbed all start from a
checkpoint made by :func:`build_tiny_llava`: a CLIP vision tower, the LLaVA projector and a Llama language
model of a :class:`~himap_lmms.model_shapes.LlavaShape` (configured by the same builder as the benchmark's shapes),
plus a SentencePiece-style BPE tokenizer (``▁`` word markers, as Llama's) trained on a small corpus,
a CLIP image processor and a :class:`~transformers.LlavaProcessor` carrying a vicuna chat template.
The result is written with ``save_pretrained`` and loaded back through the ordinary ``from_pretrained`` path.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    CLIPImageProcessor,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from himap_lmms.compat import save_model, save_processor
from himap_lmms.model_shapes import LlavaShape, llava_config
from himap_lmms.prompting import SYSTEM_PROMPT, VICUNA_CHAT_TEMPLATE

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]

_BASE_CORPUS = [
    SYSTEM_PROMPT,
    "USER: ASSISTANT: Answer with the option's letter from the given choices directly.",
    "Context: Question: Options: A. B. C. D. E. A B C D E",
    "What colour is the shape? Which shape is on the left? How many objects are there?",
]


# Defaults of the tests' checkpoints: LLaVA-1.5's 576 image tokens (336 px, patch 14) and 12 decoder layers (so
# HiMAP's K2 = 8 exists) at a width that runs in milliseconds. ``vocab`` is the tokenizer's target size; the
# config gets the trained tokenizer's real one. A one-layer tower: features come from its last layer.
TINY_CHECKPOINT = LlavaShape(
    "tiny-checkpoint", hidden=64, layers=12, heads=4, intermediate=128, vocab=600,
    vision_hidden=32, vision_layers=1, vision_heads=2, vision_intermediate=64, vision_feature_layer=-1,
    context=2048,
)  # fmt: skip


def build_tokenizer(corpus: Iterable[str], vocab_size: int, isolate_newlines: bool = False) -> PreTrainedTokenizerFast:
    """Train a Llama-like BPE tokenizer (``▁`` marks a word start) on ``corpus``.

    Every printable ASCII character is in the initial alphabet, so any English prompt tokenizes without
    unknown pieces; frequent words of the corpus become single tokens. With ``isolate_newlines`` a line
    break is a token of its own, as ``<0x0A>`` is in Llama's tokenizer: otherwise it glues onto its
    neighbours (``"▁red\nB."``), so an option's text and the next option's letter become one piece.
    """
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.NFKC()
    pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    if isolate_newlines:
        pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("\n", behavior="isolated"), pre_tokenizer])
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=list(string.printable.strip()) + ["▁"],
        show_progress=False,
    )
    # Option letters must be single pieces ("▁A", as Llama emits them) whatever the corpus, so that an
    # answer is one token; repeating them makes BPE merge each with its word-start marker.
    letters = [" ".join(string.ascii_uppercase)] * 50
    tokenizer.train_from_iterator([*_BASE_CORPUS, *letters, *corpus], trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
        padding_side="left",
        add_bos_token=False,
        # Llama's own tokenizer returns just these; a generic one would add token_type_ids, which LLaVA never reads.
        model_input_names=["input_ids", "attention_mask"],
    )
    fast.chat_template = VICUNA_CHAT_TEMPLATE
    return fast


def build_processor(shape: LlavaShape, tokenizer: PreTrainedTokenizerFast) -> LlavaProcessor:
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": shape.image_size},
        crop_size={"height": shape.image_size, "width": shape.image_size},
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=shape.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=VICUNA_CHAT_TEMPLATE,
    )


def build_config(shape: LlavaShape, tokenizer: PreTrainedTokenizerFast) -> LlavaConfig:
    """The config of ``shape`` with the tokenizer's vocabulary size, image token and special token ids."""
    shape = replace(shape, vocab=len(tokenizer), image_token_id=tokenizer.convert_tokens_to_ids("<image>"))
    return llava_config(
        shape,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_tiny_llava(
    out_dir: str | Path, shape: LlavaShape = TINY_CHECKPOINT, corpus: Iterable[str] = (), seed: int = 0
) -> Path:
    """Write a randomly initialised LLaVA of ``shape``, its tokenizer and its processor to ``out_dir``."""
    out_dir = Path(out_dir)
    tokenizer = build_tokenizer(corpus, shape.vocab)
    processor = build_processor(shape, tokenizer)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(build_config(shape, tokenizer))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    save_model(model, out_dir)
    save_processor(processor, out_dir)
    return out_dir
