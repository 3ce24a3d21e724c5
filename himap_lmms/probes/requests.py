"""The probes as one call per example, for the lmms-eval adapter (which owns prompts, images and batching).

A task asks for a probe through its ``generation_kwargs`` (``probe: saliency`` or ``probe: disruption`` plus
the probe's settings); the adapter encodes the example as usual and hands the encoded inputs here. The answer
is a JSON string, the "generated text" lmms-eval passes to the task's ``process_results``.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from typing import Any

import torch
from transformers import PreTrainedModel

from himap_lmms.llava_forward import language_model_of
from himap_lmms.probes.disruption import Disruption, disrupted_generate
from himap_lmms.probes.saliency import answer_token_id, saliency_probe

PROBES = ("saliency", "disruption")
DEFAULT_MAX_NEW_TOKENS = 8


def run_probe_request(
    model: PreTrainedModel,
    processor: Any,
    inputs: Mapping[str, torch.Tensor],
    probe_kwargs: Mapping[str, Any],
    doc: Mapping[str, Any],
) -> str:
    """Run the probe ``probe_kwargs["probe"]`` on one encoded example and return its JSON record.

    ``inputs`` is the processor output of one example (batch 1, on the model's device). ``probe_kwargs`` is
    the task's generation_kwargs; keys the probe does not use (``until``, ``temperature``...) are ignored.

    - ``saliency``: ``answer_field`` (default ``"answer"``) names the doc field with the gold answer, an
      option index (0 -> ``"A"``) or a letter. Returns the per-layer flows and the model's greedy answer.
    - ``disruption``: ``flow``, ``start_layer``, ``end_layer`` (``None``: last layer), ``seed`` (0),
      ``max_new_tokens`` (8). Returns the undisturbed and the disrupted answers and first-step top-5 ids.
    """
    tokenizer = getattr(processor, "tokenizer", processor)
    probe = probe_kwargs.get("probe")
    max_new_tokens = _as_int("max_new_tokens", probe_kwargs.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))
    if probe == "saliency":
        gold = gold_letter(doc, probe_kwargs.get("answer_field", "answer"))
        result = saliency_probe(model, inputs, answer_token_id(tokenizer, gold))
        answer = disrupted_generate(model, inputs, None, max_new_tokens, tokenizer.eos_token_id)
        record = {
            "probe": probe,
            "gold": gold,
            "prediction": tokenizer.decode(answer.token_ids, skip_special_tokens=True),
            **result.to_dict(),
        }
    elif probe == "disruption":
        disruption = disruption_from_kwargs(probe_kwargs)
        window = disruption.window(len(language_model_of(model).layers))
        undisturbed = disrupted_generate(model, inputs, None, max_new_tokens, tokenizer.eos_token_id)
        disrupted = disrupted_generate(model, inputs, disruption, max_new_tokens, tokenizer.eos_token_id)
        record = {
            "probe": probe,
            "flow": disruption.flow,
            "start_layer": window.start,
            "end_layer": window.stop - 1,
            "seed": disruption.seed,
            "undisturbed": {
                "text": tokenizer.decode(undisturbed.token_ids, skip_special_tokens=True),
                "top5": undisturbed.top5,
            },
            "disrupted": {
                "text": tokenizer.decode(disrupted.token_ids, skip_special_tokens=True),
                "top5": disrupted.top5,
            },
        }
    else:
        raise ValueError(f"probe={probe!r} is not a known probe: choose one of {', '.join(PROBES)}")
    return json.dumps(record)


def disruption_from_kwargs(probe_kwargs: Mapping[str, Any]) -> Disruption:
    """A :class:`Disruption` from task / command-line values (``"4"``, ``4.0`` and ``"None"`` included)."""
    end_layer = probe_kwargs.get("end_layer")
    if isinstance(end_layer, str) and end_layer.strip().lower() in ("", "none", "null", "last"):
        end_layer = None
    return Disruption(
        flow=str(probe_kwargs.get("flow")),
        start_layer=_as_int("start_layer", probe_kwargs.get("start_layer", 0)),
        end_layer=None if end_layer is None else _as_int("end_layer", end_layer),
        seed=_as_int("seed", probe_kwargs.get("seed", 0)),
    )


def gold_letter(doc: Mapping[str, Any], field: str = "answer") -> str:
    """The gold option letter of a doc: an index (0 -> ``"A"``) or a letter already."""
    if field not in doc:
        raise ValueError(f"answer_field={field!r} is not a field of the doc (fields: {', '.join(doc)})")
    answer = doc[field]
    if isinstance(answer, str) and len(answer.strip()) == 1 and answer.strip().upper() in string.ascii_uppercase:
        return answer.strip().upper()
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(string.ascii_uppercase):
        raise ValueError(f"doc field {field!r}={answer!r} is neither an option index nor an option letter")
    return string.ascii_uppercase[answer]


def _as_int(name: str, value: Any) -> int:
    """Integers as lmms-eval hands them over: YAML ints, or ``--gen_kwargs`` strings / floats like ``4.0``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is not an integer") from None
    if not number.is_integer():
        raise ValueError(f"{name}={value!r} is not an integer")
    return int(number)
