"""The shipped testbed LLaVA through the real loading path: its shape and size, the issue's bars on the three
held-out splits (with their images, with blank canvases, under uniform input pruning), the study's rows (every
method at every budget, the equal-cost ones at HiMAP's share, FLOPs that follow each config) and the committed
study's file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

from himap_lmms.comparison import compare, parse_rate
from himap_lmms.compat import dtype_argument, image_token_id
from himap_lmms.cost import prefill_cost
from himap_lmms.pruning import PruningConfig
from himap_lmms.pruning_study import (  # the study's own loop and scoring
    BUDGETS,
    STUDY_ROWS,
    Unreachable,
    answers_of,
    comparison_record,
    encode,
    evaluate,
    layer_mean_share,
    methods_at,
    run_key,
    table,
    table_by_budget,
)
from himap_lmms.synthetic import BENCHMARKS, load_split
from himap_lmms.testbed import DATA_ROOT, TESTBED_PATH

pytestmark = pytest.mark.slow  # trains nothing, but evaluates the testbed on 3 x 420 questions (~40 % of the suite)

SUBSET = 10
LAYERS, IMAGE_TOKENS = 12, 144
STUDY = Path(__file__).resolve().parent.parent / "results" / "testbed" / "pruning_study.json"
NEW_METHODS = ("dart", "dart=cost", "pyramiddrop", "pyramiddrop=cost", "visionzip", "visionzip=cost")
# The bars, on each benchmark's headline metric (ScienceQA exact match, POPE F1, TextVQA VQA accuracy);
# the measured values of the shipped checkpoint are in the README's testbed section.
VANILLA_AT_LEAST = {"scienceqa": 0.85, "pope": 0.85, "textvqa": 0.70}
# Blank canvases: at most chance + 10 points (POPE: accuracy at most 60 %). Chance: 1 in 4 fixed choices for
# ScienceQA; for TextVQA the best constant answer per question family (answers are spread evenly over four, so
# 25 %; tests/test_synthetic_data.py checks the spread).
BLANK_AT_MOST = {"scienceqa": 0.35, "pope": 0.60, "textvqa": 0.35}
# Keeping an evenly spaced 12.5 % of the image tokens from layer 0 must cost at least 15 points on average.
UNIFORM_LOSS_AT_LEAST = 0.15


@pytest.fixture(scope="module")
def model_and_processor():
    model = LlavaForConditionalGeneration.from_pretrained(TESTBED_PATH, **dtype_argument(torch.float32)).eval()
    return model, AutoProcessor.from_pretrained(TESTBED_PATH)


@pytest.fixture(scope="module")
def testbed(model_and_processor):
    model, processor = model_and_processor
    return model, processor, load_split("scienceqa", DATA_ROOT)


def test_shape_matches_the_brief() -> None:
    config = LlavaForConditionalGeneration.config_class.from_pretrained(TESTBED_PATH)
    assert config.text_config.num_hidden_layers >= 12
    assert (config.vision_config.image_size // config.vision_config.patch_size) ** 2 >= 144
    size = sum(f.stat().st_size for f in TESTBED_PATH.rglob("*") if f.is_file())
    assert size <= 20_000_000


@pytest.fixture(scope="module")
def bars(model_and_processor) -> dict[str, dict[str, dict]]:
    """Every held-out question of each benchmark: vanilla, blank canvases and uniform input pruning to 12.5 %."""
    model, processor = model_and_processor
    runs = {"vanilla": (PruningConfig(), False), "blank": (PruningConfig(), True)}
    runs["uniform"] = (PruningConfig.from_args("input", ratio=0.125), False)
    measured = {}
    for name in BENCHMARKS:
        docs = load_split(name, DATA_ROOT)
        assert len(docs) >= 400
        measured[name] = {
            run: evaluate(model, processor, docs, config, batch_size=60, blank=blank, benchmark=name)
            for run, (config, blank) in runs.items()
        }
    return measured


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_reads_its_images_on_the_held_out_split(bars, name: str) -> None:
    vanilla, blank = bars[name]["vanilla"], bars[name]["blank"]
    assert vanilla["score"] >= VANILLA_AT_LEAST[name], vanilla["score"]
    blank_value = blank["accuracy"] if name == "pope" else blank["score"]
    assert blank_value <= BLANK_AT_MOST[name], blank_value


def test_uniform_input_pruning_to_an_eighth_loses_at_least_15_points(bars) -> None:
    losses = [bars[name]["vanilla"]["score"] - bars[name]["uniform"]["score"] for name in BENCHMARKS]
    assert sum(losses) / len(losses) >= UNIFORM_LOSS_AT_LEAST, losses


def test_per_category_scores_add_up_to_the_overall_one(bars) -> None:
    """The study's per-category shares (quoted in the README) weigh back to the overall share answered right."""
    for name in BENCHMARKS:
        docs = load_split(name, DATA_ROOT)
        vanilla = bars[name]["vanilla"]
        groups = [BENCHMARKS[name].category(doc) for doc in docs]
        counts = {group: groups.count(group) for group in vanilla["by_category"]}
        assert sum(counts.values()) == len(docs)
        overall = sum(vanilla["by_category"][g] * n for g, n in counts.items()) / len(docs)
        assert overall == pytest.approx(vanilla["accuracy"])


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


@pytest.mark.parametrize("budget", BUDGETS)
def test_every_method_runs_at_every_budget_and_at_himaps_share(budget: float) -> None:
    configs = methods_at(budget, LAYERS)
    assert tuple(configs) == STUDY_ROWS
    himap = layer_mean_share(configs["himap"], LAYERS)
    # What the engine keeps after the last step is the budget, for every method that is run at the budget, up to
    # the authors' rounding: DART's 4 image pivots and 8 quotas of budget * 144 // 8, PyramidDrop's int(...).
    last = {name: configs[name].image_tokens_per_layer(IMAGE_TOKENS, LAYERS)[-1] for name in configs if "=" not in name}
    for name in ("himap", "fastv", "input", "visionzip"):
        assert last[name] == round(budget * IMAGE_TOKENS), name
    assert last["dart"] == 4 + 8 * int(budget * IMAGE_TOKENS // 8)
    assert abs(last["pyramiddrop"] - round(budget * IMAGE_TOKENS)) <= 1
    for name in ("fastv=cost", "input=cost", "dart=cost", "visionzip=cost"):
        assert layer_mean_share(configs[name], LAYERS) == pytest.approx(himap), name
    # PyramidDrop's ratio is solved for and rounded to four decimals.
    assert layer_mean_share(configs["pyramiddrop=cost"], LAYERS) == pytest.approx(himap, abs=1e-3)
    assert [s.layer for s in configs["pyramiddrop"].for_depth(LAYERS).steps] == [3, 6, 9]
    # Pooling keeps a square grid: the one nearest the budget, and nearest HiMAP's share at its cost.
    side = round(12 * budget**0.5)
    assert configs["pool"].image_tokens_per_layer(IMAGE_TOKENS, LAYERS) == [side * side] * LAYERS
    pooled = configs["pool=cost"].image_tokens_per_layer(IMAGE_TOKENS, LAYERS)[0]
    assert abs(pooled**0.5 - 12 * himap**0.5) <= 0.5  # the grid side nearest HiMAP's share


def test_an_unreachable_cost_is_a_row_saying_so() -> None:
    """At 1/64 HiMAP keeps 20.3 % of the image tokens over the layers; PyramidDrop's first three layers alone keep
    25 %: its equal-cost row says so in both tables rather than running at another cost."""
    config = methods_at(1 / 64, LAYERS)["pyramiddrop=cost"]
    assert isinstance(config, Unreachable)
    assert "25.0 %" in config.reason and "20.3 %" in config.reason
    rows = [{"budget": 1 / 64, "method": "pyramiddrop=cost", "config": None, "unreachable": config.reason}]
    vanilla = {"score": 0.9, "accuracy": 0.9, "by_category": {}}
    assert f"| 1.5625 % | pyramiddrop=cost | {config.reason} |" in table("scienceqa", 1, vanilla, vanilla, rows)
    assert "| pyramiddrop=cost | – |" in table_by_budget(rows)


@pytest.mark.parametrize("budget", [0.125, 0.0625])
def test_new_rows_cost_what_their_configs_say(testbed, budget: float) -> None:
    """Each new row's measured share of image tokens and FLOPs ratio are those of its schedule, computed from the
    config and each question's own text length."""
    model, processor, docs = testbed
    docs = docs[:SUBSET]
    inputs = encode(processor, docs)
    images = (inputs["input_ids"] == image_token_id(model.config)).sum(dim=1)
    assert images.tolist() == [IMAGE_TOKENS] * SUBSET
    texts = (inputs["attention_mask"].sum(dim=1) - images).tolist()
    text_config = model.config.text_config
    configs = methods_at(budget, LAYERS)
    for name in NEW_METHODS:
        schedule = configs[name].image_tokens_per_layer(IMAGE_TOKENS, LAYERS)
        expected = [
            prefill_cost(
                [text + n for n in schedule],
                text_config.hidden_size,
                text_config.intermediate_size,
                prompt_tokens=text + IMAGE_TOKENS,
            ).flops_ratio
            for text in texts
        ]
        measured = evaluate(model, processor, docs, configs[name], batch_size=SUBSET)
        assert measured["flops_ratio"] == pytest.approx(sum(expected) / SUBSET, rel=1e-9), name
        assert measured["image_tokens_kept"] == pytest.approx(sum(schedule) / (LAYERS * IMAGE_TOKENS), abs=1e-6), name


def test_the_committed_study_has_every_row_of_the_code() -> None:
    """results/testbed/pruning_study.json is the study this code runs: every benchmark, every method at every
    budget with the config it builds, and shares of image tokens that config gives (every held-out image has 144
    tokens)."""
    study = json.loads(STUDY.read_text())["benchmarks"]
    assert list(study) == list(BENCHMARKS)
    rows = [row for result in study.values() for row in result["rows"]]
    for result in study.values():
        assert result["n"] >= 400
        assert [(r["budget"], r["method"]) for r in result["rows"]] == [(b, m) for b in BUDGETS for m in STUDY_ROWS]
    for row in rows:
        config = methods_at(row["budget"], LAYERS)[row["method"]]
        if isinstance(config, Unreachable):
            assert row["unreachable"] == config.reason
            continue
        assert row["config"] == config.describe()
        schedule = config.image_tokens_per_layer(IMAGE_TOKENS, LAYERS)
        assert row["image_tokens_kept"] == pytest.approx(sum(schedule) / (LAYERS * IMAGE_TOKENS), abs=1e-6)
        assert 0 < row["flops_ratio"] < 1


def test_the_committed_study_keeps_its_answers_and_flags_what_rests_on_few_parsed_replies() -> None:
    """Every run's per-question replies are committed beside the study, the comparisons recompute from them, and
    the rows on a minority of parsed replies (among them VisionZip-style selection at 12.5 % on POPE, whose F1 of
    1.0 rests on a handful of yes/no replies) are flagged and kept out of the comparisons with HiMAP."""
    study = json.loads(STUDY.read_text())
    answers = json.loads(STUDY.with_name("pruning_study_answers.json").read_text())
    for name, result in study["benchmarks"].items():
        docs = load_split(name, DATA_ROOT)
        vanilla = answers_of(name, docs, answers[name]["vanilla"])
        for row in result["rows"]:
            if "unreachable" in row:
                continue
            mine = answers_of(name, docs, answers[name][run_key(row)])
            assert row["parse_rate"] == pytest.approx(parse_rate(name, mine))
            assert row["flagged"] == (row["parse_rate"] < 0.5)
            assert row["vs_vanilla"]["difference"] == pytest.approx(row["score"] - result["vanilla"]["score"])
            assert row["vs_vanilla"] == pytest.approx(comparison_record(compare(name, mine, vanilla)))
    pope = {(r["budget"], r["method"]): r for r in study["benchmarks"]["pope"]["rows"]}
    assert pope[0.125, "visionzip"]["flagged"]
    means = {(r["budget"], r["method"]): r for r in study["mean"]}
    assert means[0.125, "visionzip"]["flagged"]
