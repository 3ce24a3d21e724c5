"""Slow references and helpers the engine, method and pooling tests share: the engine's generate, transformers'
LLaVA input and decoder layers run by hand (eager, no cache, tokens removed physically), the reference ranking and
logits written from docs/method.md, and the check of an engine run against a reference, alone and batched."""

from __future__ import annotations

import torch

from himap_lmms.compat import (
    call_decoder_layer,
    image_token_id,
    language_model_of,
    lm_head_of,
)
from himap_lmms.pruning import PrunedLlava, PruningConfig


def generate(model, config: PruningConfig, inputs: dict, steps: int = 4):
    return PrunedLlava(model, config).generate(**inputs, max_new_tokens=steps, return_logits=True)


def merged_embeddings(model, inputs: dict) -> torch.Tensor:
    """The embeddings transformers' Llava forward hands its language model (image features scattered in)."""
    captured = {}

    def grab(module, args, kwargs):
        captured["embeds"] = kwargs["inputs_embeds"]

    handle = language_model_of(model).register_forward_pre_hook(grab, with_kwargs=True)
    with torch.no_grad():
        model(**inputs)
    handle.remove()
    return captured["embeds"]


def run_layers(model, hidden, positions, layers) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-sequence eager forward through ``layers``; returns hidden states and the last layer's attention."""
    lm = language_model_of(model)
    n = hidden.shape[1]
    mask = torch.full((n, n), torch.finfo(hidden.dtype).min, dtype=hidden.dtype, device=hidden.device)
    mask = mask.triu(1)[None, None]
    embeddings = lm.rotary_emb(hidden, positions[None])
    captured = {}
    for index in layers:
        layer = lm.layers[index]
        handle = layer.self_attn.register_forward_hook(lambda m, a, out: captured.update(attn=out[1]))
        hidden = call_decoder_layer(
            layer, hidden, attention_mask=mask, position_ids=positions[None], position_embeddings=embeddings
        )
        handle.remove()
    return hidden, captured.get("attn")


def reference_ranking(
    model, inputs: dict, schedule: list[tuple[int, str, int]], kept: list[torch.Tensor] | None = None
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per (layer, score, keep) step: the image positions left, their scores by the spec's formulas, and the top-k.

    After each step the sequence keeps that top-k, or ``kept[step]`` when given (the engine's choice), so that each
    step is scored on the sequence the engine had even where rounding made the two choose differently before.
    """
    ids = inputs["input_ids"][0]
    image = (ids == image_token_id(model.config)).nonzero().flatten()
    device = ids.device
    text = torch.arange(int(image.max()) + 1, len(ids), device=device)
    index = torch.arange(len(ids), device=device)
    hidden = merged_embeddings(model, inputs)
    ranking, start = [], 0
    with torch.no_grad():
        for step, (layer, score, keep) in enumerate(schedule):
            hidden, attn = run_layers(model, hidden, index, range(start, layer))
            probs = attn[0].double().mean(dim=0)
            where = {int(p): j for j, p in enumerate(index)}
            image_columns = torch.tensor([where[int(p)] for p in image], device=device)
            if score == "instruction":
                rows = torch.tensor([where[int(p)] for p in text], device=device)
            elif score == "visual":
                rows = image_columns
            else:
                rows = torch.tensor([len(index) - 1], device=device)
            scores = probs.index_select(0, rows).index_select(1, image_columns).sum(dim=0)
            top = image[scores.topk(keep).indices.sort().values]
            ranking.append((image, scores, top))
            image = top if kept is None else kept[step]
            survivors = set(range(len(index))) - set(image_columns.tolist()) | {where[int(p)] for p in image}
            survivors = torch.tensor(sorted(survivors), device=device)
            hidden, index = hidden.index_select(1, survivors), index.index_select(0, survivors)
            start = layer
    return ranking


def reference_logits(model, inputs: dict, schedule, kept, generated: torch.Tensor) -> torch.Tensor:
    """Next-token logits of prompt + ``generated`` by a full recompute with the kept sets fixed."""
    ids = inputs["input_ids"][0]
    image = (ids == image_token_id(model.config)).nonzero().flatten().tolist()
    hidden = torch.cat([merged_embeddings(model, inputs), model.get_input_embeddings()(generated[None])], dim=1)
    index = torch.arange(hidden.shape[1], device=hidden.device)
    boundaries = [layer for layer, _, _ in schedule] + [model.config.text_config.num_hidden_layers]
    start = 0
    with torch.no_grad():
        for step, stop in enumerate(boundaries):
            hidden, _ = run_layers(model, hidden, index, range(start, stop))
            if step < len(kept):
                dropped = set(image) - set(kept[step].tolist())
                survivors = [j for j, p in enumerate(index.tolist()) if p not in dropped]
                survivors = torch.tensor(survivors, device=hidden.device)
                hidden, index = hidden.index_select(1, survivors), index.index_select(0, survivors)
            start = stop
        lm = language_model_of(model)
        return lm_head_of(model)(lm.norm(hidden[:, -1:]))[0, -1].float()


def sample(inputs: dict, b: int) -> dict:
    """Sample ``b`` of a left-padded batch of one image per sample, unpadded, as a batch of one (with its image's
    ``image_sizes`` and ``batch_num_images`` where the processor gave them)."""
    real = inputs["attention_mask"][b].bool()
    per_image = {name: inputs[name][b : b + 1] for name in ("image_sizes", "batch_num_images") if name in inputs}
    return {
        "input_ids": inputs["input_ids"][b][real][None],
        "attention_mask": inputs["attention_mask"][b][real][None],
        "pixel_values": inputs["pixel_values"][b : b + 1],
        **per_image,
    }


def image_positions(model, inputs: dict) -> list[int]:
    return (inputs["input_ids"][0] == image_token_id(model.config)).nonzero().flatten().tolist()


def check_against(model, eager, config, kept_of, logits_of, inputs: dict, steps: int = 2, atol: float = 1e-6) -> None:
    """Engine on the padded batch and on each sample alone: kept positions equal the reference's, logits within
    ``atol`` of its, and the batch generates each sample's tokens alone."""
    together = generate(model, config, inputs, steps)
    padding = (inputs["attention_mask"] == 0).sum(dim=1).tolist()
    for b in range(inputs["input_ids"].shape[0]):
        alone_inputs = sample(inputs, b)
        alone = generate(model, config, alone_inputs, steps)
        expected = kept_of(eager, alone_inputs)
        assert [kept[0].tolist() for kept in alone.stats.kept] == [list(map(int, k)) for k in expected]
        assert [(kept[b] - padding[b]).tolist() for kept in together.stats.kept] == [
            list(map(int, k)) for k in expected
        ]
        for step in range(steps):
            reference = logits_of(eager, alone_inputs, expected, alone.sequences[0, :step])
            torch.testing.assert_close(alone.logits[step][0], reference, rtol=0, atol=atol)
            torch.testing.assert_close(together.logits[step][b], reference, rtol=0, atol=atol)
        assert together.sequences[b].tolist() == alone.sequences[0].tolist()


def tokens_at_7b(config: PruningConfig, text: int = 74, image: int = 576, layers: int = 32) -> list[int]:
    """Tokens of each of 7B's layers under ``config``, from its schedule bound to 32 layers."""
    return [text + n for n in config.image_tokens_per_layer(image, layers)]
