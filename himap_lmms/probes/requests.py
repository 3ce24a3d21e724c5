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
from himap_lmms.values import parse_float, parse_int

# The gen_kwargs each probe reads, and the decoding keys lmms-eval tasks carry anyway. Anything else is a typo
# (``flw=img2img``) that would otherwise run the default setting under the user's label.
PROBE_SETTINGS = {
    "saliency": ("answer_field",),
    "disruption": ("flow", "start_layer", "end_layer", "seed"),
}
PROBES = tuple(PROBE_SETTINGS)
DECODING_KEYS = ("probe", "max_new_tokens", "until", "temperature", "do_sample", "top_p", "num_beams")
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
    the task's generation_kwargs, checked by :func:`check_probe_kwargs`.

    - ``saliency``: ``answer_field`` (default ``"answer"``) names the doc field with the gold answer, an
      option index (0 -> ``"A"``) or a letter. Returns the per-layer flows and the model's greedy answer.
    - ``disruption``: ``flow``, ``start_layer``, ``end_layer`` (``None``: last layer), ``seed`` (0),
      ``max_new_tokens`` (8). Returns the undisturbed and the disrupted answers and first-step top-5 ids.
    """
    tokenizer = getattr(processor, "tokenizer", processor)
    probe = probe_kwargs.get("probe")
    check_probe_kwargs(probe_kwargs)
    max_new_tokens = parse_int("max_new_tokens", probe_kwargs.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))
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
    else:
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
    return json.dumps(record)


def check_probe_kwargs(probe_kwargs: Mapping[str, Any]) -> None:
    """Refuse an unknown probe, a setting the probe does not read, and any decoding but greedy."""
    probe = probe_kwargs.get("probe")
    if probe not in PROBE_SETTINGS:
        raise ValueError(f"probe={probe!r} is not a known probe: choose one of {', '.join(PROBES)}")
    allowed = (*PROBE_SETTINGS[probe], *DECODING_KEYS)
    for key, value in probe_kwargs.items():
        if key not in allowed:
            raise ValueError(
                f"gen_kwargs {key}={value!r} is not a setting of the {probe} probe: it reads "
                f"{', '.join(PROBE_SETTINGS[probe])} (and {', '.join(DECODING_KEYS[1:])})"
            )
    sampling = parse_float("temperature", probe_kwargs.get("temperature") or 0) > 0 or _is_true(
        probe_kwargs.get("do_sample")
    )
    if sampling or parse_int("num_beams", probe_kwargs.get("num_beams") or 1) > 1:
        raise ValueError(
            f"the {probe} probe decodes greedily: drop temperature/do_sample/num_beams from gen_kwargs "
            f"(got temperature={probe_kwargs.get('temperature')!r}, do_sample={probe_kwargs.get('do_sample')!r}, "
            f"num_beams={probe_kwargs.get('num_beams')!r})"
        )


def _is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def disruption_from_kwargs(probe_kwargs: Mapping[str, Any]) -> Disruption:
    """A :class:`Disruption` from task / command-line values (``"4"``, ``4.0`` and ``"None"`` included)."""
    end_layer = probe_kwargs.get("end_layer")
    if isinstance(end_layer, str) and end_layer.strip().lower() in ("", "none", "null", "last"):
        end_layer = None
    return Disruption(
        flow=str(probe_kwargs.get("flow")),
        start_layer=parse_int("start_layer", probe_kwargs.get("start_layer", 0)),
        end_layer=None if end_layer is None else parse_int("end_layer", end_layer),
        seed=parse_int("seed", probe_kwargs.get("seed", 0)),
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
