"""The shipped testbed LLaVA through the real loading path: its shape and size, that it reads its images (on the
held-out split: the issue's bars with and without the images), and the study's equal-cost rows."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

from himap_lmms.pruning import PruningConfig
from himap_lmms.pruning_study import evaluate, layer_mean_share, methods_at  # the study's own loop and scoring
from himap_lmms.scienceqa import load_local_split
from himap_lmms.testbed import DATA_PATH, TESTBED_PATH

SUBSET = 10
# The bars: at least 85 % with the images (the shipped checkpoint measures 91.0 %), at most 40 % with blank
# canvases (13.5 %; chance is 25 %).
BLANK_AT_MOST = 0.40
VANILLA_AT_LEAST = 0.85


@pytest.fixture(scope="module")
def testbed():
    model = LlavaForConditionalGeneration.from_pretrained(TESTBED_PATH, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(TESTBED_PATH)
    return model, processor, list(load_local_split(DATA_PATH))


def test_shape_matches_the_brief() -> None:
    config = LlavaForConditionalGeneration.config_class.from_pretrained(TESTBED_PATH)
    assert config.text_config.num_hidden_layers >= 12
    assert (config.vision_config.image_size // config.vision_config.patch_size) ** 2 >= 144
    size = sum(f.stat().st_size for f in TESTBED_PATH.rglob("*") if f.is_file())
    assert size <= 20_000_000


def test_reads_its_images_on_the_held_out_split(testbed) -> None:
    """Unpruned accuracy on all held-out questions, with their images and with blank canvases instead."""
    model, processor, docs = testbed
    assert len(docs) >= 300
    scores = evaluate(model, processor, docs, PruningConfig.none(), batch_size=50)
    vanilla = scores["accuracy"]
    blank = evaluate(model, processor, docs, PruningConfig.none(), batch_size=50, blank=True)["accuracy"]
    assert vanilla >= VANILLA_AT_LEAST, vanilla
    assert blank <= BLANK_AT_MOST, blank
    # The study's per-category accuracies (quoted in the README) add up to the overall one.
    counts = {category: sum(doc["category"] == category for doc in docs) for category in scores["by_category"]}
    assert sum(counts.values()) == len(docs)
    assert sum(scores["by_category"][c] * n for c, n in counts.items()) / len(docs) == pytest.approx(vanilla)


@pytest.mark.parametrize("budget", [0.25, 0.0625])
def test_equal_cost_rows_run_at_himaps_measured_share(testbed, budget: float) -> None:
    """The study's ``=cost`` rows really see as many image tokens per layer as HiMAP (up to rounding one count)."""
    model, processor, docs = testbed
    docs = docs[:SUBSET]
    layers = model.config.text_config.num_hidden_layers
    configs = methods_at(budget, layers)
    measured = {
        name: evaluate(model, processor, docs, configs[name], batch_size=SUBSET)["image_tokens_kept"]
        for name in ("himap", "fastv=cost", "input=cost")
    }
    assert measured["himap"] == pytest.approx(layer_mean_share(configs["himap"], layers), abs=1 / 144)
    assert measured["fastv=cost"] == pytest.approx(measured["himap"], abs=1 / 144)
    assert measured["input=cost"] == pytest.approx(measured["himap"], abs=1 / 144)
