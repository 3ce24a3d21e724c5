"""LLaVA-NeXT: image-token counts vary with the image, so budgets given as ratios follow each sample."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import QUESTIONS, draw_image
from transformers import (
    AutoProcessor,
    LlavaNextForConditionalGeneration,
)

from himap_lmms.compat import dtype_argument, image_token_id
from himap_lmms.lmms_model import HimapLlava
from himap_lmms.pruning import PrunedLlava, PruningConfig

pytestmark = pytest.mark.transformers_matrix  # the adapter's and LLaVA-NeXT's tests, on every version


@pytest.fixture(scope="module")
def batch(next_dir: Path) -> dict:
    processor = AutoProcessor.from_pretrained(next_dir)
    prompts = [
        processor.apply_chat_template(
            [{"role": "user", "content": "<image>\n" + question}], add_generation_prompt=True, tokenize=False
        )
        for question in QUESTIONS[:2]
    ]
    images = [draw_image(0, 100), draw_image(1, 60).resize((120, 60))]
    inputs = processor(images=images, text=prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    return dict(inputs.to("cpu", torch.float64))


def test_none_matches_transformers_generate(next_dir, batch) -> None:
    model = LlavaNextForConditionalGeneration.from_pretrained(next_dir, **dtype_argument(torch.float64)).eval()
    reference = model.generate(
        **batch, max_new_tokens=3, do_sample=False, output_logits=True, return_dict_in_generate=True
    )
    ours = PrunedLlava(model, PruningConfig()).generate(**batch, max_new_tokens=3, return_logits=True)
    assert ours.sequences.tolist() == reference.sequences[:, -3:].tolist()
    for mine, theirs in zip(ours.logits, reference.logits):
        torch.testing.assert_close(mine, theirs.float(), rtol=0, atol=1e-6)


def test_ratios_follow_each_samples_image_tokens(next_dir, batch) -> None:
    model = LlavaNextForConditionalGeneration.from_pretrained(next_dir, **dtype_argument(torch.float64)).eval()
    images = (batch["input_ids"] == image_token_id(model.config)).sum(dim=1).tolist()
    assert images[0] != images[1], "the two images should give different token counts"
    result = PrunedLlava(model, PruningConfig.from_args("himap", k1=1, ratio1=0.5, k2=3, ratio2=0.125)).generate(
        **batch, max_new_tokens=1
    )
    for b, count in enumerate(images):
        assert result.stats.kept[0][b].numel() == round(0.5 * count)
        assert result.stats.kept[1][b].numel() == round(0.125 * count)


def test_adapter_loads_llava_next(next_dir) -> None:
    adapter = HimapLlava(pretrained=str(next_dir), method="himap", k1=1, k2=3, device="cpu", dtype="float32")
    assert isinstance(adapter.model, LlavaNextForConditionalGeneration)
    adapter.task_dict = {"toy": {"test": [{"image": draw_image(2, 90)}]}}
    from lmms_eval.api.instance import Instance

    request = Instance(
        request_type="generate_until",
        arguments=(QUESTIONS[0], {"max_new_tokens": 2}, lambda doc: [doc["image"]], 0, "toy", "test"),
        idx=0,
        metadata={"task": "toy", "doc_id": 0, "repeats": 1},
    )
    (result,) = adapter.generate_until([request])
    assert result.token_counts.input_tokens > 16


def test_later_methods_follow_each_samples_image_tokens(next_dir, batch) -> None:
    """DART and PyramidDrop budgets follow each sample's tile count; VisionZip-style selection is refused."""
    model = LlavaNextForConditionalGeneration.from_pretrained(next_dir, **dtype_argument(torch.float64)).eval()
    images = (batch["input_ids"] == image_token_id(model.config)).sum(dim=1).tolist()
    dart_config = PruningConfig.from_args("dart", k=1, ratio=0.25, image_pivots=2, text_pivots=2)
    dart = PrunedLlava(model, dart_config).generate(**batch, max_new_tokens=1)
    pyramid = PrunedLlava(model, PruningConfig.from_args("pyramiddrop", stages=2)).generate(**batch, max_new_tokens=1)
    for b, count in enumerate(images):
        # DART's pivots and quotas (2 + 4 * (count / 4 // 4)); PyramidDrop's int(count * 0.5 ** s)
        assert dart.stats.kept[0][b].numel() == 2 + 4 * int(0.25 * count // 4)
        assert [kept[b].numel() for kept in pyramid.stats.kept] == [int(0.5 * count), int(0.25 * count)]
    with pytest.raises(
        ValueError, match=r"method=visionzip supports llava \(LLaVA-1.5\) checkpoints, not 'llava_next'"
    ):
        PrunedLlava(model, PruningConfig.from_args("visionzip"))
