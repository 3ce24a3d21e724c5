"""method=pool (the downsampling baseline) against a slow reference that pools the grid by hand.

The reference takes each tile's projected features as transformers computes them, pools the grid with torch's
own ``adaptive_avg_pool2d`` (not the engine's window arithmetic), places each pooled token at its window's
top-left placeholder and runs the language model from scratch (eager attention, no KV cache). The engine must
keep the same slots and give the same logits, alone and inside a left-padded batch, on LLaVA-1.5 and, tile by
tile, on LLaVA-NeXT.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from conftest import QUESTIONS, draw_image, encode
from references import check_against, generate, image_positions, run_layers, tokens_at_7b
from transformers import AutoProcessor, LlavaNextForConditionalGeneration

from himap_lmms.compat import dtype_argument, image_features_per_image, image_token_id, language_model_of, lm_head_of
from himap_lmms.cost import prefill_cost
from himap_lmms.pruning import PrunedLlava, PruningConfig
from himap_lmms.pruning.pool import pooled_side

SIDE = 24  # the tiny LLaVA-1.5: 336 px in 14 px patches


def pooled_tile(grid: torch.Tensor, side: int, g: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """``(g * g, hidden)`` means of a ``(side * side, hidden)`` tile and each window's top-left (row, column)."""
    planes = grid.T.reshape(1, -1, side, side)
    means = torch.nn.functional.adaptive_avg_pool2d(planes, g)[0].flatten(1).T
    corners = [((i * side) // g, (j * side) // g) for i in range(g) for j in range(g)]
    return means, corners


def reference_logits(model, inputs: dict, vectors: dict[int, torch.Tensor], generated: torch.Tensor) -> torch.Tensor:
    """Next-token logits: text embeddings plus the pooled vectors at their slots (original position ids)."""
    ids = inputs["input_ids"][0]
    image = set(image_positions(model, inputs))
    keep = [p for p in range(len(ids)) if p not in image or p in vectors]
    embed = model.get_input_embeddings()
    with torch.no_grad():
        rows = [vectors[p] if p in vectors else embed(ids[p]) for p in keep] + list(embed(generated))
        positions = keep + list(range(len(ids), len(ids) + len(generated)))
        layers = range(len(language_model_of(model).layers))
        hidden, _ = run_layers(model, torch.stack(rows)[None], torch.tensor(positions), layers)
        return lm_head_of(model)(language_model_of(model).norm(hidden[:, -1:]))[0, -1].float()


def llava15_reference(model, inputs: dict, g: int) -> dict[int, torch.Tensor]:
    """Prompt position -> pooled vector, for the one image of ``inputs`` (LLaVA-1.5: one 24 x 24 grid)."""
    with torch.no_grad():
        features = image_features_per_image(model, inputs["pixel_values"])
    means, corners = pooled_tile(features[0], SIDE, g)
    slots = image_positions(model, inputs)
    return {slots[row * SIDE + col]: vector for vector, (row, col) in zip(means, corners)}


@pytest.mark.parametrize(("ratio", "g"), [(0.25, 12), (1 / 9, 8), (0.2, 11)], ids=["2x2", "3x3", "overlapping"])
def test_pool_matches_a_hand_pooled_grid(model64, eager64, batch, ratio, g) -> None:  # noqa: F811
    check_against(
        model64,
        eager64,
        PruningConfig.from_args("pool", ratio=ratio),
        lambda model, inputs: [torch.tensor(sorted(llava15_reference(model, inputs, g)))],
        lambda model, inputs, kept, generated: reference_logits(
            model, inputs, llava15_reference(model, inputs, g), generated
        ),
        batch,
    )


@pytest.fixture(scope="module")
def batch(processor) -> dict:
    inputs = encode(processor, QUESTIONS[:2], [draw_image(seed) for seed in range(2)])
    assert not bool(inputs["attention_mask"].all()), "the prompts should need padding"
    return inputs


def test_pool_keeps_the_pooled_grid_and_counts_its_tokens(model64, batch) -> None:
    result = generate(model64, PruningConfig.from_args("pool", ratio=0.25), batch, 1)
    assert [kept.numel() for kept in result.stats.kept[0]] == [144, 144]
    text = (batch["attention_mask"].sum(dim=1) - 576).tolist()
    assert result.stats.tokens_per_layer[:, 0].tolist() == [t + 144 for t in text]
    assert PruningConfig.from_args("pool", ratio="0.25").describe() == "pool(ratio=0.25)"
    with pytest.raises(ValueError, match=r"keep is not an argument of method=pool \(it takes ratio\)"):
        PruningConfig.from_args("pool", keep="144")
    with pytest.raises(ValueError, match=r"ratio=0.0 is out of range"):
        PruningConfig.from_args("pool", ratio="0")


def test_pool_at_ratio_one_equals_vanilla(model64, batch) -> None:
    vanilla = generate(model64, PruningConfig(), batch, 2)
    pooled = generate(model64, PruningConfig.from_args("pool", ratio=1.0), batch, 2)
    assert torch.equal(pooled.sequences, vanilla.sequences)
    for ours, theirs in zip(pooled.logits, vanilla.logits, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-10)


# --- LLaVA-NeXT: each tile pooled on its own --------------------------------------------------------------


@pytest.fixture(scope="module")
def next64(next_dir):  # noqa: F811
    return LlavaNextForConditionalGeneration.from_pretrained(next_dir, **dtype_argument(torch.float64)).eval()


def next_inputs(next_dir, images: list) -> dict:  # noqa: F811
    processor = AutoProcessor.from_pretrained(next_dir)
    prompts = [
        processor.apply_chat_template(
            [{"role": "user", "content": "<image>\n" + question}], add_generation_prompt=True, tokenize=False
        )
        for question in QUESTIONS[: len(images)]
    ]
    inputs = processor(images=images, text=prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    return dict(inputs.to("cpu", torch.float64))


def test_pool_pools_each_llava_next_tile_on_its_own(next_dir, next64) -> None:  # noqa: F811
    """A 112 px square image: the base tile and a 2 x 2 grid of crops, nothing unpadded. The tiles are 4 x 4
    patches; the high-resolution grid is 8 x 8, each row followed by a newline (9 slots a row)."""
    inputs = next_inputs(next_dir, [draw_image(5, 112)])
    side, tiles = 4, 5
    with torch.no_grad():
        per_tile = next64.model.multi_modal_projector(
            next64.model.vision_tower(inputs["pixel_values"][0, :tiles], output_hidden_states=True).hidden_states[-1][
                :, 1:
            ]
        )
    slots = image_positions(next64, inputs)
    assert len(slots) == 16 + 8 * 9
    vectors = {}
    for tile in range(tiles):
        means, corners = pooled_tile(per_tile[tile], side, 2)
        for vector, (row, col) in zip(means, corners):
            if tile == 0:
                slot = row * side + col
            else:  # crop (tile - 1) sits at grid row (tile - 1) // 2, column (tile - 1) % 2 of the 8 x 8 grid
                grid_row, grid_col = (tile - 1) // 2 * side + row, (tile - 1) % 2 * side + col
                slot = 16 + grid_row * 9 + grid_col
            vectors[slots[slot]] = vector
    newlines = {slots[16 + row * 9 + 8] for row in (0, 2, 4, 6)}  # the rows that hold pooled tokens
    result = PrunedLlava(next64, PruningConfig.from_args("pool", ratio=0.25)).generate(
        **inputs, max_new_tokens=2, return_logits=True
    )
    assert result.stats.kept[0][0].tolist() == sorted(set(vectors) | newlines)
    with torch.no_grad():
        newline = next64.model.image_newline
    for step in range(2):
        expected = reference_logits(
            next64, inputs, vectors | dict.fromkeys(newlines, newline), result.sequences[0, :step]
        )
        torch.testing.assert_close(result.logits[step][0], expected, rtol=0, atol=1e-6)


def test_pool_on_llava_next_batch_equals_alone(next_dir, next64) -> None:  # noqa: F811
    """Two images of different shapes (one unpadded): each sample of the padded batch keeps what it keeps alone."""
    images = [draw_image(0, 100), draw_image(1, 60).resize((120, 60))]
    together_inputs = next_inputs(next_dir, images)
    engine = PrunedLlava(next64, PruningConfig.from_args("pool", ratio=0.25))
    together = engine.generate(**together_inputs, max_new_tokens=2, return_logits=True)
    padding = (together_inputs["attention_mask"] == 0).sum(dim=1).tolist()
    for b, image in enumerate(images):
        alone_inputs = next_inputs(next_dir, [image])
        alone_inputs["input_ids"] = together_inputs["input_ids"][b : b + 1, padding[b] :]
        alone_inputs["attention_mask"] = together_inputs["attention_mask"][b : b + 1, padding[b] :]
        alone = engine.generate(**alone_inputs, max_new_tokens=2, return_logits=True)
        assert (together.stats.kept[0][b] - padding[b]).tolist() == alone.stats.kept[0][0].tolist()
        image_tokens = int((alone_inputs["input_ids"] == image_token_id(next64.config)).sum())
        assert alone.stats.kept[0][0].numel() < 0.4 * image_tokens
        for step in range(2):
            torch.testing.assert_close(together.logits[step][b], alone.logits[step][0], rtol=0, atol=1e-6)


def test_pool_presets_cost_what_configs_say_at_the_7b_shape() -> None:
    """pool_25 pools 2x2 (144 tokens) at himap_ref's cost; pool_11 3x3 (64 tokens), VisionZip's paper count;
    pool_44 16 x 16 (the demo's: 8 x 8 on the testbed's 12 x 12 grid)."""
    presets = yaml.safe_load((Path(__file__).parents[1] / "configs" / "methods.yaml").read_text())
    for name, g, expected in (("pool_25", 12, 0.328), ("pool_11", 8, 0.207), ("pool_44", 16, 0.4995)):
        config = PruningConfig.from_args(**presets[name])
        assert pooled_side(SIDE, config.steps[0].ratio) == g
        assert config.image_tokens_per_layer(576, 32) == [g * g] * 32
        cost = prefill_cost(tokens_at_7b(config), 4096, 11008, prompt_tokens=74 + 576)
        assert cost.flops_ratio == pytest.approx(expected, abs=0.0005), name


def test_the_schedule_counts_the_pooled_square() -> None:
    """The testbed's 12 x 12 grid at the study's budgets: 8 x 8 at 50 %, 6 x 6 at 25 %, 4 x 4 at 12.5 %, 3 x 3 at
    6.25 %; what the engine records is what the config predicts (tests above check the engine's counts)."""
    kept = [
        PruningConfig.from_args("pool", ratio=r).image_tokens_per_layer(144, 12)[0] for r in (0.5, 0.25, 0.125, 0.0625)
    ]
    assert kept == [64, 36, 16, 9]
