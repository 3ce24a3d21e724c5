"""The pruning engine against transformers' own generate and against a slow reference written from the spec.

They run on the ``target`` of ``tests/conftest.py``: CPU float64 by default, where token ids, kept positions and
logits must agree to the bounds written here. On other devices and dtypes (``scripts/gpu_check.sh``) token ids must
still agree exactly, logits within the dtype's tolerance, and kept positions up to near-ties at the cut-off
(:func:`assert_reference_top_k`).
"""

from __future__ import annotations

import pytest
import torch
from conftest import QUESTIONS, EngineTarget, draw_image, encode
from references import generate, reference_logits, reference_ranking

from himap_lmms.compat import image_token_id
from himap_lmms.cost import layer_flops, prefill_cost
from himap_lmms.pruning import PruningConfig

STEPS = 4


@pytest.fixture(scope="module")
def single(processor, target: EngineTarget) -> dict:
    return encode(processor, QUESTIONS[:1], [draw_image(0)], target)


def schedule_of(config: PruningConfig) -> list[tuple[int, str, int]]:
    """The config's (layer, score, keep) steps for one image of 576 tokens, as the slow reference takes them."""
    return [(step.layer, step.score, step.budget(576)) for step in config.steps]


# --- a slow reference, written from docs/method.md: eager attention, explicit top-k, no KV cache ----------


def assert_reference_top_k(target: EngineTarget, kept: list[torch.Tensor], model, inputs: dict, schedule) -> None:
    """``kept`` (one sample's image positions after each step) is the slow reference's top-k at every step.

    In float64 exactly. Below it the engine (SDPA, scores in float32) and the reference (eager) round differently,
    and near-uniform random attention has many near-ties: a position only one side keeps must then score within
    the dtype's relative tolerance of the k-th best score, and each step is scored on the engine's choice before.
    """
    ranking = reference_ranking(model, inputs, schedule, kept=None if target.exact else kept)
    assert len(kept) == len(ranking)
    for step_kept, (candidates, scores, top) in zip(kept, ranking):
        if target.exact:
            assert step_kept.tolist() == top.tolist()
            continue
        assert step_kept.numel() == top.numel() and bool(torch.isin(step_kept, candidates).all())
        chosen = torch.isin(candidates, step_kept)
        cutoff = scores.sort(descending=True).values[top.numel() - 1]
        band = target.score_tolerance * cutoff
        assert scores[chosen].min() >= cutoff - band, f"kept {scores[chosen].min():.6g}, cut-off {cutoff:.6g}"
        assert scores[~chosen].max() <= cutoff + band, f"dropped {scores[~chosen].max():.6g}, cut-off {cutoff:.6g}"


# --- 1. method=none is transformers' generate -------------------------------------------------------------


def test_none_matches_transformers_generate(model, single, target) -> None:
    reference = model.generate(
        **single, max_new_tokens=STEPS, do_sample=False, output_logits=True, return_dict_in_generate=True
    )
    ours = generate(model, PruningConfig(), single)
    assert ours.sequences.tolist() == reference.sequences[:, -STEPS:].tolist()
    for our_logits, their_logits in zip(ours.logits, reference.logits, strict=True):
        target.assert_logits_close(our_logits, their_logits.float(), atol=1e-6)


def test_none_matches_transformers_generate_on_a_padded_batch(model, processor, target) -> None:
    inputs = encode(processor, QUESTIONS[:2], [draw_image(0), draw_image(1)], target)
    assert not bool(inputs["attention_mask"].all()), "the prompts should need padding"
    reference = model.generate(
        **inputs, max_new_tokens=STEPS, do_sample=False, output_logits=True, return_dict_in_generate=True
    )
    ours = generate(model, PruningConfig(), inputs)
    assert ours.sequences.tolist() == reference.sequences[:, -STEPS:].tolist()
    for our_logits, their_logits in zip(ours.logits, reference.logits, strict=True):
        target.assert_logits_close(our_logits, their_logits.float(), atol=1e-6)


# --- 2. pruning nothing is vanilla ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        PruningConfig.from_args("himap", keep1=576, keep2=576),
        PruningConfig.from_args("himap", ratio1=1.0, ratio2=1.0),
        PruningConfig.from_args("fastv", keep=576),
        PruningConfig.from_args("fastv", ratio=1.0),
        PruningConfig.from_args("dart", keep=576),
        PruningConfig.from_args("pyramiddrop", stages=3, ratio=1.0),
    ],
    ids=["himap-keep", "himap-ratio", "fastv-keep", "fastv-ratio", "dart-keep", "pyramiddrop-ratio"],
)
def test_keeping_every_image_token_equals_vanilla(model, single, target, config) -> None:
    vanilla = generate(model, PruningConfig(), single)
    pruned = generate(model, config, single)
    assert torch.equal(pruned.sequences, vanilla.sequences)
    for ours, theirs in zip(pruned.logits, vanilla.logits, strict=True):
        target.assert_logits_close(ours, theirs)


# --- 3. the engine agrees with the slow reference ---------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "schedule"),
    [
        (
            PruningConfig.from_args("himap", k1=2, keep1=288, k2=8, keep2=72),
            [(2, "instruction", 288), (8, "visual", 72)],
        ),
        (
            PruningConfig.from_args("himap", k1=3, keep1=100, k2=5, keep2=30),
            [(3, "instruction", 100), (5, "visual", 30)],
        ),
        (PruningConfig.from_args("fastv", k=2, keep=144), [(2, "last_token", 144)]),
    ],
    ids=["himap-reference", "himap-other-layers", "fastv"],
)
def test_engine_matches_slow_reference(model, eager_model, single, target, config, schedule) -> None:
    ours = generate(model, config, single, steps=STEPS)
    kept = [step_kept[0] for step_kept in ours.stats.kept]
    assert_reference_top_k(target, kept, eager_model, single, schedule)
    for step in range(STEPS):
        expected = reference_logits(eager_model, single, schedule, kept, ours.sequences[0, :step])
        # in float64 both sides are float64 computations rounded to float32 logits: one float32 ulp apart at most
        target.assert_logits_close(ours.logits[step][0], expected, atol=1e-6)
        assert int(ours.sequences[0, step]) == int(expected.argmax())


# --- 4. a padded batch equals running the samples one by one ----------------------------------------------


# Every method, as the matrix of targets (dtypes, kernels, devices) runs them: HiMAP and FastV against their slow
# reference below float64; the later methods (references in tests/test_authors_methods.py) by their kept counts.
EVERY_METHOD = {
    "himap": PruningConfig.from_args("himap"),
    "fastv": PruningConfig.from_args("fastv"),
    "dart": PruningConfig.from_args("dart"),
    "pyramiddrop": PruningConfig.from_args("pyramiddrop", stages=3),
    "visionzip": PruningConfig.from_args("visionzip"),
    "dart-prior": PruningConfig.from_args("dart", variant="prior"),
    "pyramiddrop-prior": PruningConfig.from_args("pyramiddrop", variant="prior"),
    "visionzip-prior": PruningConfig.from_args("visionzip", variant="prior"),
}


def assert_kept_like(target: EngineTarget, config, kept, alone_kept, model, inputs) -> None:
    """The batch's kept positions equal the alone prompt's in float64; below it, HiMAP's and FastV's are the
    reference's top-k up to near-ties, the other methods' keep as many tokens."""
    if target.exact:
        assert [k.tolist() for k in kept] == [k.tolist() for k in alone_kept]
    elif config.method in ("himap", "fastv"):  # padding changes the kernels' rounding
        assert_reference_top_k(target, kept, model, inputs, schedule_of(config))
    else:
        assert [k.numel() for k in kept] == [k.numel() for k in alone_kept]


@pytest.mark.parametrize("config", list(EVERY_METHOD.values()), ids=list(EVERY_METHOD))
def test_batch_equals_one_by_one(model, eager_model, processor, target, config) -> None:
    images = [draw_image(seed) for seed in range(3)]
    batch = encode(processor, QUESTIONS, images, target)
    together = generate(model, config, batch)
    padding = (batch["attention_mask"] == 0).sum(dim=1).tolist()
    for b, (question, image) in enumerate(zip(QUESTIONS, images)):
        inputs = encode(processor, [question], [image], target)
        alone = generate(model, config, inputs)
        assert together.sequences[b].tolist() == alone.sequences[0].tolist()
        for step in range(STEPS):
            target.assert_logits_close(together.logits[step][b], alone.logits[step][0], atol=1e-8)
        kept = [step_kept[b] - padding[b] for step_kept in together.stats.kept]
        assert_kept_like(target, config, kept, [step_kept[0] for step_kept in alone.stats.kept], eager_model, inputs)
        assert together.stats.tokens_per_layer[b].tolist() == alone.stats.tokens_per_layer[0].tolist()


def test_prompt_without_image_is_not_pruned(model, processor, target) -> None:
    batch = encode(processor, QUESTIONS[:2], [None, draw_image(1)], target)
    result = generate(model, PruningConfig.from_args("himap"), batch)
    text_only = int(batch["attention_mask"][0].sum())
    assert result.stats.tokens_per_layer[0].tolist() == [text_only] * 12
    assert result.stats.kept[0][0].numel() == 0
    alone = generate(model, PruningConfig.from_args("himap"), encode(processor, QUESTIONS[:1], [None], target))
    target.assert_logits_close(result.logits[0][0], alone.logits[0][0], atol=1e-8)


def test_several_images_are_ranked_together(model, processor, target) -> None:
    question = "<image>\n<image>\n" + QUESTIONS[0]
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    inputs = processor(
        images=[draw_image(3), draw_image(4)], text=[prompt], return_tensors="pt", add_special_tokens=False
    )
    inputs = dict(inputs.to(target.device, target.dtype))
    result = generate(model, PruningConfig.from_args("himap", keep1=288, keep2=72), inputs)
    image_positions = (inputs["input_ids"][0] == image_token_id(model.config)).nonzero().flatten()
    assert image_positions.numel() == 1152
    assert [kept[0].numel() for kept in result.stats.kept] == [288, 72]
    assert set(result.stats.kept[0][0].tolist()) <= set(image_positions.tolist())


def test_budget_larger_than_the_image_keeps_it_whole(model, single, target) -> None:
    vanilla = generate(model, PruningConfig(), single)
    result = generate(model, PruningConfig.from_args("fastv", keep=1000), single)
    prompt = int(single["attention_mask"].sum())
    assert result.stats.tokens_per_layer[0].tolist() == [prompt] * 12
    target.assert_logits_close(result.logits[0], vanilla.logits[0])


# --- 5. the schedule and the FLOPs --------------------------------------------------------------------------


def test_sequence_lengths_follow_the_schedule_and_flops_match_a_hand_count(model, single) -> None:
    result = generate(model, PruningConfig.from_args("himap", k1=2, keep1=288, k2=8, keep2=72), single, steps=1)
    prompt = int(single["attention_mask"].sum())
    text = prompt - 576
    assert text > 30
    n0, n1, n2 = prompt, text + 288, text + 72
    assert result.stats.tokens_per_layer[0].tolist() == [n0] * 2 + [n1] * 6 + [n2] * 4

    d, m = 64, 128
    hand = 2 * (4 * n0 * d * d + 2 * n0**2 * d + 2 * n0 * d * m)
    hand += 6 * (4 * n1 * d * d + 2 * n1**2 * d + 2 * n1 * d * m)
    hand += 4 * (4 * n2 * d * d + 2 * n2**2 * d + 2 * n2 * d * m)
    expected = [n0] * 2 + [n1] * 6 + [n2] * 4
    cost = prefill_cost(expected, hidden=d, intermediate=m, convention="fastv")
    assert cost.flops == hand
    assert cost.flops_ratio == pytest.approx(hand / (12 * (4 * n0 * d * d + 2 * n0**2 * d + 2 * n0 * d * m)))
    swiglu = prefill_cost(expected, hidden=d, intermediate=m, convention="swiglu")
    assert swiglu.flops - cost.flops == pytest.approx(sum(n * d * m for n in expected))


def test_reference_setting_at_the_7b_shape_is_about_a_third() -> None:
    """docs/method.md: with ~74 non-image tokens, 2/288 + 8/72 on LLaVA-1.5-7B leaves 31-33 % of the prefill FLOPs."""
    text, d, m = 74, 4096, 11008
    tokens = [text + 576] * 2 + [text + 288] * 6 + [text + 72] * 24
    assert 0.31 <= prefill_cost(tokens, d, m).flops_ratio <= 0.33
    quarter = [text + 576] * 2 + [text + 144] * 6 + [text + 36] * 24
    assert prefill_cost(quarter, d, m).flops_ratio == pytest.approx(0.25, abs=0.01)
    with pytest.raises(ValueError, match="convention='exact' is not known"):
        layer_flops(10, d, m, convention="exact")


@pytest.mark.parametrize("config", list(EVERY_METHOD.values()), ids=list(EVERY_METHOD))
def test_eager_attention_agrees_with_sdpa(model, eager_model, processor, target, config) -> None:
    """Eager attention only adds the mask it is given, so this covers the engine's explicit causal masks.

    (With ``--engine-attn eager`` the model under test is eager too, and this compares eager with itself.)
    """
    questions, images = QUESTIONS[:2], [draw_image(5), draw_image(6)]
    batch = encode(processor, questions, images, target)
    sdpa = generate(model, config, batch)
    eager = generate(eager_model, config, batch)
    assert torch.equal(sdpa.sequences, eager.sequences)
    for ours, theirs in zip(sdpa.logits, eager.logits):
        target.assert_logits_close(ours, theirs, atol=1e-6)
    if target.exact:
        for step_sdpa, step_eager in zip(sdpa.stats.kept, eager.stats.kept):
            assert [k.tolist() for k in step_sdpa] == [k.tolist() for k in step_eager]
        return
    padding = (batch["attention_mask"] == 0).sum(dim=1).tolist()
    for b, (question, image) in enumerate(zip(questions, images)):
        inputs = encode(processor, [question], [image], target)
        sdpa_kept = [step_kept[b] - padding[b] for step_kept in sdpa.stats.kept]
        for result in (sdpa, eager):
            kept = [step_kept[b] - padding[b] for step_kept in result.stats.kept]
            assert_kept_like(target, config, kept, sdpa_kept, eager_model, inputs)


# --- baselines without attention: random ranking on HiMAP's schedule, uniform pruning at the input ----------


def test_random_baseline_is_seeded_and_batch_invariant(model, processor, target) -> None:
    images = [draw_image(7), draw_image(8)]
    batch = encode(processor, QUESTIONS[:2], images, target)
    first = generate(model, PruningConfig.from_args("random", seed=1), batch, steps=1).stats.kept
    again = generate(model, PruningConfig.from_args("random", seed=1), batch, steps=1).stats.kept
    other = generate(model, PruningConfig.from_args("random", seed=2), batch, steps=1).stats.kept
    assert [[k.tolist() for k in step] for step in first] == [[k.tolist() for k in step] for step in again]
    assert first[0][0].tolist() != other[0][0].tolist()
    padding = int((batch["attention_mask"][0] == 0).sum())
    alone = generate(
        model, PruningConfig.from_args("random", seed=1), encode(processor, QUESTIONS[:1], images[:1], target), steps=1
    )
    assert (first[0][0] - padding).tolist() == alone.stats.kept[0][0].tolist()
    assert [k.numel() for k in (first[0][0], first[1][0])] == [288, 72]


def test_input_pruning_keeps_evenly_spaced_tokens_from_the_first_layer(model, single) -> None:
    result = generate(model, PruningConfig.from_args("input", ratio=0.25), single, steps=1)
    image = (single["input_ids"][0] == image_token_id(model.config)).nonzero().flatten()
    kept = result.stats.kept[0][0]
    assert kept.tolist() == image[torch.linspace(0, 575, 144).round().long()].tolist()
    text = int(single["attention_mask"].sum()) - 576
    assert result.stats.tokens_per_layer[0].tolist() == [text + 144] * 12
    # the unpruned reference is the whole prompt, not the (already pruned) first layer
    assert int(result.stats.prompt_tokens[0]) == text + 576
    cost = prefill_cost(result.stats.tokens_per_layer[0].tolist(), 64, 128, prompt_tokens=text + 576)
    assert cost.flops_ratio == pytest.approx(layer_flops(text + 144, 64, 128) / layer_flops(text + 576, 64, 128))
