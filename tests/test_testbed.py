"""The shipped testbed LLaVA: its shape and size, loaded through the real path, and the pruning study's equal-cost rows.

Its accuracy is not asserted: the checkpoint shipped now does not yet reach the accuracy the testbed is meant to
have (README, "The bundled testbed").
"""

from __future__ import annotations

import sys
from pathlib import Path

import datasets
import pytest
import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

from himap_lmms.testbed import DATA_PATH, TESTBED_PATH

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from pruning_study import evaluate, layer_mean_share, methods_at  # noqa: E402  (the study's own loop and scoring)

SUBSET = 10


@pytest.fixture(scope="module")
def testbed():
    model = LlavaForConditionalGeneration.from_pretrained(TESTBED_PATH, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(TESTBED_PATH)
    split = datasets.load_dataset(
        str(DATA_PATH), "ScienceQA-IMG", split="test", data_files={"test": "ScienceQA-IMG/test-*"}
    )
    return model, processor, list(split)[:SUBSET]


def test_shape_matches_the_brief() -> None:
    config = LlavaForConditionalGeneration.config_class.from_pretrained(TESTBED_PATH)
    assert config.text_config.num_hidden_layers >= 12
    assert (config.vision_config.image_size // config.vision_config.patch_size) ** 2 >= 144
    size = sum(f.stat().st_size for f in TESTBED_PATH.rglob("*") if f.is_file())
    assert size <= 20_000_000


@pytest.mark.parametrize("budget", [0.25, 0.0625])
def test_equal_cost_rows_run_at_himaps_measured_share(testbed, budget: float) -> None:
    """The study's ``=cost`` rows really see as many image tokens per layer as HiMAP (up to rounding one count)."""
    model, processor, docs = testbed
    layers = model.config.text_config.num_hidden_layers
    configs = methods_at(budget, layers)
    measured = {
        name: evaluate(model, processor, docs, configs[name], batch_size=SUBSET)["image_tokens_kept"]
        for name in ("himap", "fastv=cost", "input=cost")
    }
    assert measured["himap"] == pytest.approx(layer_mean_share(configs["himap"], layers), abs=1 / 144)
    assert measured["fastv=cost"] == pytest.approx(measured["himap"], abs=1 / 144)
    assert measured["input=cost"] == pytest.approx(measured["himap"], abs=1 / 144)
