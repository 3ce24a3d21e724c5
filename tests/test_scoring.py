"""Attention-row scoring takes its query rows a block at a time: same scores, bounded memory."""

from __future__ import annotations

import pytest
import torch
from conftest import QUESTIONS, draw_image, encode

from himap_lmms.compat import image_token_id, language_model_of
from himap_lmms.pruning import PrunedLlava, PruningConfig, scoring

SCORED_AT = {"instruction": 1, "visual": 2}  # the layer each score reads under the config below


@pytest.mark.parametrize("kind", ["instruction", "visual"])
def test_blocked_rows_give_the_scores_of_all_rows_at_once(model64, processor, monkeypatch, kind) -> None:
    inputs = encode(processor, [QUESTIONS[1] * 3], [draw_image(1)])  # more text rows than one block
    layer = language_model_of(model64).layers[SCORED_AT[kind]]
    original = scoring.attention_rows
    calls = []

    def record(*args):
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(scoring, "attention_rows", record)
    PrunedLlava(model64, PruningConfig.from_args("himap", k1=2, ratio1=1.0, k2=3)).prefill(**inputs)
    calls = [call for call in calls if call[0] is layer]
    block = scoring.row_block_size(layer)
    assert len(calls) > 1 and max(call[2].numel() for call in calls) <= block

    _, layer_input, _, keys, embeddings, valid = calls[0]
    ids = inputs["input_ids"]
    is_image = ids == image_token_id(model64.config)
    is_text = torch.arange(ids.shape[1])[None] > is_image[0].nonzero().max()
    rows = (is_text if kind == "instruction" else is_image)[0].nonzero().flatten()
    every_row = original(layer, layer_input, rows, keys, embeddings, valid)[0].sum(dim=0)
    blocked = scoring.score_image_tokens(kind, layer, layer_input, keys, embeddings, valid, is_image, is_text)
    torch.testing.assert_close(blocked[0], every_row, rtol=1e-6, atol=1e-9)
