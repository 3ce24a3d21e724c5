"""DART, PyramidDrop and VisionZip's ``variant=prior`` (this repo's earlier reading of the papers) against slow
references written from that description, and what every variant shares (budgets, costs, prompts without image).

Each reference recomputes from scratch (eager attention, full sequences, no KV cache, plain Python loops for
the selection rules) on one sample; the engine must keep exactly the same image positions, alone and inside a
left-padded batch, and give the same logits. The default variants, as their authors' code runs them, are checked
in tests/test_authors_methods.py.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from conftest import QUESTIONS, draw_image, encode, sdpa_and_eager
from references import (
    check_against,
    generate,
    image_positions,
    merged_embeddings,
    reference_logits,
    reference_ranking,
    run_layers,
    tokens_at_7b,
)
from transformers import LlavaForConditionalGeneration

from himap_lmms.compat import (
    image_token_id,
    language_model_of,
    lm_head_of,
    projector_of,
    vision_encoder_layers,
    vision_tower_of,
)
from himap_lmms.cost import prefill_cost
from himap_lmms.pruning import PrunedLlava, PruningConfig
from himap_lmms.tiny_llava import TINY_CHECKPOINT, build_tiny_llava

pytestmark = pytest.mark.transformers_matrix  # every method test, on every transformers of CI's matrix

LAYERS = 12
IMAGE_TOKENS = 576
STEPS = 2


@pytest.fixture(scope="module")
def batch(processor) -> dict:
    inputs = encode(processor, QUESTIONS[:2], [draw_image(seed) for seed in range(2)])
    assert not bool(inputs["attention_mask"].all()), "the prompts should need padding"
    return inputs


# --- DART: pivots by key norm at layer k - 1, keep the tokens least similar to their nearest pivot -----------


def dart_reference(model, inputs: dict, k: int, keep: int, pivots: int) -> torch.Tensor:
    lm = language_model_of(model)
    image = image_positions(model, inputs)
    positions = torch.arange(inputs["input_ids"].shape[1])
    with torch.no_grad():
        before, _ = run_layers(model, merged_embeddings(model, inputs), positions, range(k - 1))
        after, _ = run_layers(model, before, positions, [k - 1])
        layer = lm.layers[k - 1]
        # RoPE rotates pairs of key coordinates, so the cached (rotated) keys have these norms too
        keys = layer.self_attn.k_proj(layer.input_layernorm(before))[0]
    norm = {p: float(keys[p].norm()) for p in image}
    chosen = sorted(image, key=lambda p: (-norm[p], p))[: min(pivots, keep)]
    hidden = after[0]

    def nearest_pivot(p: int) -> float:
        return max(float(hidden[p] @ hidden[q] / (hidden[p].norm() * hidden[q].norm())) for q in chosen)

    others = sorted((p for p in image if p not in chosen), key=lambda p: (nearest_pivot(p), p))
    return torch.tensor(sorted(chosen + others[: keep - len(chosen)]))


# --- PyramidDrop: stages spread over the depth, each keeping `ratio` of what is left, ranked like FastV --------


def pyramiddrop_schedule(num_layers: int, stages: int, ratio: float, image_tokens: int) -> list[tuple[int, str, int]]:
    """Stage s of n prunes before layer s * L / (n + 1) and keeps ratio**s of the image tokens."""
    return [
        (int(s * num_layers / (stages + 1) + 0.5), "last_token", round(ratio**s * image_tokens))
        for s in range(1, stages + 1)
    ]


# --- VisionZip: dominant tokens by class-token attention, contextual ones merged by key similarity -----------


def clip_internals(model, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class-token attention (heads averaged), keys (heads averaged) and features of LLaVA's feature layer,
    read off the eager tower's own forward with hooks."""
    tower = vision_tower_of(model)
    feature = model.config.vision_feature_layer
    layer = vision_encoder_layers(tower)[feature if feature < 0 else feature - 1]
    captured = {}
    handles = [
        layer.self_attn.register_forward_hook(lambda m, a, out: captured.update(attn=out[1])),
        layer.self_attn.k_proj.register_forward_hook(lambda m, a, out: captured.update(keys=out)),
    ]
    with torch.no_grad():
        # output_attentions: up to 4.5x an eager CLIP layer returns its probabilities only when asked.
        states = tower(pixel_values, output_hidden_states=True, output_attentions=True).hidden_states
    for handle in handles:
        handle.remove()
    heads = captured["attn"].shape[1]
    keys = captured["keys"][0].view(captured["keys"].shape[1], heads, -1).mean(dim=1)
    return captured["attn"][0].mean(dim=0)[0, 1:], keys[1:], states[feature][0, 1:]


def visionzip_reference(model, inputs: dict, keep: int, contextual_share: float):
    """Kept slots (prompt positions) and the language model's input vectors there, one image."""
    attention, keys, features = clip_internals(model, inputs["pixel_values"])
    patches = attention.shape[0]
    contextual = round(contextual_share * keep)
    dominant = sorted(range(patches), key=lambda j: (-float(attention[j]), j))[: keep - contextual]
    rest = [j for j in range(patches) if j not in dominant]
    targets = [rest[round(i * (len(rest) - 1) / (contextual - 1))] for i in range(contextual)] if contextual > 1 else []
    targets = targets or rest[:contextual]
    vectors = {j: features[j] for j in dominant}
    groups = {t: [features[t]] for t in targets}
    for j in rest if targets else []:  # without contextual tokens the rest is simply dropped
        if j in targets:
            continue
        cosines = [float(keys[j] @ keys[t] / (keys[j].norm() * keys[t].norm())) for t in targets]
        groups[targets[cosines.index(max(cosines))]].append(features[j])
    vectors |= {t: torch.stack(members).mean(dim=0) for t, members in groups.items()}
    slots = sorted(vectors)
    with torch.no_grad():
        projected = projector_of(model)(torch.stack([vectors[j] for j in slots]))
    image = image_positions(model, inputs)
    return [image[j] for j in slots], dict(zip((image[j] for j in slots), projected))


def visionzip_reference_logits(model, inputs: dict, kept: list[int], vectors: dict, generated: torch.Tensor):
    """Next-token logits: text embeddings plus the kept image vectors, at their original positions."""
    ids = inputs["input_ids"][0]
    image = set(image_positions(model, inputs))
    embed = model.get_input_embeddings()
    with torch.no_grad():
        rows = [vectors[p] if p in vectors else embed(ids[p]) for p in range(len(ids)) if p not in image or p in kept]
        rows += list(embed(generated))
        positions = [p for p in range(len(ids)) if p not in image or p in kept]
        positions += list(range(len(ids), len(ids) + len(generated)))
        hidden, _ = run_layers(model, torch.stack(rows)[None], torch.tensor(positions), range(LAYERS))
        return lm_head_of(model)(language_model_of(model).norm(hidden[:, -1:]))[0, -1].float()


# --- the engine against the references, batch 1 and batched -------------------------------------------------


@pytest.mark.parametrize(("k", "keep", "pivots"), [(2, 144, 8), (5, 60, 3)])
def test_dart_matches_its_reference(model64, eager64, batch, k, keep, pivots) -> None:
    config = PruningConfig.from_args("dart", k=k, keep=keep, pivots=pivots, variant="prior")
    schedule = [(k, "duplication", keep)]
    check_against(
        model64,
        eager64,
        config,
        lambda model, inputs: [dart_reference(model, inputs, k, keep, pivots)],
        lambda model, inputs, kept, generated: reference_logits(model, inputs, schedule, kept, generated),
        batch,
    )


@pytest.mark.parametrize(("stages", "ratio"), [(3, 0.5), (2, 0.3)])
def test_pyramiddrop_matches_its_reference(model64, eager64, batch, stages, ratio) -> None:
    config = PruningConfig.from_args("pyramiddrop", stages=str(stages), ratio=str(ratio), variant="prior")
    schedule = pyramiddrop_schedule(LAYERS, stages, ratio, IMAGE_TOKENS)
    check_against(
        model64,
        eager64,
        config,
        lambda model, inputs: [top for _, _, top in reference_ranking(model, inputs, schedule)],
        lambda model, inputs, kept, generated: reference_logits(model, inputs, schedule, kept, generated),
        batch,
    )


@pytest.mark.parametrize(("keep", "contextual"), [(64, 10 / 64), (144, 0.25), (100, 0.0)])
def test_visionzip_matches_its_reference(model64, eager64, batch, keep, contextual) -> None:
    config = PruningConfig.from_args("visionzip", keep=keep, contextual=contextual, variant="prior")
    check_against(
        model64,
        eager64,
        config,
        lambda model, inputs: [torch.tensor(visionzip_reference(model, inputs, keep, contextual)[0])],
        lambda model, inputs, kept, generated: visionzip_reference_logits(
            model, inputs, kept[0].tolist(), visionzip_reference(model, inputs, keep, contextual)[1], generated
        ),
        batch,
    )


def test_visionzip_reads_llava_15s_feature_layer(tmp_path, processor) -> None:
    """LLaVA-1.5 reads CLIP's second-to-last layer (-2): the class token's attention must come from that layer."""
    shape = replace(TINY_CHECKPOINT, vision_layers=2, vision_feature_layer=-2)
    directory = build_tiny_llava(tmp_path, shape, corpus=QUESTIONS)
    model, eager = sdpa_and_eager(directory)
    inputs = encode(processor, QUESTIONS[:1], [draw_image(4)])
    result = generate(model, PruningConfig.from_args("visionzip", keep=64, variant="prior"), inputs, 1)
    kept, vectors = visionzip_reference(eager, inputs, 64, 10 / 64)
    assert result.stats.kept[0][0].tolist() == kept
    expected = visionzip_reference_logits(eager, inputs, kept, vectors, inputs["input_ids"][0, :0])
    torch.testing.assert_close(result.logits[0][0], expected, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"method=visionzip needs one vision_feature_layer after the embeddings"):
        PrunedLlava(
            LlavaForConditionalGeneration.from_pretrained(directory, vision_feature_layer=-3),
            PruningConfig.from_args("visionzip"),
        )


def test_visionzip_selects_each_image_of_a_prompt_on_its_own(model64, processor) -> None:
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": "<image>\n<image>\n" + QUESTIONS[0]}], add_generation_prompt=True, tokenize=False
    )
    images = [draw_image(3), draw_image(4)]
    inputs = processor(images=images, text=[prompt], return_tensors="pt", add_special_tokens=False)
    prior = PruningConfig.from_args("visionzip", keep=64, variant="prior")
    result = generate(model64, prior, dict(inputs.to("cpu", torch.float64)), 1)
    slots = (inputs["input_ids"][0] == image_token_id(model64.config)).nonzero().flatten()
    kept = result.stats.kept[0][0]
    for image, first in zip(images, (0, IMAGE_TOKENS)):
        alone = encode(processor, QUESTIONS[:1], [image])
        alone_kept = generate(model64, prior, alone, 1).stats.kept[0][0]
        alone_slots = (alone["input_ids"][0] == image_token_id(model64.config)).nonzero().flatten()
        mine = kept[(kept >= slots[first]) & (kept <= slots[first + IMAGE_TOKENS - 1])]
        assert (mine - slots[first]).tolist() == (alone_kept - alone_slots[0]).tolist()
        assert mine.numel() == 64


@pytest.mark.parametrize(
    "config",
    [
        PruningConfig.from_args("dart", ratio=1.0),  # 576 // 8 = 72 tokens per pivot: every image token
        PruningConfig.from_args("dart", ratio=1.0, variant="prior"),
        PruningConfig.from_args(
            "pyramiddrop", stages=3, ratio=1.0
        ),  # renumbering nothing leaves the positions as they were
        PruningConfig.from_args("pyramiddrop", ratio=1.0, variant="prior"),
        PruningConfig.from_args("visionzip", ratio=1.0, contextual=0.0, variant="prior"),
    ],
    ids=["dart", "dart-prior", "pyramiddrop", "pyramiddrop-prior", "visionzip-prior"],
)
def test_keeping_every_image_token_equals_vanilla(model64, batch, config) -> None:
    vanilla = generate(model64, PruningConfig(), batch, STEPS)
    pruned = generate(model64, config, batch, STEPS)
    assert torch.equal(pruned.sequences, vanilla.sequences)
    for ours, theirs in zip(pruned.logits, vanilla.logits, strict=True):
        assert torch.equal(ours, theirs)


def test_prompt_without_image_is_not_pruned(model64, processor) -> None:
    inputs = encode(processor, QUESTIONS[:2], [None, draw_image(1)])
    text_only = int(inputs["attention_mask"][0].sum())
    for config in (
        PruningConfig.from_args("dart"),
        PruningConfig.from_args("pyramiddrop", stages=3),
        PruningConfig.from_args("visionzip"),
        PruningConfig.from_args("dart", variant="prior"),
        PruningConfig.from_args("pyramiddrop", variant="prior"),
        PruningConfig.from_args("visionzip", variant="prior"),
    ):
        result = generate(model64, config, inputs, steps=1)
        assert result.stats.tokens_per_layer[0].tolist() == [text_only] * LAYERS
        assert all(kept[0].numel() == 0 for kept in result.stats.kept)


# --- cost of the multi-stage schedule ------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["authors", "prior"])
def test_pyramiddrop_tokens_per_layer_and_flops(model64, batch, variant) -> None:
    result = generate(model64, PruningConfig.from_args("pyramiddrop", stages=3, variant=variant), batch, steps=1)
    for b in range(batch["input_ids"].shape[0]):
        prompt = int(batch["attention_mask"][b].sum())
        text = prompt - IMAGE_TOKENS
        expected = [prompt] * 3 + [text + 288] * 3 + [text + 144] * 3 + [text + 72] * 3
        assert result.stats.tokens_per_layer[b].tolist() == expected
        d, m = 64, 128
        hand = sum(4 * n * d * d + 2 * n * n * d + 2 * n * d * m for n in expected)
        cost = prefill_cost(result.stats.tokens_per_layer[b].tolist(), d, m, prompt_tokens=prompt)
        assert cost.flops == hand
        assert cost.flops_ratio == pytest.approx(
            hand / (LAYERS * (4 * prompt * d * d + 2 * prompt**2 * d + 2 * prompt * d * m))
        )


PRESET_COSTS = {  # what configs/methods.yaml says, at the 7B shape
    "himap_ref": 0.330,
    "himap_25": 0.247,
    "fastv_75": 0.370,
    "dart_20": 0.330,
    "dart_10": 0.251,
    "pdrop": 0.524,
    "pdrop_25": 0.404,
    "pdrop_25_prior": 0.404,
    "visionzip_25": 0.328,
    "visionzip_11": 0.207,
}


def test_presets_costs_at_the_7b_shape() -> None:
    presets = yaml.safe_load((Path(__file__).parents[1] / "configs" / "methods.yaml").read_text())
    for name, expected in PRESET_COSTS.items():
        config = PruningConfig.from_args(**presets[name])
        cost = prefill_cost(tokens_at_7b(config), 4096, 11008, prompt_tokens=74 + IMAGE_TOKENS)
        assert cost.flops_ratio == pytest.approx(expected, abs=0.0005), name
    pdrop = PruningConfig.from_args(**presets["pdrop"]).for_depth(32)
    assert [(s.layer, s.budget(IMAGE_TOKENS)) for s in pdrop.steps] == [(8, 288), (16, 144), (24, 72)]
