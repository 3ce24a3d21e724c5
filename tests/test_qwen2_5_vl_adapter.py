"""The ``himap_qwen2_5_vl`` lmms-eval adapter on the tiny Qwen2.5-VL: registration, model_args errors, cost records,
``method=none`` against stock lmms-eval's ``qwen2_5_vl`` chat class, and the bundled benchmarks through the CLI."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import QUESTIONS, draw_image
from lmms_eval.api.instance import Instance
from lmms_samples import answers, answers_of

from himap_lmms.compat import QWEN2_5_VL_IN_ENGINE
from himap_lmms.lmms_qwen2_5_vl import HimapQwen2_5_VL
from himap_lmms.tiny_vlms import build_tiny_qwen2_5_vl

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data" / "scienceqa_img_synth"
TASK, SPLIT = "toy", "test"
BENCHMARKS = {"scienceqa_img_himap_local": "exact_match", "pope_synth": "pope_f1_score", "textvqa_synth": "exact_match"}
# The tiny checkpoint's own pixel range (docs/models.md): the bundled 168 px images pass unresized, 36 tokens each.
TINY_PIXELS = {"min_pixels": 56 * 56, "max_pixels": 224 * 224}

pytestmark = [
    pytest.mark.transformers_matrix,
    pytest.mark.skipif(not QWEN2_5_VL_IN_ENGINE, reason="the engine refuses Qwen2.5-VL on this transformers"),
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("qwen2_5_vl"), corpus=QUESTIONS)


def make_model(path: Path, **model_args) -> HimapQwen2_5_VL:
    model = HimapQwen2_5_VL(pretrained=str(path), device="cpu", dtype="float32", **(TINY_PIXELS | model_args))
    model.task_dict = {TASK: {SPLIT: [{"image": draw_image(i, 112), "question": q} for i, q in enumerate(QUESTIONS)]}}
    return model


def requests() -> list[Instance]:
    gen_kwargs = {"max_new_tokens": 3, "temperature": 0, "until": ["\n\n"]}
    return [
        Instance(
            request_type="generate_until",
            arguments=(question, dict(gen_kwargs), lambda doc: [doc["image"]], doc_id, TASK, SPLIT),
            idx=0,
            metadata={"task": TASK, "doc_id": doc_id, "repeats": 1},
        )
        for doc_id, question in enumerate(QUESTIONS)
    ]


def test_entry_point_resolves_to_the_adapter() -> None:
    from lmms_eval.models import get_model

    assert get_model("himap_qwen2_5_vl") is HimapQwen2_5_VL


@pytest.mark.parametrize(
    ("model_args", "message"),
    [
        ({"temperature_x": 1}, r"unknown model_args for himap_qwen2_5_vl: temperature_x"),
        ({"min_pixels": 0}, r"min_pixels=0 must be >= 1"),
        ({"method": "himap", "k2": 12}, r"k2=12 is out of range: the model has 12 decoder layers"),
        ({"method": "visionzip"}, r"method=visionzip supports llava .* not 'qwen2_5_vl'"),
        ({"method": "pyramiddrop", "stages": 3}, r"method=pyramiddrop renumbers .* Qwen2\.5-VL"),
    ],
)
def test_bad_model_args_raise_naming_the_argument(checkpoint: Path, model_args: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_model(checkpoint, **model_args)


def test_a_llava_checkpoint_is_refused_naming_the_model(tiny_llava_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"is a 'llava' model; himap_qwen2_5_vl supports qwen2_5_vl"):
        HimapQwen2_5_VL(pretrained=str(tiny_llava_dir), device="cpu")


def test_probe_tasks_are_refused_naming_the_model(checkpoint: Path) -> None:
    request = requests()[0]
    request.arguments[1]["probe"] = "saliency"
    with pytest.raises(ValueError, match=r"saliency probe, which supports LLaVA checkpoints .* not himap_qwen2_5_vl"):
        make_model(checkpoint).generate_until([request])


@pytest.mark.parametrize(("max_pixels", "tokens"), [(224 * 224, 64), (112 * 112, 16)])
def test_max_pixels_bounds_the_image_tokens(checkpoint: Path, max_pixels: int, tokens: int) -> None:
    """A 224 px image: 8 x 8 merged patches within the tiny range, resized to 112 px (4 x 4) under 112 * 112."""
    model = make_model(checkpoint, max_pixels=max_pixels)
    inputs = model._encode(("What is it?",), [[draw_image(0, 224)]], [TASK], [0])
    assert int((inputs["input_ids"] == model.model.config.image_token_id).sum()) == tokens


def test_batches_answer_as_one_by_one_and_record_pruned_cost(checkpoint: Path) -> None:
    """Batched (left padding) and one-by-one runs answer alike; HiMAP's records say what it pruned."""
    alone = make_model(checkpoint, method="himap", ratio1=0.5, ratio2=0.25)
    together = make_model(checkpoint, method="himap", ratio1=0.5, ratio2=0.25, batch_size=3)
    answers_alone = [result.text for result in alone.generate_until(requests())]
    assert [result.text for result in together.generate_until(requests())] == answers_alone
    costs = together._costs(
        together.engine.generate(**together._encode(tuple(QUESTIONS[:1]), [[draw_image(0, 112)]], [TASK], [0])),
        (TASK,),
        (0,),
    )
    assert costs[0].method == "himap(k1=2,ratio1=0.5,k2=8,ratio2=0.25)"
    assert costs[0].flops_ratio < 1 and costs[0].tokens_per_layer[2] < costs[0].tokens_per_layer[1]


@pytest.mark.slow
@pytest.mark.skipif(not DATA.is_dir(), reason="bundled data not generated")
@pytest.mark.skipif(importlib.util.find_spec("decord") is None, reason="lmms-eval's qwen2_5_vl imports decord")
def test_none_answers_as_the_stock_chat_class(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same task, docs and Python API (no CLI stripping on either side), both in bfloat16 as the stock class
    always loads."""
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    torch.set_num_threads(1)
    monkeypatch.chdir(REPO)  # the task's dataset_path is relative to the working directory
    task, pixels = "scienceqa_img_himap_local", ",".join(f"{key}={value}" for key, value in TINY_PIXELS.items())
    runs = {}
    for model, extra in (("qwen2_5_vl", "device_map=cpu"), ("himap_qwen2_5_vl", "method=none,dtype=bfloat16")):
        results = simple_evaluate(
            model=model,
            model_args=f"pretrained={checkpoint},device=cpu,{pixels},{extra}",
            tasks=[task],
            limit=8,
            batch_size=1,
            log_samples=True,
            task_manager=TaskManager(include_path=str(REPO / "tasks"), model_name=model),
        )
        runs[model] = answers_of(results["samples"][task])
    assert runs["himap_qwen2_5_vl"] == runs["qwen2_5_vl"]
    assert len(runs["qwen2_5_vl"]) == 8 and len(set(runs["qwen2_5_vl"].values())) > 1


@pytest.mark.slow
@pytest.mark.skipif(not DATA.is_dir(), reason="bundled data not generated")
def test_the_bundled_benchmarks_run_through_the_cli(checkpoint: Path, tmp_path: Path) -> None:
    """``lmms-eval eval --model himap_qwen2_5_vl ... method=himap`` on the three bundled benchmarks: results with
    each benchmark's metric and a FLOPs ratio below 1, from the cost records of every example."""
    pixels = ",".join(f"{key}={value}" for key, value in TINY_PIXELS.items())
    command = [str(Path(sys.executable).with_name("lmms-eval")), "eval", "--model", "himap_qwen2_5_vl"]
    command += ["--model_args", f"pretrained={checkpoint},dtype=float32,method=himap,{pixels}"]
    command += ["--tasks", ",".join(BENCHMARKS), "--include_path", str(REPO / "tasks"), "--limit", "4"]
    command += ["--batch_size", "2", "--log_samples", "--output_path", str(tmp_path / "out")]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True, timeout=900)
    (path,) = (tmp_path / "out").rglob("*_results.json")
    results = json.loads(path.read_text())
    for task, metric in BENCHMARKS.items():
        assert results["results"][task][f"{metric},none"] is not None
        assert 0 < results["throughput"][f"avg_flops_ratio:{task}"] < 1
        assert len(answers(tmp_path / "out", task)) == 4
    assert 0 < results["throughput"]["avg_flops_ratio"] < 1
