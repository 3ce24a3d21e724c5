"""Shared fixtures: a tiny LLaVA with LLaVA-1.5's 576 image tokens, built and saved locally once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from transformers import AutoProcessor, LlavaForConditionalGeneration

from himap_lmms.tiny_llava import build_tiny_llava

QUESTIONS = [
    "What colour is the square?\nA. red\nB. blue\nAnswer with the option's letter from the given choices directly.",
    "Context: Look at the picture.\nHow many circles are there?\nA. one\nB. two\nC. three\nD. four\n"
    "Answer with the option's letter from the given choices directly.",
    "Which shape is on the left?\nA. circle\nB. triangle\nC. square\n"
    "Answer with the option's letter from the given choices directly.",
]


def draw_image(seed: int, size: int = 336) -> Image.Image:
    """A deterministic picture with a few coloured boxes, so image tokens differ from each other."""
    generator = torch.Generator().manual_seed(seed)
    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = torch.randint(0, size - 40, (2,), generator=generator).tolist()
        colour = tuple(torch.randint(0, 256, (3,), generator=generator).tolist())
        draw.rectangle([x, y, x + 40, y + 40], fill=colour)
    return image


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llava(tmp_path_factory.mktemp("tiny_llava"), corpus=QUESTIONS)


@pytest.fixture(scope="session")
def processor(tiny_llava_dir: Path):
    return AutoProcessor.from_pretrained(tiny_llava_dir)


@pytest.fixture(scope="session")
def model64(tiny_llava_dir: Path) -> LlavaForConditionalGeneration:
    """float64 SDPA model: rankings of near-uniform random attention are then stable across code paths."""
    return LlavaForConditionalGeneration.from_pretrained(tiny_llava_dir, dtype=torch.float64).eval()


def encode(processor, questions: list[str], images: list[Image.Image | None], dtype=torch.float64) -> dict:
    """Left-padded inputs in the vicuna format; a None image gives a text-only prompt."""
    prompts = [
        processor.apply_chat_template(
            [{"role": "user", "content": ("<image>\n" if image is not None else "") + question}],
            add_generation_prompt=True,
            tokenize=False,
        )
        for question, image in zip(questions, images)
    ]
    present = [image for image in images if image is not None]
    inputs = processor(
        images=present or None, text=prompts, return_tensors="pt", padding=True, add_special_tokens=False
    )
    return dict(inputs.to("cpu", dtype))
