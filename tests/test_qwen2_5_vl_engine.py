"""The pruning engine on Qwen2.5-VL (the tiny checkpoint of :mod:`himap_lmms.tiny_vlms`: 12 layers, 4 query heads
sharing 2 key-value heads), against transformers' ``generate`` and against a slow reference.

The reference runs transformers' own decoder layers by hand, eager, without a cache: the embeddings and the
3-component position ids are the ones transformers' forward hands its language model, image tokens are removed
physically before each pruning layer (their neighbours keep their positions), new tokens follow at the positions
the model's ``rope_deltas`` give, and each step's ranking is written from the method's formula over the eager
attention probabilities. Each check runs the engine on a left-padded batch (one prompt with one image, one with
two) and on each prompt alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import QUESTIONS, draw_image
from transformers import AutoProcessor, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from himap_lmms.compat import (
    QWEN2_5_VL_IN_ENGINE,
    cached_keys_values,
    call_decoder_layer,
    dtype_argument,
    language_model_of,
    lm_head_of,
    new_cache,
)
from himap_lmms.pruning import PrunedLlava, PruningConfig
from himap_lmms.tiny_vlms import build_tiny_qwen2_5_vl

pytestmark = pytest.mark.transformers_matrix
runs = pytest.mark.skipif(not QWEN2_5_VL_IN_ENGINE, reason="the engine refuses Qwen2.5-VL on this transformers")

ENGINE_KEYS = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw")
# (width, height) of each prompt's images: 6 x 4, then 4 x 4 and 2 x 4 merged patches (24, 16 and 8 image tokens)
PROMPT_IMAGES = [[(168, 112)], [(112, 112), (56, 112)]]
# The reference's eager attention takes its softmax in float32 whatever the model's dtype (transformers'
# eager_attention_forward), so even in float64 it agrees with the engine's SDPA to about 2e-6 on these logits (and
# 2e-5 in float32); transformers' generate, on SDPA like the engine, agrees to the last bit.
LOGIT_TOLERANCE = {torch.float64: 1e-5, torch.float32: 1e-4}
# Methods that run on Qwen2.5-VL, as model_args (budgets as ratios: image tokens per prompt vary).
RUNS = {
    "fastv": {"method": "fastv", "k": 2, "ratio": 0.5},
    "himap": {"method": "himap", "k1": 2, "ratio1": 0.5, "k2": 6, "ratio2": 0.25},
    "random": {"method": "random", "k1": 2, "ratio1": 0.5, "k2": 6, "ratio2": 0.25, "seed": 3},
    "input": {"method": "input", "ratio": 0.25},
    "pyramiddrop": {"method": "pyramiddrop", "stages": 3, "variant": "prior"},
    "dart": {"method": "dart", "k": 3, "ratio": 0.5, "image_pivots": 2, "text_pivots": 2},
    "dart_prior": {"method": "dart", "k": 3, "ratio": 0.25, "pivots": 3, "variant": "prior"},
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("qwen2_5_vl"), corpus=QUESTIONS)


@pytest.fixture(scope="module")
def processor(checkpoint: Path):
    return AutoProcessor.from_pretrained(checkpoint)


def load(checkpoint: Path, dtype: torch.dtype, attention: str) -> Qwen2_5_VLForConditionalGeneration:
    return Qwen2_5_VLForConditionalGeneration.from_pretrained(
        checkpoint, **dtype_argument(dtype), attn_implementation=attention
    ).eval()


@pytest.fixture(scope="module", params=[torch.float64, torch.float32], ids=["float64", "float32"])
def models(request: pytest.FixtureRequest, checkpoint: Path) -> tuple:
    """The engine's model (SDPA) and the reference's (eager), in one dtype."""
    return load(checkpoint, request.param, "sdpa"), load(checkpoint, request.param, "eager")


def encode(processor, prompts: list[int], dtype: torch.dtype) -> dict:
    """A left-padded batch of the given prompts (indices into :data:`PROMPT_IMAGES` and the questions)."""
    texts, images = [], []
    for index in prompts:
        sizes = PROMPT_IMAGES[index]
        content = [{"type": "image"}] * len(sizes) + [{"type": "text", "text": QUESTIONS[index]}]
        texts.append(processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True))
        images += [draw_image(10 * index + i, max(size)).resize(size) for i, size in enumerate(sizes)]
    inputs = processor(text=texts, images=images, return_tensors="pt", padding=True)
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    return dict(inputs)


def engine_generate(model, config: PruningConfig, inputs: dict, steps: int):
    return PrunedLlava(model, config, logits_dtype=model.dtype).generate(
        **{key: inputs[key] for key in ENGINE_KEYS}, max_new_tokens=steps, return_logits=True
    )


@runs
@pytest.mark.parametrize("prompts", [[0], [1], [0, 1]], ids=["one_image", "two_images", "padded_batch"])
def test_none_is_transformers_generate(models, processor, prompts: list[int]) -> None:
    model, _ = models
    inputs = encode(processor, prompts, model.dtype)
    expected = model.generate(
        **inputs, max_new_tokens=5, do_sample=False, output_logits=True, return_dict_in_generate=True
    )
    ours = engine_generate(model, PruningConfig(), inputs, 5)
    assert ours.sequences.tolist() == expected.sequences[:, inputs["input_ids"].shape[1] :].tolist()
    for step, logits in enumerate(ours.logits):
        torch.testing.assert_close(logits.float(), expected.logits[step], rtol=0, atol=0)


# --- the slow reference ---------------------------------------------------------------------------------------


def unpruned_prompt(model, inputs: dict) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The embeddings and ``(3, 1, n)`` position ids transformers' forward hands its language model, and the
    ``rope_deltas`` it leaves for decoding."""
    captured = {}

    def grab(module, args, kwargs):
        captured.update(embeds=kwargs["inputs_embeds"], positions=kwargs["position_ids"])

    handle = language_model_of(model).register_forward_pre_hook(grab, with_kwargs=True)
    with torch.no_grad():
        model(**inputs)
    handle.remove()
    return captured["embeds"], captured["positions"], int(model.model.rope_deltas[0, 0])


def run_layers(model, hidden: torch.Tensor, positions: torch.Tensor, layers: range):
    """Eager full-sequence forward through ``layers``; returns hidden states, the last layer's attention and its
    keys after the rotary embedding (what it wrote to a KV cache)."""
    lm = language_model_of(model)
    n = hidden.shape[1]
    mask = torch.full((n, n), torch.finfo(hidden.dtype).min, dtype=hidden.dtype).triu(1)[None, None]
    embeddings = lm.rotary_emb(hidden, positions)
    cache, captured = new_cache(lm.config), {}
    for index in layers:
        attention = lm.layers[index].self_attn
        handle = attention.register_forward_hook(lambda module, args, out: captured.update(attn=out[1]))
        hidden = call_decoder_layer(
            lm.layers[index], hidden, cache, attention_mask=mask, position_embeddings=embeddings
        )
        handle.remove()
    keys = cached_keys_values(cache)[layers[-1]][0] if len(layers) else None
    return hidden, captured.get("attn"), keys


def duplication_scores(hidden: torch.Tensor, keys: torch.Tensor, columns: list[int], pivots: int) -> torch.Tensor:
    """DART (variant=prior): the ``pivots`` image tokens with the largest L2 norm of their keys (all key-value heads
    side by side) score +inf; every other one minus its largest cosine similarity to a pivot, in ``hidden``."""
    norms = keys[0].transpose(0, 1).flatten(1).double().norm(dim=-1)[columns]
    chosen = sorted(range(len(columns)), key=lambda j: (-float(norms[j]), j))[:pivots]
    unit = torch.nn.functional.normalize(hidden[0, columns].double(), dim=-1)
    scores = -(unit @ unit[chosen].T).amax(dim=-1)
    scores[chosen] = float("inf")
    return scores


def dart_retained(model, hidden, keys, image: list[int], text: list[int], step) -> list[int]:
    """DART's selection as its authors' Qwen2-VL port makes it (``get_retained_image_token`` in
    ``Qwen2-VL/Qwen2VL_DART/modeling_qwen2_vl_self.py``), on one unpadded prompt before any pruning: tokens are
    named by their prompt index; the image and text pivots are those with the largest L1 norm of their keys
    (repeated to every query head, all heads side by side); each pivot in the order a Python set gives takes
    ``int(L * ratio / pivots)`` of the image tokens least cosine-similar to it in the normed hidden states."""
    lm = language_model_of(model)
    normed = lm.norm(hidden)[0]
    groups = lm.layers[0].self_attn.num_key_value_groups
    l1 = keys[0].repeat_interleave(groups, dim=0).transpose(0, 1).flatten(1).abs().sum(dim=-1)
    take = int(len(image) * step.ratio / (step.pivots + step.text_pivots))
    image_pivots = [image[i] for i in l1[image].topk(step.pivots).indices.tolist()]
    text_pivots = [text[i] for i in l1[text].topk(step.text_pivots).indices.tolist()]
    chosen = set(image_pivots + text_pivots)
    left = set(image) - set(image_pivots)
    for pivot in list(chosen):
        candidates = list(left)
        similarity = -torch.nn.functional.cosine_similarity(normed[pivot], normed[candidates], dim=-1)
        picked = [candidates[i] for i in similarity.topk(take).indices.tolist()]
        chosen.update(picked)
        left.difference_update(picked)
    return sorted(chosen - set(text_pivots))


def reference_scores(step, probs: torch.Tensor | None, hidden, keys, index, image: list[int], text: list[int], budget):
    """Each current image token's score (``image``: their prompt indices, ``index``: the sequence's) by the formula
    of ``step.score`` from the head-averaged ``probs`` (``(n, n)``), the hidden states and the keys of the layer
    before the step."""
    score = step.score
    column = {int(p): j for j, p in enumerate(index)}
    image_columns = [column[p] for p in image]
    if score == "random":
        return torch.rand(len(image), generator=torch.Generator().manual_seed(step.seed), dtype=torch.float32).double()
    if score == "duplication":
        return duplication_scores(hidden, keys, image_columns, min(step.pivots, budget))
    rows = {"instruction": [column[p] for p in text], "visual": image_columns, "last_token": [len(index) - 1]}[score]
    return probs[rows][:, image_columns].sum(dim=0)


def reference_kept(model, config: PruningConfig, inputs: dict) -> list[list[int]]:
    """The prompt indices of the image tokens left after each step, pruning physically (one prompt, no padding)."""
    ids = inputs["input_ids"][0].tolist()
    image = [i for i, token in enumerate(ids) if token == model.config.image_token_id]
    text = list(range(image[-1] + 1, len(ids)))
    hidden, positions, _ = unpruned_prompt(model, inputs)
    index = torch.arange(len(ids))
    steps = config.for_depth(model.config.text_config.num_hidden_layers).steps
    kept, start = [], 0
    with torch.no_grad():
        for step in steps:
            hidden, attention, keys = run_layers(model, hidden, positions[..., index], range(start, step.layer))
            budget = step.budget(sum(token == model.config.image_token_id for token in ids))
            if step.score == "uniform":
                chosen = torch.linspace(0, len(image) - 1, budget).round().long().tolist()
            elif step.score == "pivot_quota":  # DART's only step: prompt indices are the sequence's columns
                retained = set(dart_retained(model, hidden, keys, image, text, step))
                chosen = [j for j, p in enumerate(image) if p in retained]
            else:
                probs = attention[0].double().mean(dim=0) if attention is not None else None
                scores = reference_scores(step, probs, hidden, keys, index, image, text, budget)
                order = sorted(range(len(image)), key=lambda j: (-float(scores[j]), j))  # ties: the earlier token
                chosen = order[:budget]
            dropped = set(image) - {image[j] for j in chosen}
            image = sorted(set(image) - dropped)
            kept.append(image)
            survivors = [j for j, p in enumerate(index.tolist()) if p not in dropped]
            hidden, index = hidden[:, survivors], index[survivors]
            start = step.layer
    return kept


def reference_logits(model, config: PruningConfig, inputs: dict, kept: list[list[int]], generated: list[int]):
    """Next-token logits of the prompt and ``generated`` (at the positions ``rope_deltas`` gives), the image tokens
    outside ``kept[s]`` removed before step ``s``'s layer, by a full recompute."""
    ids = inputs["input_ids"][0].tolist()
    hidden, positions, delta = unpruned_prompt(model, inputs)
    new = torch.tensor(generated, dtype=torch.long)
    hidden = torch.cat([hidden, model.get_input_embeddings()(new[None])], dim=1)
    new_positions = (len(ids) + torch.arange(len(generated)) + delta).view(1, 1, -1).expand(3, 1, -1)
    positions = torch.cat([positions, new_positions], dim=-1)
    index = torch.arange(hidden.shape[1])
    steps = config.for_depth(model.config.text_config.num_hidden_layers).steps
    boundaries = [step.layer for step in steps] + [model.config.text_config.num_hidden_layers]
    start = 0
    with torch.no_grad():
        for step, stop in enumerate(boundaries):
            hidden, _, _ = run_layers(model, hidden, positions[..., index], range(start, stop))
            if step < len(kept):
                dropped = {p for p, token in enumerate(ids) if token == model.config.image_token_id} - set(kept[step])
                survivors = [j for j, p in enumerate(index.tolist()) if p not in dropped]
                hidden, index = hidden[:, survivors], index[survivors]
            start = stop
        lm = language_model_of(model)
        return lm_head_of(model)(lm.norm(hidden[:, -1:]))[0, -1]


@runs
@pytest.mark.parametrize("run", RUNS)
def test_method_matches_the_slow_reference_alone_and_batched(models, processor, run: str) -> None:
    model, eager = models
    config = PruningConfig.from_args(**RUNS[run])
    batch = encode(processor, [0, 1], model.dtype)
    together = engine_generate(model, config, batch, 2)
    padding = (batch["attention_mask"] == 0).sum(dim=1).tolist()
    for b in range(2):
        alone_inputs = encode(processor, [b], model.dtype)
        alone = engine_generate(model, config, alone_inputs, 2)
        expected = reference_kept(eager, config, alone_inputs)
        assert [kept[0].tolist() for kept in alone.stats.kept] == expected
        assert [(kept[b] - padding[b]).tolist() for kept in together.stats.kept] == expected
        assert together.sequences[b].tolist() == alone.sequences[0].tolist()
        for step in range(2):
            reference = reference_logits(eager, config, alone_inputs, expected, alone.sequences[0, :step].tolist())
            tolerance = LOGIT_TOLERANCE[model.dtype]
            torch.testing.assert_close(alone.logits[step][0], reference, rtol=0, atol=tolerance)
            torch.testing.assert_close(together.logits[step][b], reference, rtol=0, atol=tolerance)


@runs
@pytest.mark.parametrize(
    "method, args",
    [
        ("visionzip", {}),
        ("pool", {}),
        ("pyramiddrop", {"stages": 3}),  # variant=authors renumbers
    ],
)
def test_refused_methods_name_method_and_model(checkpoint: Path, method: str, args: dict) -> None:
    model = load(checkpoint, torch.float32, "sdpa")
    with pytest.raises(ValueError, match=rf"(?s)method={method}.*(qwen2_5_vl|Qwen2\.5-VL)"):
        PrunedLlava(model, PruningConfig.from_args(method, **args))


@pytest.mark.skipif(QWEN2_5_VL_IN_ENGINE, reason="this transformers runs Qwen2.5-VL")
def test_engine_refuses_qwen_on_transformers_4() -> None:
    """Built from a config (4.57's processor refuses the tiny checkpoint's generic tokenizer)."""
    text = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 100,
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
    }
    vision = {"depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64}
    model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(text_config=text, vision_config=vision)).eval()
    with pytest.raises(
        ValueError, match=r"transformers 4\.\S+: the pruning engine runs Qwen2\.5-VL .* on transformers 5"
    ):
        PrunedLlava(model, PruningConfig())
