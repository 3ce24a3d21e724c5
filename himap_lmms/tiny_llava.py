"""Build small LLaVA checkpoints locally: same classes as llava-hf, no hub download.

Real LLaVA weights cannot be fetched here, so tests, the demo and the trained testbed all start from a
checkpoint made by :func:`build_tiny_llava`: a CLIP vision tower, the LLaVA projector and a Llama language
model, plus a SentencePiece-style BPE tokenizer (``▁`` word markers, as Llama's) trained on a small corpus,
a CLIP image processor and a :class:`~transformers.LlavaProcessor` carrying a vicuna chat template.
The result is written with ``save_pretrained`` and loaded back through the ordinary ``from_pretrained`` path.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from himap_lmms.prompting import SYSTEM_PROMPT, VICUNA_CHAT_TEMPLATE

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]

_BASE_CORPUS = [
    SYSTEM_PROMPT,
    "USER: ASSISTANT: Answer with the option's letter from the given choices directly.",
    "Context: Question: Options: A. B. C. D. E. A B C D E",
    "What colour is the shape? Which shape is on the left? How many objects are there?",
]


@dataclass(frozen=True)
class TinyLlavaSpec:
    """Shape of a small LLaVA. Defaults give LLaVA-1.5's 576 image tokens (336 px, patch 14)."""

    image_size: int = 336
    patch_size: int = 14
    vision_hidden: int = 32
    vision_layers: int = 1
    vision_heads: int = 2
    text_hidden: int = 64
    text_layers: int = 12
    text_heads: int = 4
    text_kv_heads: int = 4
    text_intermediate: int = 128
    vocab_size: int = 600
    text_init_std: float = 0.02  # std of the language model's and projector's random init (transformers' default)
    seed: int = 0

    @property
    def num_image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


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
    )
    fast.chat_template = VICUNA_CHAT_TEMPLATE
    return fast


def build_processor(spec: TinyLlavaSpec, tokenizer: PreTrainedTokenizerFast) -> LlavaProcessor:
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": spec.image_size},
        crop_size={"height": spec.image_size, "width": spec.image_size},
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=spec.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=VICUNA_CHAT_TEMPLATE,
    )


def build_config(spec: TinyLlavaSpec, tokenizer: PreTrainedTokenizerFast) -> LlavaConfig:
    vision = CLIPVisionConfig(
        hidden_size=spec.vision_hidden,
        intermediate_size=spec.vision_hidden * 2,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=spec.vision_heads,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        projection_dim=spec.vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.text_hidden,
        intermediate_size=spec.text_intermediate,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.text_heads,
        num_key_value_heads=spec.text_kv_heads,
        max_position_embeddings=2048,
        initializer_range=spec.text_init_std,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        image_seq_length=spec.num_image_tokens,
    )


def build_tiny_llava(out_dir: str | Path, spec: TinyLlavaSpec = TinyLlavaSpec(), corpus: Iterable[str] = ()) -> Path:
    """Write a randomly initialised LLaVA, its tokenizer and its processor to ``out_dir``."""
    out_dir = Path(out_dir)
    tokenizer = build_tokenizer(corpus, spec.vocab_size)
    processor = build_processor(spec, tokenizer)
    torch.manual_seed(spec.seed)
    model = LlavaForConditionalGeneration(build_config(spec, tokenizer))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
