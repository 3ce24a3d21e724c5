"""Stock lmms-eval 0.7.3 on the tiny Qwen2.5-VL and LLaVA-OneVision checkpoints answers exactly as transformers'
own greedy ``generate`` does on the same prompts: the reference outputs that ``method=none`` of the engine must
reproduce once it supports these families (issue 24).

Four stock implementations run through lmms-eval's Python API (``simple_evaluate``, the CLI's own entry, so the
~30 s CLI start-up is paid once for all four) on the bundled ScienceQA-schema task:

- ``qwen2_5_vl``: by default the chat class (lmms_eval/models/chat/qwen2_5_vl.py): the task's user turn only, images
  as PIL objects through ``qwen_vl_utils.process_vision_info``; with ``force_simple`` the simple class
  (lmms_eval/models/simple/qwen2_5_vl.py): a "You are a helpful assistant." system turn and every image
  re-encoded as JPEG (quality 85) into a data URL first (simple/qwen2_5_vl.py:170-177, 228, 253). Both load the
  model in bfloat16 whatever the checkpoint says (simple/qwen2_5_vl.py:73).
- ``llava_hf``: the class that loads transformers' ``LlavaOnevisionForConditionalGeneration`` (the ``llava_onevision``
  model name needs the original LLaVA-NeXT code and checkpoint layout); chat class by default, simple with
  ``force_simple`` (a string user turn ``"<image>\\n{question}"``, simple/llava_hf.py:318-326), in the checkpoint's
  dtype.

The reference rebuilds each class's prompt with the checkpoint's processor and chat template, runs ``generate``
itself, and must give the same prompt token ids, the same generated token ids (recorded from the stock run's
``generate`` calls) and the same answer strings in the samples. (The CLI would also strip whitespace around each
answer, through its default ``--reasoning_tags``; the Python API without CLI arguments keeps answers as decoded.)
All four classes import ``decord`` at module level: without it (``pip install -e '.[stock]'``) they are skipped
with that reason.
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from lmms_samples import answers_of
from PIL import Image
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    LlavaOnevisionForConditionalGeneration,
    Qwen2_5_VLForConditionalGeneration,
)

from himap_lmms.scienceqa import doc_to_text, doc_to_visual, load_local_split
from himap_lmms.tiny_vlms import build_tiny_llava_onevision, build_tiny_qwen2_5_vl

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data" / "scienceqa_img_synth"
TASK = "scienceqa_img_himap_local"
LIMIT = 8
MAX_NEW_TOKENS = 8  # the task's generation_kwargs
# The tiny checkpoint's own pixel range, passed to the Qwen classes (their defaults, 256 to 2048 merged patches,
# would upscale the 168 px images); 168 px is a multiple of 28, so neither qwen_vl_utils nor the processor resizes.
QWEN_PIXELS = {"min_pixels": 56 * 56, "max_pixels": 224 * 224}
QWEN_SYSTEM_PROMPT = "You are a helpful assistant."  # the simple class's default system_prompt
JPEG_QUALITY = 85  # the simple Qwen class's data-URL encoding

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not DATA.is_dir(), reason="bundled data not generated"),
    pytest.mark.skipif(
        importlib.util.find_spec("decord") is None,
        reason="lmms-eval's qwen2_5_vl and llava_hf classes import decord (pip install -e '.[stock]')",
    ),
]


@dataclass(frozen=True)
class StockClass:
    """One stock implementation and how it builds its prompt, as the reference must rebuild it."""

    model: str  # lmms-eval model name
    force_simple: bool
    family: str  # "qwen" or "onevision"
    system_prompt: str | None = None
    jpeg: bool = False  # images round-tripped through JPEG before processing
    image_in_text: bool = False  # the image placeholder written into a string user turn, not a content part

    def __str__(self) -> str:
        return f"{self.model}-{'simple' if self.force_simple else 'chat'}"

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.family == "qwen" else torch.float32  # see the module docstring

    @property
    def model_args(self) -> str:
        # device_map: the Qwen classes' default "auto" moves inputs to CUDA; llava_hf's default "" is refused by
        # transformers 5's from_pretrained
        extra = {"device": "cpu", "device_map": "cpu", **(QWEN_PIXELS if self.family == "qwen" else {})}
        return ",".join(f"{key}={value}" for key, value in extra.items())


STOCK_CLASSES = [
    StockClass("qwen2_5_vl", False, "qwen"),
    StockClass("qwen2_5_vl", True, "qwen", system_prompt=QWEN_SYSTEM_PROMPT, jpeg=True),
    StockClass("llava_hf", False, "onevision"),
    StockClass("llava_hf", True, "onevision", image_in_text=True),
    pytest.param(
        StockClass("llava_onevision", True, "onevision"),
        marks=pytest.mark.skip(
            reason="lmms-eval's llava_onevision class needs the LLaVA-NeXT package `llava` (PyPI's llava 0.0.1.dev0 "
            "is an empty placeholder) and loads that code's checkpoint layout, not transformers'; llava_hf runs the "
            "family's HF checkpoints"
        ),
    ),
]
MODEL_CLASSES = {"qwen": Qwen2_5_VLForConditionalGeneration, "onevision": LlavaOnevisionForConditionalGeneration}
Generation = tuple[tuple[int, ...], tuple[int, ...]]  # prompt token ids, generated token ids


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stock_vlms")
    return {
        "qwen": build_tiny_qwen2_5_vl(root / "qwen2_5_vl"),
        "onevision": build_tiny_llava_onevision(root / "llava_onevision"),
    }


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    return [dict(doc) for doc in load_local_split(DATA).select(range(LIMIT))]


def jpeg_round_trip(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def messages(stock: StockClass, question: str) -> list[dict]:
    system = [{"role": "system", "content": stock.system_prompt}] if stock.system_prompt else []
    if stock.image_in_text:
        return [*system, {"role": "user", "content": f"<image>\n{question}"}]
    return [*system, {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]


def reference(stock: StockClass, checkpoint: Path, docs: list[dict]) -> tuple[dict[int, str], list[Generation]]:
    """Answers per doc and (prompt, generated) token ids from transformers alone: the checkpoint's processor and
    chat template, greedy ``generate``, special tokens dropped in decoding."""
    processor = AutoProcessor.from_pretrained(checkpoint, **(QWEN_PIXELS if stock.family == "qwen" else {}))
    model = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=stock.dtype).eval()
    answers, generations = {}, []
    for doc_id, doc in enumerate(docs):
        (image,) = doc_to_visual(doc)
        image = jpeg_round_trip(image) if stock.jpeg else image
        text = processor.apply_chat_template(messages(stock, doc_to_text(doc)), add_generation_prompt=True)
        inputs = processor(text=[text], images=[image], return_tensors="pt")
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
        prompt, new = inputs["input_ids"][0], output[0, inputs["input_ids"].shape[1] :]
        generations.append((tuple(prompt.tolist()), tuple(new.tolist())))
        answers[doc_id] = processor.tokenizer.decode(new, skip_special_tokens=True)
    return answers, generations


def recording(generate: Callable, calls: list[Generation]) -> Callable:
    """``generate`` that also notes each call's prompt and generated token ids (the stock classes return text)."""

    def wrapper(self, *args, **kwargs):
        output = generate(self, *args, **kwargs)
        prompt = kwargs["input_ids"]
        for row, out in zip(prompt, output):
            calls.append((tuple(row.tolist()), tuple(out[prompt.shape[1] :].tolist())))
        return output

    return wrapper


def run_stock(
    stock: StockClass, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[int, str], list[Generation]]:
    """The stock class on the first LIMIT docs through ``simple_evaluate``: answers from its samples, and the
    token ids its model generated."""
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    calls: list[Generation] = []
    model_class = MODEL_CLASSES[stock.family]
    monkeypatch.setattr(model_class, "generate", recording(model_class.generate, calls))
    monkeypatch.chdir(REPO)  # the task's dataset_path is relative to the working directory
    results = simple_evaluate(
        model=stock.model,
        model_args=f"pretrained={checkpoint},{stock.model_args}",
        tasks=[TASK],
        limit=LIMIT,
        batch_size=1,
        log_samples=True,
        force_simple=stock.force_simple,
        task_manager=TaskManager(include_path=str(REPO / "tasks"), model_name=stock.model),
    )
    return answers_of(results["samples"][TASK]), calls


@pytest.mark.parametrize("stock", STOCK_CLASSES, ids=str)
def test_stock_class_answers_as_transformers_generate(
    stock: StockClass, checkpoints: dict[str, Path], docs: list[dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.set_num_threads(1)
    expected_answers, expected_generations = reference(stock, checkpoints[stock.family], docs)
    answers, generations = run_stock(stock, checkpoints[stock.family], monkeypatch)
    assert answers == expected_answers
    # lmms-eval reorders requests (by prompt length, or doc id): compare the calls as a multiset
    assert sorted(generations) == sorted(expected_generations)
    assert all(len(new) > 0 for _, new in generations)
    assert len(set(answers.values())) > 1  # answers follow the doc, so a wrong image or prompt would show
