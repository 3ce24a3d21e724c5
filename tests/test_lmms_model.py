"""The ``himap_llava`` lmms-eval adapter: registration, model_args errors, batching, cost records, loglikelihood."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import QUESTIONS, draw_image
from lmms_eval.api.instance import GenerationResult, Instance
from transformers import LlavaForConditionalGeneration

from himap_lmms.lmms_model import HimapLlava

TASK, SPLIT = "toy", "test"
LMMS_EVAL = Path(sys.executable).with_name("lmms-eval")


def make_model(path: Path, **model_args) -> HimapLlava:
    model = HimapLlava(pretrained=str(path), device="cpu", dtype="float32", **model_args)
    model.task_dict = {TASK: {SPLIT: [{"image": draw_image(i), "question": q} for i, q in enumerate(QUESTIONS)]}}
    return model


def requests(request_type: str = "generate_until", arguments=None) -> list[Instance]:
    gen_kwargs = {"max_new_tokens": 3, "temperature": 0, "until": ["\n\n"]}
    return [
        Instance(
            request_type=request_type,
            arguments=arguments(doc_id)
            if arguments
            else (QUESTIONS[doc_id], dict(gen_kwargs), lambda doc: [doc["image"]], doc_id, TASK, SPLIT),
            idx=0,
            metadata={"task": TASK, "doc_id": doc_id, "repeats": 1},
        )
        for doc_id in range(len(QUESTIONS))
    ]


def test_models_command_lists_himap_llava() -> None:
    listing = subprocess.run([str(LMMS_EVAL), "models"], capture_output=True, text=True, timeout=300, check=True)
    rows = {line.split()[0]: line.split()[1] for line in listing.stdout.splitlines() if line.startswith("himap")}
    assert rows == {"himap_llava": "simple"}


def test_entry_point_resolves_to_the_adapter() -> None:
    from lmms_eval.models import get_model

    assert get_model("himap_llava") is HimapLlava


@pytest.mark.parametrize(
    ("model_args", "message"),
    [
        ({"method": "fast"}, r"method='fast' is not known"),
        ({"method": "himap", "keep": 10}, r"keep is not an argument of method=himap"),
        ({"method": "himap", "k1": 4, "k2": 3}, r"k2=3 must be greater than k1=4"),
        ({"method": "himap", "k2": 12}, r"k2=12 is out of range: the model has 12 decoder layers"),
        ({"method": "fastv", "ratio": 1.5}, r"ratio=1.5 is out of range: it must be in \(0, 1\]"),
        ({"flops_convention": "exact"}, r"flops_convention='exact' is not known"),
        ({"batch_size": 0}, r"batch_size=0 must be >= 1"),
        ({"temperature_x": 1}, r"unknown model_args for himap_llava: temperature_x"),
        ({"attn_implementation": "flex_attention"}, r"attn_implementation='flex_attention' is not supported"),
    ],
)
def test_bad_model_args_raise_naming_the_argument(tiny_llava_dir, model_args, message) -> None:
    with pytest.raises(ValueError, match=message):
        make_model(tiny_llava_dir, **model_args)


def test_bad_dtype_and_foreign_model_are_named(tiny_llava_dir, tmp_path) -> None:
    with pytest.raises(ValueError, match=r"dtype='float13' is not a torch dtype"):
        HimapLlava(pretrained=str(tiny_llava_dir), device="cpu", dtype="float13")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match=r"is a 'bert' model; himap_llava supports llava, llava_next"):
        HimapLlava(pretrained=str(tmp_path), device="cpu")


@pytest.mark.parametrize("method_args", [{"method": "none"}, {"method": "himap"}, {"method": "fastv", "keep": 100}])
def test_batched_requests_answer_like_single_ones(tiny_llava_dir, tmp_path, method_args) -> None:
    single = make_model(tiny_llava_dir, batch_size=1, **method_args).generate_until(requests())
    log = tmp_path / "costs.jsonl"
    batched_model = make_model(tiny_llava_dir, batch_size=3, cost_log=str(log), **method_args)
    batched = batched_model.generate_until(requests())
    assert all(isinstance(result, GenerationResult) for result in batched)
    assert [r.text for r in batched] == [r.text for r in single]
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(record["doc_id"] for record in records) == [0, 1, 2]
    for record, result in zip(sorted(records, key=lambda r: r["doc_id"]), batched):
        assert record["tokens_per_layer"][0] == result.token_counts.input_tokens
        assert len(record["tokens_per_layer"]) == 12
        assert record["flops_convention"] == "fastv"
        assert record["latency_s"] >= record["prefill_s"] > 0
        expected_ratio = 1.0 if method_args["method"] == "none" else None
        if expected_ratio is not None:
            assert record["flops_ratio"] == pytest.approx(1.0)
        else:
            assert 0 < record["flops_ratio"] < 1


def test_loglikelihood_of_method_none_equals_a_plain_forward(tiny_llava_dir) -> None:
    adapter = make_model(tiny_llava_dir)
    continuation = " A. red"
    reqs = requests(
        "loglikelihood",
        lambda doc_id: (QUESTIONS[doc_id], continuation, lambda doc: [doc["image"]], doc_id, TASK, SPLIT),
    )
    ours = adapter.loglikelihood(reqs[:1])[0][0]

    inputs = adapter._encode((QUESTIONS[0],), [[draw_image(0)]])
    target = adapter.tokenizer(continuation, add_special_tokens=False, return_tensors="pt").input_ids
    model = LlavaForConditionalGeneration.from_pretrained(tiny_llava_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        full = torch.cat([inputs["input_ids"], target], dim=1)
        logits = model(input_ids=full, pixel_values=inputs["pixel_values"], attention_mask=torch.ones_like(full)).logits
    prompt = inputs["input_ids"].shape[1]
    logprobs = logits[0, prompt - 1 : -1].log_softmax(dim=-1)
    expected = float(logprobs.gather(1, target[0][:, None]).sum())
    assert ours == pytest.approx(expected, abs=1e-4)
