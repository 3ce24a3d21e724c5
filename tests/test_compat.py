"""The transformers compatibility layer: the engine refuses a decoder that would ignore its cache, says when a version
is untested, and writes checkpoints whose processor loads alike on every supported version.

These run in CI on every transformers of the matrix (``scripts/test_transformers_matrix.sh``), so the shims are
checked against the real classes of each version, not against a mock.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from conftest import QUESTIONS, draw_image, encode
from safetensors.torch import load_file
from transformers import AutoConfig, AutoProcessor, LlavaForConditionalGeneration

from himap_lmms import compat, lmms_model
from himap_lmms.lmms_model import HimapLlava
from himap_lmms.pruning import PrunedLlava, PruningConfig
from himap_lmms.testbed import TESTBED_PATH

pytestmark = pytest.mark.transformers_matrix

# Each version range's keyword, and one a layer of that range swallows without filling the cache.
SWALLOWED = {"cache": "past_key_value", "past_key_values": "cache", "past_key_value": "cache"}


def test_the_engine_refuses_a_decoder_layer_that_ignores_its_cache_keyword(model64, monkeypatch) -> None:
    """The issue's silent failure: the keyword of a neighbouring version is swallowed and the cache stays empty."""
    PrunedLlava(model64, PruningConfig())  # this version's keyword passes
    wrong = SWALLOWED[compat.CACHE_KEYWORD]
    monkeypatch.setattr(compat, "CACHE_KEYWORD", wrong)
    with pytest.raises(RuntimeError, match=rf"transformers {compat.VERSION}: .*`{wrong}=`"):
        PrunedLlava(model64, PruningConfig())


def test_the_cache_keyword_fills_every_layer_on_decoding(model64, processor) -> None:
    """After a generation every layer cached the prompt and all new tokens but the last (never fed back)."""
    inputs = encode(processor, [QUESTIONS[0]], [draw_image(0)])
    generation = PrunedLlava(model64, PruningConfig()).generate(**inputs, max_new_tokens=3, return_cache=True)
    lengths = [keys.shape[2] for keys, _ in compat.cached_keys_values(generation.cache)]
    assert lengths == [inputs["input_ids"].shape[1] + 2] * len(compat.language_model_of(model64).layers)


@pytest.mark.parametrize(
    ("release", "untested"),
    [((4, 48, 0), False), ((5, 24, 9), False), ((4, 47, 1), True), ((5, 25, 0), True), ((6, 0, 0), True)],
)
def test_versions_outside_the_tested_range_are_named_untested(monkeypatch, release, untested) -> None:
    monkeypatch.setattr(compat, "_RELEASE", release)
    message = compat.untested_version_message()
    assert (message is not None) == untested
    if untested:
        assert f"transformers {compat.VERSION}" in message and compat.TESTED_VERSIONS[-1] in message


def test_the_adapter_says_once_that_a_version_is_untested(tiny_llava_dir, monkeypatch, caplog) -> None:
    monkeypatch.setattr(lmms_model, "untested_version_message", lambda: "transformers 99.0 is untested with himap-lmms")
    lmms_model._warn_if_untested_transformers.cache_clear()
    with caplog.at_level(logging.WARNING, logger="himap_lmms.lmms_model"):
        for _ in range(2):
            HimapLlava(pretrained=str(tiny_llava_dir), device="cpu", dtype="float32")
    lmms_model._warn_if_untested_transformers.cache_clear()
    assert sum("is untested with himap-lmms" in record.getMessage() for record in caplog.records) == 1


def test_every_weight_of_a_checkpoint_is_loaded(tiny_llava_dir) -> None:
    """Saved through :func:`compat.save_model`, the tiny checkpoint and the shipped testbed load every stored tensor
    on every version: a CLIP tower saved under 5.6's names would stay randomly initialised before 5.6."""

    def fingerprint(tensors) -> list[tuple[tuple[int, ...], float]]:
        return sorted((tuple(t.shape), round(float(t.double().sum()), 6)) for t in tensors)

    for checkpoint in (tiny_llava_dir, TESTBED_PATH):
        stored = load_file(Path(checkpoint) / "model.safetensors")
        model = LlavaForConditionalGeneration.from_pretrained(checkpoint, **compat.dtype_argument(torch.float32))
        assert fingerprint(model.state_dict().values()) == fingerprint(stored.values()), checkpoint


def test_checkpoints_processor_gives_the_models_inputs_only(tiny_llava_dir) -> None:
    """Written by :func:`compat.save_processor`, the tiny checkpoint and the shipped testbed load on every version
    as the same processor: no `token_type_ids` (which LLaVA does not take) and the image token known by name."""
    for checkpoint in (tiny_llava_dir, TESTBED_PATH):
        processor = AutoProcessor.from_pretrained(checkpoint)
        inputs = processor(images=[draw_image(0)], text=["USER: <image>\nWhat is it? ASSISTANT:"], return_tensors="pt")
        assert set(inputs) == {"input_ids", "attention_mask", "pixel_values"}, checkpoint
        image_id = processor.tokenizer.convert_tokens_to_ids(processor.tokenizer.image_token)
        assert image_id == compat.image_token_id(AutoConfig.from_pretrained(checkpoint)), checkpoint
        size = processor.image_processor.crop_size["height"]
        assert int((inputs["input_ids"] == image_id).sum()) == (size // processor.patch_size) ** 2


def test_dtype_argument_loads_in_that_dtype(tiny_llava_dir) -> None:
    model = LlavaForConditionalGeneration.from_pretrained(tiny_llava_dir, **compat.dtype_argument(torch.float64))
    assert {p.dtype for p in model.parameters()} == {torch.float64}
