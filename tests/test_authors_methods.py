"""DART, PyramidDrop and VisionZip against slow references written from their authors' code.

Each reference follows its authors' code step for step, on one unpadded sample as their scripts run it: eager
attention, the whole sequence recomputed with no KV cache, tokens physically removed, the selection rules in plain
Python loops, and no engine code. The engine, alone and inside a left-padded batch, in float64 and float32, must
keep exactly the same tokens and give the same logits (one float32 ulp in float64, the dtype's tolerance below).

The model is the tiny LLaVA with 26 decoder layers (so that PyramidDrop's 8/16/24 exist) and a two-layer CLIP
read at its second-to-last layer, as LLaVA-1.5 reads CLIP-L (so that VisionZip's hard-coded ``[-2]`` applies).
Where the engine departs from the authors' code on purpose, a test below says how (docs/later_methods.md).
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from conftest import LOGIT_TOLERANCE, QUESTIONS, EngineTarget, draw_image, encode, sdpa_and_eager
from transformers import AutoProcessor, LlavaForConditionalGeneration
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

from himap_lmms.compat import (
    call_decoder_layer,
    image_features_per_image,
    image_token_id,
    language_model_of,
    lm_head_of,
    projector_of,
    vision_encoder_layers,
    vision_tower_of,
)
from himap_lmms.pruning import PrunedLlava, PruningConfig
from himap_lmms.pruning.kernels.visionzip import select_tokens
from himap_lmms.tiny_llava import TINY_CHECKPOINT, build_tiny_llava

SHAPE = replace(TINY_CHECKPOINT, name="tiny-authors", layers=26, vision_layers=2, vision_feature_layer=-2)
STEPS = 2
DTYPES = {"float64": torch.float64, "float32": torch.float32}


@pytest.fixture(scope="module")
def authors_dir(tmp_path_factory):
    return build_tiny_llava(tmp_path_factory.mktemp("tiny_authors"), SHAPE, corpus=QUESTIONS)


@pytest.fixture(scope="module", params=list(DTYPES))
def models(request, authors_dir) -> tuple[LlavaForConditionalGeneration, LlavaForConditionalGeneration]:
    """(engine's SDPA model, reference's eager model) in one dtype."""
    return sdpa_and_eager(authors_dir, DTYPES[request.param])


@pytest.fixture(scope="module")
def authors_processor(authors_dir):
    return AutoProcessor.from_pretrained(authors_dir)


def batch_of(processor, model) -> dict:
    target = EngineTarget(torch.device("cpu"), model.dtype, "sdpa")
    inputs = encode(processor, QUESTIONS[:2], [draw_image(0), draw_image(1)], target)
    assert not bool(inputs["attention_mask"].all()), "the prompts should need padding"
    return inputs


def alone(inputs: dict, b: int) -> dict:
    real = inputs["attention_mask"][b].bool()
    return {
        "input_ids": inputs["input_ids"][b][real][None],
        "attention_mask": inputs["attention_mask"][b][real][None],
        "pixel_values": inputs["pixel_values"][b : b + 1],
    }


# --- the pieces every reference shares: LLaVA-1.5's input merge and a plain eager decoder layer -------------


def image_span(model, ids: torch.Tensor) -> tuple[int, int]:
    """(first image position, image tokens): the authors' ``image_token_start_index`` and ``..._length``."""
    image = (ids == image_token_id(model.config)).nonzero().flatten()
    return int(image[0]), image.numel()


def llava_input(model, inputs: dict, generated: torch.Tensor, image_features: torch.Tensor | None = None):
    """Text embeddings around the image features (all of the image's, or ``image_features`` in their place),
    then the generated tokens: ``prepare_inputs_labels_for_multimodal`` of LLaVA."""
    ids = inputs["input_ids"][0]
    start, length = image_span(model, ids)
    embed = model.get_input_embeddings()
    with torch.no_grad():
        if image_features is None:
            image_features = image_features_per_image(
                model, inputs["pixel_values"], inputs.get("image_sizes"), inputs.get("batch_num_images")
            )[0]
        pieces = [embed(ids[:start]), image_features, embed(ids[start + length :]), embed(generated)]
    return torch.cat(pieces)[None]


def run_layer(model, index: int, hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Decoder layer ``index`` over the whole (physically shortened) sequence, eager, causal."""
    lm = language_model_of(model)
    n = hidden.shape[1]
    mask = torch.full((n, n), torch.finfo(hidden.dtype).min, dtype=hidden.dtype).triu(1)[None, None]
    embeddings = lm.rotary_emb(hidden, positions[None])
    with torch.no_grad():
        return call_decoder_layer(
            lm.layers[index], hidden, attention_mask=mask, position_ids=positions[None], position_embeddings=embeddings
        )


def projections(model, index: int, hidden: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer ``index``'s queries and keys of ``hidden`` (its input) after the rotary embedding, as its attention
    makes them: ``(1, heads, n, head_dim)`` and ``(1, kv_heads, n, head_dim)``."""
    lm = language_model_of(model)
    layer = lm.layers[index]
    attn = layer.self_attn
    with torch.no_grad():
        x = layer.input_layernorm(hidden)
        q = attn.q_proj(x).view(1, x.shape[1], -1, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(1, x.shape[1], -1, attn.head_dim).transpose(1, 2)
        cos, sin = lm.rotary_emb(hidden, positions[None])
        return apply_rotary_pos_emb(q, k, cos, sin)


def logits_of(model, hidden: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return lm_head_of(model)(language_model_of(model).norm(hidden[:, -1]))[0].float()


# --- DART: modeling_llama_self.py, DART.forward and get_retained_image_token ----------------------------------


def dart_reference(model, inputs, generated, K, max_num_trunction, ratio, pivot_image_token, pivot_text_token):
    """Kept image positions and next-token logits; ``max_num_trunction`` None means the ratio (kept share)."""
    ids = inputs["input_ids"][0]
    image_token_start_index, image_token_length = image_span(model, ids)
    hidden = llava_input(model, inputs, generated)
    seq_length = hidden.shape[1]
    position_ids = torch.arange(seq_length)
    lm = language_model_of(model)
    retained, inputs_of = None, []  # inputs_of[i]: what layer i read (the authors take its keys from layer K - 1)
    for layer_idx in range(len(lm.layers)):
        if layer_idx == K:
            with torch.no_grad():
                last_layer_state = lm.norm(hidden)
            _, any_states = projections(model, K - 1, inputs_of[K - 1], position_ids)
            any_states = repeat_kv(any_states, lm.layers[K - 1].self_attn.num_key_value_groups)
            budget = max_num_trunction if max_num_trunction is not None else image_token_length * ratio
            TOKEN_TOPK = math.ceil(budget // (pivot_image_token + pivot_text_token))
            any_states = any_states.permute(0, 2, 1, 3).reshape(1, seq_length, -1)
            end_of_prompt = seq_length - generated.numel()  # the selection sees the prompt only (prefill)
            k_image = any_states[0][image_token_start_index : image_token_start_index + image_token_length]
            k_query = any_states[0][image_token_start_index + image_token_length : end_of_prompt]
            image_l1 = torch.norm(k_image, p=1, dim=-1)
            query_l1 = torch.norm(k_query, p=1, dim=-1)
            image_indices = (image_l1.topk(pivot_image_token).indices + image_token_start_index).tolist()
            query_indices = (
                query_l1.topk(pivot_text_token).indices + image_token_start_index + image_token_length
            ).tolist()
            indices_set = set(image_indices + query_indices)
            valid_indices = set(range(image_token_start_index, image_token_start_index + image_token_length)) - set(
                image_indices
            )
            valid_indices_list = list(valid_indices)
            for item in list(indices_set):
                valid_vectors = last_layer_state[0][valid_indices_list, :]
                cos_sim = -torch.nn.functional.cosine_similarity(last_layer_state[0][item, :], valid_vectors, dim=-1)
                top_k_indices = cos_sim.topk(TOKEN_TOPK).indices
                top_k_real_indices = [valid_indices_list[i] for i in top_k_indices]
                indices_set.update(top_k_real_indices)
                valid_indices.difference_update(top_k_real_indices)
                valid_indices_list = list(valid_indices)
            indices_set.difference_update(query_indices)
            retained = torch.tensor(list(indices_set))
            keep_indexs = (
                torch.cat(
                    (
                        torch.arange(image_token_start_index),
                        retained,
                        torch.arange(image_token_start_index + image_token_length, seq_length),
                    )
                )
                .sort()
                .values
            )
            hidden = hidden[:, keep_indexs, :]
            position_ids = keep_indexs
        inputs_of.append(hidden)
        hidden = run_layer(model, layer_idx, hidden, position_ids)
    return retained.sort().values, logits_of(model, hidden)


# --- PyramidDrop: modeling_llama_pdrop.py, pdrop_forward and pdrop_rank_drop ---------------------------------


def pdrop_reference(model, inputs, generated, layer_list, image_token_ratio_list, repeat_keys=False):
    """Kept image positions (of the original prompt) after each stage, and next-token logits. ``repeat_keys``
    repeats grouped keys to every query head, which the authors' code (written for LLaVA-1.5's equal counts)
    does not do: the engine's departure for grouped-key models."""
    ids = inputs["input_ids"][0]
    image_index, n_image = image_span(model, ids)
    ratios = [1.0, *image_token_ratio_list]
    prompt_len = ids.numel() - n_image  # the prompt's text tokens (LLaVA's placeholder counted out)
    hidden = llava_input(model, inputs, generated)
    original = torch.arange(hidden.shape[1])  # which prompt position each column holds, for the kept sets
    position_ids = torch.arange(hidden.shape[1])
    lm = language_model_of(model)
    kept = []
    for layer_idx in range(len(lm.layers)):
        hidden = run_layer(model, layer_idx, hidden, position_ids)
        rank_layer = layer_idx + 1
        if rank_layer not in layer_list:
            continue
        stage = layer_list.index(rank_layer)
        image_tokens = int(n_image * ratios[stage])
        keep_length = int(n_image * ratios[stage + 1])
        query_states, key_states = projections(model, rank_layer, hidden, position_ids)
        if repeat_keys:
            key_states = repeat_kv(key_states, lm.layers[rank_layer].self_attn.num_key_value_groups)
        head_dim = lm.layers[rank_layer].self_attn.head_dim
        prompt_total_len = prompt_len + image_tokens
        text_query_states = query_states[0][:, prompt_total_len - 1, :].unsqueeze(1)
        n = hidden.shape[1]
        causal = torch.full((n, n), torch.finfo(hidden.dtype).min, dtype=hidden.dtype).triu(1)
        attn_weights = torch.matmul(text_query_states, key_states[0].transpose(1, 2)) / math.sqrt(head_dim)
        attn_weights = attn_weights + causal[prompt_total_len - 1]
        attn_weights = torch.nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query_states.dtype)
        attention_avg_head = torch.mean(attn_weights, dim=0)[:, image_index : image_index + image_tokens]
        attention_avg_text = torch.mean(attention_avg_head, dim=0)
        top_rank_index = attention_avg_text.topk(keep_length).indices + image_index
        top_rank_index = top_rank_index.sort().values
        start_index = image_index + image_tokens
        columns = torch.cat([torch.arange(image_index), top_rank_index, torch.arange(start_index, n)])
        hidden, original = hidden[:, columns], original[columns]
        position_ids = torch.arange(hidden.shape[1])
        kept.append(original[image_index : image_index + keep_length])
    return kept, logits_of(model, hidden)


# --- VisionZip: clip_encoder.py CLIPVisionTower_VisionZip.forward, utils.py CLIPAttention_forward ------------


def visionzip_tokens(model, pixel_values, dominant, contextual):
    """(the tokens VisionZip hands the projector, the dominant patches (0-based, sorted)), one image.

    The authors read ``attentions[-2]``, ``hidden_states[-2]`` and ``layers[-2]``: LLaVA-1.5's feature layer,
    which is what ``vision_feature_layer`` says; here it is read from the config (a documented departure)."""
    tower = vision_tower_of(model)
    feature = model.config.vision_feature_layer  # -2 in LLaVA-1.5, as the authors hard-code
    dominant_num, contextual_num = dominant - 1, contextual
    with torch.no_grad():
        states = tower(pixel_values, output_hidden_states=True).hidden_states
        layer = vision_encoder_layers(tower)[feature]
        attn = layer.self_attn
        x = layer.layer_norm1(states[feature - 1])
        bsz, tgt_len, _ = x.shape
        query_states = (attn.q_proj(x) * attn.scale).view(bsz, tgt_len, -1, attn.head_dim).transpose(1, 2)
        key_states = attn.k_proj(x).view(bsz, tgt_len, -1, attn.head_dim).transpose(1, 2)
        attn_weights = torch.nn.functional.softmax(torch.matmul(query_states, key_states.transpose(2, 3)), dim=-1)
        metric = key_states.mean(1)[0]
        hidden_states = states[feature][0]
    cls_attention_sum = attn_weights[0, :, 0, 1:].sum(dim=0)
    topk_indices = (cls_attention_sum.topk(dominant_num).indices + 1).tolist()
    dominant_positions = sorted([0, *topk_indices])
    dominant_tokens = hidden_states[dominant_positions]
    others = [j for j in range(tgt_len) if j not in dominant_positions]
    metric_normalized = [metric[j] / metric[j].norm() for j in others]
    step = max(1, len(others) // contextual_num)
    target_indices = list(range(0, len(others), step))[:contextual_num]
    groups = {t: [] for t in target_indices}
    for i in range(len(others)):
        if i in groups:
            continue
        similarity = [float(metric_normalized[i] @ metric_normalized[t]) for t in target_indices]
        groups[target_indices[similarity.index(max(similarity))]].append(hidden_states[others[i]])
    contextual_tokens = [
        hidden_states[others[t]] + (torch.stack(members).mean(dim=0) if members else 0) for t, members in groups.items()
    ]
    tokens = torch.cat([dominant_tokens, torch.stack(contextual_tokens)])
    return tokens, torch.tensor([j - 1 for j in dominant_positions[1:]])


def visionzip_reference(model, inputs, generated, dominant, contextual):
    tokens, patches = visionzip_tokens(model, inputs["pixel_values"], dominant, contextual)
    with torch.no_grad():
        hidden = llava_input(model, inputs, generated, projector_of(model)(tokens))
    positions = torch.arange(hidden.shape[1])
    for index in range(len(language_model_of(model).layers)):
        hidden = run_layer(model, index, hidden, positions)
    return patches, logits_of(model, hidden)


# --- the engine against the references -------------------------------------------------------------------


def run_engine(model, config, inputs):
    return PrunedLlava(model, config).generate(**inputs, max_new_tokens=STEPS, return_logits=True)


def check(models, processor, config, reference, kept_of=None) -> None:
    """Engine (batch, alone) = ``reference(eager, inputs, generated) -> (kept, logits)`` for every sample and step;
    ``kept_of(result, row, padding, inputs)`` reads the engine's kept sets for row ``row`` of the ``inputs`` it ran
    (default: its ``stats.kept`` per step, less the row's padding)."""
    model, eager = models
    tolerance = 1e-6 if model.dtype == torch.float64 else LOGIT_TOLERANCE[torch.float32]
    inputs = batch_of(processor, model)
    together = run_engine(model, config, inputs)
    padding = (inputs["attention_mask"] == 0).sum(dim=1).tolist()
    kept_of = kept_of or (lambda result, row, pad, used: [step[row] - pad for step in result.stats.kept])
    for b in range(inputs["input_ids"].shape[0]):
        sample = alone(inputs, b)
        single = run_engine(model, config, sample)
        for step in range(STEPS):
            expected_kept, expected_logits = reference(eager, sample, single.sequences[0, :step])
            if step == 0:
                expected_kept = expected_kept if isinstance(expected_kept, list) else [expected_kept]
                for result, row, pad, used in ((single, 0, 0, sample), (together, b, padding[b], inputs)):
                    got = kept_of(result, row, pad, used)
                    assert [k.tolist() for k in got] == [k.tolist() for k in expected_kept]
            torch.testing.assert_close(single.logits[step][0], expected_logits, rtol=0, atol=tolerance)
            torch.testing.assert_close(together.logits[step][b], expected_logits, rtol=0, atol=tolerance)
        assert together.sequences[b].tolist() == single.sequences[0].tolist()


@pytest.mark.parametrize(
    ("k", "keep", "ratio", "image_pivots", "text_pivots"),
    [(2, 128, None, 4, 4), (3, 64, None, 2, 6), (5, None, 0.3, 8, 0)],
    ids=["authors-llava15", "k3-keep64-2+6", "k5-ratio0.3-8+0"],
)
def test_dart_matches_its_authors_code(models, authors_processor, k, keep, ratio, image_pivots, text_pivots) -> None:
    config = PruningConfig.from_args(
        "dart", k=k, keep=keep, ratio=ratio, image_pivots=image_pivots, text_pivots=text_pivots
    )
    check(
        models,
        authors_processor,
        config,
        lambda eager, inputs, generated: dart_reference(
            eager, inputs, generated, k, keep, ratio, image_pivots, text_pivots
        ),
    )


@pytest.mark.parametrize(
    ("layers", "ratio"),
    [((8, 16, 24), 0.5), ((2, 10, 20), 0.3), ((4, 12), 0.6)],
    ids=["authors-llava15", "2/10/20-0.3", "4/12-0.6"],
)
def test_pyramiddrop_matches_its_authors_code(models, authors_processor, layers, ratio) -> None:
    config = PruningConfig.from_args("pyramiddrop", layers=layers, ratio=ratio)
    ratio_list = [ratio**s for s in range(1, len(layers) + 1)]
    check(
        models,
        authors_processor,
        config,
        lambda eager, inputs, generated: pdrop_reference(eager, inputs, generated, list(layers), ratio_list),
    )


@pytest.mark.parametrize(
    ("dominant", "contextual"),
    [(54, 10), (108, 20), (162, 30), (1, 7), (300, 40)],
    ids=["authors-64", "authors-128", "authors-192", "class-token-only", "300+40"],
)
def test_visionzip_matches_its_authors_code(models, authors_processor, dominant, contextual) -> None:
    model, _ = models
    config = PruningConfig.from_args("visionzip", dominant=dominant, contextual=contextual)

    def kept(result, row, pad, used):  # the dominant patches, from the engine's own tower selection
        return [select_tokens(model, used["pixel_values"], config.steps[0])[1][row]]

    check(
        models,
        authors_processor,
        config,
        lambda eager, inputs, generated: visionzip_reference(eager, inputs, generated, dominant, contextual),
        kept,
    )


# --- where the engine departs from the authors' code on purpose (docs/later_methods.md) ------------------------


def test_dart_quotas_stop_when_no_image_token_is_left(model64, processor) -> None:
    """The authors' ``topk`` fails once the quotas ask for more tokens than are left; here a pivot takes what is
    left, so a budget of the whole image keeps it all (and is vanilla), and a prompt with fewer text tokens than
    text pivots uses the ones it has."""
    inputs = encode(processor, QUESTIONS[:1], [draw_image(3)])
    vanilla = run_engine(model64, PruningConfig(), inputs)
    whole = run_engine(model64, PruningConfig.from_args("dart", keep=10_000), inputs)
    assert whole.stats.kept[0][0].numel() == 576
    assert torch.equal(whole.logits[0], vanilla.logits[0])
    start, length = image_span(model64, inputs["input_ids"][0])
    text = inputs["input_ids"].shape[1] - start - length  # the tokens after the image: fewer than 100
    assert text < 100
    many = run_engine(
        model64, PruningConfig.from_args("dart", keep=1040, text_pivots=100), inputs
    )  # 10 tokens per pivot
    assert many.stats.kept[0][0].numel() == 4 + (4 + text) * 10


def test_dart_pools_the_images_of_a_prompt(model64, processor) -> None:
    """The authors' code reads one image at a fixed place (``image_token_start_index``); here the image tokens
    are found by id, and the images of one prompt share the pivots and the quotas."""
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": "<image>\n<image>\n" + QUESTIONS[0]}], add_generation_prompt=True, tokenize=False
    )
    inputs = processor(images=[draw_image(3), draw_image(4)], text=[prompt], return_tensors="pt")
    result = run_engine(model64, PruningConfig.from_args("dart"), dict(inputs.to("cpu", torch.float64)))
    assert result.stats.kept[0][0].numel() == 4 + 8 * 16


def test_visionzip_without_contextual_tokens_keeps_the_dominant_ones(model64, processor) -> None:
    """``contextual=0`` divides by zero in the authors' code; here it keeps the dominant tokens alone, the same
    ones (and in the same order) as with contextual tokens."""
    pixels = encode(processor, QUESTIONS[:1], [draw_image(3)])["pixel_values"]
    alone, _ = select_tokens(model64, pixels, PruningConfig.from_args("visionzip", dominant=40, contextual=0).steps[0])
    merged, _ = select_tokens(model64, pixels, PruningConfig.from_args("visionzip", dominant=40, contextual=6).steps[0])
    assert alone.shape[1] == 40 and torch.equal(alone, merged[:, :40])


def test_visionzip_reads_the_configured_feature_layer(model64, processor) -> None:
    """The authors hard-code LLaVA-1.5's ``[-2]``; the engine reads ``vision_feature_layer`` (the tests' tiny
    model reads its one CLIP layer's output, -1), and matches the reference reading the same layer."""
    assert model64.config.vision_feature_layer == -1
    inputs = encode(processor, QUESTIONS[:1], [draw_image(5)])
    config = PruningConfig.from_args("visionzip", dominant=30, contextual=8)
    result = run_engine(model64, config, inputs)
    patches, logits = visionzip_reference(model64, inputs, inputs["input_ids"][0, :0], 30, 8)
    assert select_tokens(model64, inputs["pixel_values"], config.steps[0])[1][0].tolist() == patches.tolist()
    torch.testing.assert_close(result.logits[0][0], logits, rtol=0, atol=1e-6)


def test_pyramiddrop_repeats_grouped_keys(tmp_path, processor) -> None:
    """With fewer key heads than query heads the authors' product of queries and keys does not broadcast; the
    engine repeats each key head to its query heads, as the model's own attention does."""
    directory = build_tiny_llava(tmp_path, replace(TINY_CHECKPOINT, kv_heads=2), corpus=QUESTIONS)
    model, eager = sdpa_and_eager(directory)
    inputs = encode(processor, QUESTIONS[:1], [draw_image(6)])
    result = run_engine(model, PruningConfig.from_args("pyramiddrop", layers=(2, 5), ratio=0.5), inputs)
    kept, logits = pdrop_reference(eager, inputs, inputs["input_ids"][0, :0], [2, 5], [0.5, 0.25], repeat_keys=True)
    assert [k[0].tolist() for k in result.stats.kept] == [k.tolist() for k in kept]
    torch.testing.assert_close(result.logits[0][0], logits, rtol=0, atol=1e-6)
