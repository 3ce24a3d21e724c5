"""The locally built Qwen2.5-VL and LLaVA-OneVision checkpoints load and run like hub ones."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from himap_lmms.tiny_vlms import build_tiny_llava_onevision, build_tiny_qwen2_5_vl


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    path = build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("qwen2_5_vl"))
    return AutoProcessor.from_pretrained(path), AutoModelForImageTextToText.from_pretrained(path).eval()


@pytest.fixture(scope="module")
def onevision(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    path = build_tiny_llava_onevision(tmp_path_factory.mktemp("llava_onevision"))
    return AutoProcessor.from_pretrained(path), AutoModelForImageTextToText.from_pretrained(path).eval()


def prompt(processor, images: int, question: str = "What colour is the square?") -> str:
    content = [{"type": "image"}] * images + [{"type": "text", "text": question}]
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)


def image_tokens(processor, model, inputs) -> int:
    return int((inputs["input_ids"] == model.config.image_token_id).sum())


def test_qwen_image_tokens_follow_each_images_resolution(qwen) -> None:
    """One token per 2 x 2 merged patch of each image's own grid; two images in a prompt add up."""
    processor, model = qwen
    small, wide = Image.new("RGB", (56, 56), "red"), Image.new("RGB", (168, 84), "blue")
    inputs = processor(text=[prompt(processor, 2)], images=[small, wide], return_tensors="pt")
    grids = inputs["image_grid_thw"].tolist()
    assert grids == [[1, 4, 4], [1, 6, 12]]
    assert image_tokens(processor, model, inputs) == sum(t * h * w // 4 for t, h, w in grids) == 4 + 18


def test_qwen_positions_have_three_components_and_decoding_continues_from_rope_deltas(qwen) -> None:
    processor, model = qwen
    inputs = processor(text=[prompt(processor, 1)], images=[Image.new("RGB", (112, 56), "red")], return_tensors="pt")
    positions, deltas = model.model.get_rope_index(
        inputs["input_ids"],
        inputs["mm_token_type_ids"],
        image_grid_thw=inputs["image_grid_thw"],
        attention_mask=inputs["attention_mask"],
    )
    assert positions.shape == (3, 1, inputs["input_ids"].shape[1])
    image = (inputs["input_ids"][0] == model.config.image_token_id).nonzero().flatten()
    assert len({tuple(positions[:, 0, i].tolist()) for i in image}) == len(image) == 8  # a 2 x 4 merged grid
    # the image block spans fewer positions than tokens, and the next text position is the largest + 1
    assert int(deltas) == int(positions.max()) + 1 - inputs["input_ids"].shape[1]


def test_onevision_counts_base_tile_and_newline_tokens(onevision) -> None:
    """A 56 px square: 16 base tokens, one 56 px tile of 16 and a newline per tile row (4): 36 image tokens; a
    wider image gets more tiles, so more tokens."""
    processor, model = onevision
    square = processor(text=[prompt(processor, 1)], images=[Image.new("RGB", (56, 56))], return_tensors="pt")
    wide = processor(text=[prompt(processor, 1)], images=[Image.new("RGB", (112, 56))], return_tensors="pt")
    assert image_tokens(processor, model, square) == 36
    assert image_tokens(processor, model, wide) > 36
    assert model.config.vision_config.model_type == "siglip_vision_model"  # no class token to rank by


@pytest.mark.parametrize("family", ["qwen", "onevision"])
def test_random_weights_answer_differently_per_image(family: str, request: pytest.FixtureRequest) -> None:
    """Greedy answers depend on the image, so an equality test on these models can see a dropped token."""
    processor, model = request.getfixturevalue(family)
    answers = set()
    for colour in ("red", "blue", "white"):
        inputs = processor(
            text=[prompt(processor, 1)], images=[Image.new("RGB", (56, 56), colour)], return_tensors="pt"
        )
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
        answers.add(tuple(out[0, inputs["input_ids"].shape[1] :].tolist()))
    assert len(answers) > 1


def test_checkpoints_are_the_families_own_classes(qwen, onevision) -> None:
    assert type(qwen[1]).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert type(onevision[1]).__name__ == "LlavaOnevisionForConditionalGeneration"
    for _, model in (qwen, onevision):
        text = model.config.get_text_config()
        assert text.num_key_value_heads < text.num_attention_heads  # grouped-query attention
