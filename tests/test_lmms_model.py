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
from lmms_eval.models.model_utils.gen_metrics import get_logged_metrics_history, reset_logged_metrics
from transformers import LlavaForConditionalGeneration

from himap_lmms.compat import dtype_argument
from himap_lmms.lmms_llava_onevision import HimapLlavaOnevision
from himap_lmms.lmms_model import HimapLlava

pytestmark = pytest.mark.transformers_matrix  # the adapter's and LLaVA-NeXT's tests, on every version

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


def test_models_command_lists_the_himap_models() -> None:
    listing = subprocess.run([str(LMMS_EVAL), "models"], capture_output=True, text=True, timeout=300, check=True)
    rows = {line.split()[0]: line.split()[1] for line in listing.stdout.splitlines() if line.startswith("himap")}
    assert rows == {"himap_llava": "simple", "himap_llava_onevision": "simple", "himap_qwen2_5_vl": "simple"}


def test_entry_points_resolve_to_the_adapters() -> None:
    from lmms_eval.models import get_model

    assert get_model("himap_llava") is HimapLlava
    assert get_model("himap_llava_onevision") is HimapLlavaOnevision


@pytest.mark.parametrize(
    ("model_args", "message"),
    [
        ({"method": "fast"}, r"method='fast' is not known"),
        ({"method": "himap", "keep": 10}, r"keep is not an argument of method=himap"),
        ({"method": "himap", "k1": 4, "k2": 3}, r"k2=3 must be greater than k1=4"),
        ({"method": "himap", "k2": 12}, r"k2=12 is out of range: the model has 12 decoder layers"),
        ({"method": "himap", "k1": 20}, r"k1=20 is out of range: the model has 12 decoder layers"),  # not k2=8
        ({"method": "pyramiddrop", "layers": "3/6/14"}, r"layers=3/6/14 is out of range: the model has 12 decoder"),
        ({"method": "fastv", "ratio": 1.5}, r"ratio=1.5 is out of range: it must be in \(0, 1\]"),
        ({"flops_convention": "exact"}, r"flops_convention='exact' is not known"),
        ({"batch_size": 0}, r"batch_size=0 must be >= 1"),
        ({"max_new_tokens": "many"}, r"max_new_tokens='many' is not an integer"),
        ({"chat_template": "vicuna"}, r"chat_template='vicuna' is neither a known name \(vicuna_v1, model\)"),
        ({"temperature_x": 1}, r"unknown model_args for himap_llava: temperature_x"),
        ({"attn_implementation": "flex_attention"}, r"attn_implementation='flex_attention' is not supported"),
    ],
)
def test_bad_model_args_raise_naming_the_argument(tiny_llava_dir, model_args, message) -> None:
    with pytest.raises(ValueError, match=message):
        make_model(tiny_llava_dir, **model_args)


def test_batch_size_in_model_args_is_refused_naming_both_places(tiny_llava_dir) -> None:
    """lmms-eval passes --batch_size to the model itself; the same key in model_args was a bare TypeError."""
    with pytest.raises(
        ValueError, match=r"batch_size=0 in model_args: give the batch size as --batch_size \(this run's is 1\)"
    ):
        HimapLlava.create_from_arg_string(
            f"pretrained={tiny_llava_dir},batch_size=0", {"batch_size": 1, "device": None}
        )


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

    inputs = adapter._encode((QUESTIONS[0],), [[draw_image(0)]], [TASK], [0])
    target = adapter.tokenizer(continuation, add_special_tokens=False, return_tensors="pt").input_ids
    model = LlavaForConditionalGeneration.from_pretrained(tiny_llava_dir, **dtype_argument(torch.float32)).eval()
    with torch.no_grad():
        full = torch.cat([inputs["input_ids"], target], dim=1)
        logits = model(input_ids=full, pixel_values=inputs["pixel_values"], attention_mask=torch.ones_like(full)).logits
    prompt = inputs["input_ids"].shape[1]
    logprobs = logits[0, prompt - 1 : -1].log_softmax(dim=-1)
    expected = float(logprobs.gather(1, target[0][:, None]).sum())
    assert ours == pytest.approx(expected, abs=1e-4)


def test_model_args_are_checked_before_anything_loads(tmp_path) -> None:
    """An empty directory cannot be loaded: the error must come from the argument, checked first."""
    with pytest.raises(ValueError, match=r"chat_template='vicuna' is neither a known name"):
        HimapLlava(pretrained=str(tmp_path), chat_template="vicuna")
    with pytest.raises(ValueError, match=r"attn_implementation='flash_attention_2' is not supported"):
        HimapLlava(pretrained=str(tmp_path), attn_implementation="flash_attention_2")


@pytest.mark.parametrize("pretrained", ["checkpoints/missing/llava", "./llava-testbed", "/no/such/dir"])
def test_a_missing_checkpoint_directory_is_named(pretrained, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=rf"pretrained='{pretrained}': no such directory .*{tmp_path}"):
        HimapLlava(pretrained=pretrained)


def test_a_relative_checkpoint_resolves_against_the_working_directory(tiny_llava_dir, monkeypatch) -> None:
    monkeypatch.chdir(tiny_llava_dir.parent)
    assert HimapLlava(pretrained=f"./{tiny_llava_dir.name}", device="cpu").model.config.model_type == "llava"


def test_generation_settings_it_cannot_honour_are_errors(tiny_llava_dir) -> None:
    model = make_model(tiny_llava_dir)
    beams = requests()
    for request in beams:
        request.arguments[1]["num_beams"] = 3
    with pytest.raises(ValueError, match=r"gen_kwargs num_beams=3 is not supported"):
        model.generate_until(beams)


def test_probe_tasks_refuse_a_pruning_method(tiny_llava_dir) -> None:
    model = make_model(tiny_llava_dir, method="himap")
    probe = requests()
    for request in probe:
        request.arguments[1].update(probe="saliency", answer_field="answer")
    with pytest.raises(ValueError, match=r"task 'toy' runs the saliency probe, .* drop method=himap"):
        model.generate_until(probe)


def test_a_prompt_beyond_the_context_is_an_error_naming_the_doc(tiny_llava_dir) -> None:
    model = make_model(tiny_llava_dir)
    model.context_length = 600  # the longest prompt has 576 image tokens + its text
    with pytest.raises(
        ValueError, match=r"task 'toy' doc 1: the prompt has 6\d\d tokens, more than the model's context of 600"
    ):
        model.generate_until(requests())


def test_a_count_that_keeps_every_image_token_warns_once(tiny_llava_dir, caplog) -> None:
    model = make_model(tiny_llava_dir, method="himap", keep1=600, keep2=100, batch_size=1)
    with caplog.at_level("WARNING", logger="himap_lmms.lmms_model"):
        model.generate_until(requests())
    warnings = [record.getMessage() for record in caplog.records]
    assert warnings == ["keep1=600 keeps every image token of samples with 576 of them: that step prunes nothing there"]


def test_costs_reach_the_results_as_exact_means_and_the_log_with_a_run_id(tiny_llava_dir, tmp_path) -> None:
    log = tmp_path / "costs.jsonl"
    reset_logged_metrics()
    for _ in range(2):  # a rerun appends to the same log
        make_model(tiny_llava_dir, method="himap", batch_size=2, cost_log=str(log)).generate_until(requests())
    records = [json.loads(line) for line in log.read_text().splitlines()]
    runs = sorted({record["run_id"] for record in records})
    assert len(runs) == 2 and [sum(r["run_id"] == run for r in records) for run in runs] == [3, 3]

    (entry, _) = get_logged_metrics_history()  # one entry per generate_until call, not one per example
    first = [record for record in records if record["run_id"] == records[0]["run_id"]]
    assert entry["total_requests"] == 3  # batches of 2 and 1: a mean of batch means would weight them equally
    assert entry["flops_ratio"] == pytest.approx(sum(r["flops_ratio"] for r in first) / 3)
    assert entry[f"latency_s:{TASK}"] == pytest.approx(sum(r["latency_s"] for r in first) / 3)
    assert entry["total_elapsed_time"] == pytest.approx(sum(r["latency_s"] for r in first))


def test_cost_records_name_the_schedule_that_ran(tiny_llava_dir, tmp_path) -> None:
    """PyramidDrop's stages=3 are placed by the model's depth; the record says where they fell."""
    log = tmp_path / "costs.jsonl"
    make_model(tiny_llava_dir, method="pyramiddrop", stages=3, cost_log=str(log)).generate_until(requests()[:1])
    (record,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert record["method"] == "pyramiddrop(layers=3/6/9,ratio=0.5)"
