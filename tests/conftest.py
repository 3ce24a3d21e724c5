"""Shared fixtures: a tiny LLaVA with LLaVA-1.5's 576 image tokens, built and saved locally once per session.

The engine tests run where ``--engine-device``, ``--engine-dtype`` and ``--engine-attn`` say: by default on the
CPU in float64 with SDPA, where their equalities are exact; ``scripts/gpu_check.sh`` runs them on CUDA in bfloat16
and float32 with every kernel the engine supports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import transformers
from PIL import Image, ImageDraw
from transformers import (
    AutoProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessor,
    LlavaNextProcessor,
)

from himap_lmms.compat import (
    dtype_argument,
    save_model,
    save_processor,
)
from himap_lmms.llava_forward import SUPPORTED_ATTENTION
from himap_lmms.prompting import VICUNA_CHAT_TEMPLATE
from himap_lmms.tiny_llava import build_tiny_llava, build_tokenizer

# Qwen2.5-VL's classes arrived in transformers 4.49: on older versions of CI's matrix the files that build the
# tiny Qwen2.5-VL and LLaVA-OneVision checkpoints, or prune Qwen2.5-VL, are not collected.
collect_ignore = (
    []
    if hasattr(transformers, "Qwen2_5_VLForConditionalGeneration")
    else ["test_tiny_vlms.py", "test_stock_vlm_classes.py", "test_qwen2_5_vl_engine.py", "test_qwen2_5_vl_adapter.py"]
)

QUESTIONS = [
    "What colour is the square?\nA. red\nB. blue\nAnswer with the option's letter from the given choices directly.",
    "Context: Look at the picture.\nHow many circles are there?\nA. one\nB. two\nC. three\nD. four\n"
    "Answer with the option's letter from the given choices directly.",
    "Which shape is on the left?\nA. circle\nB. triangle\nC. square\n"
    "Answer with the option's letter from the given choices directly.",
]


# Below float64, the largest logit difference allowed between two code paths, and how far (relative to the k-th
# best score) an image token's score may lie from the cut-off when only one of two rankings keeps it. About 4x and
# 30x what the engine tests needed on the CPU: logits (|logit| < 0.5) 7.8e-3 apart in bfloat16, 3e-7 in float32;
# tokens kept by one ranking only at most 1.2e-3 from the cut-off in bfloat16, none in float32.
LOGIT_TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 3e-2}
SCORE_TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 5e-3}


@dataclass(frozen=True)
class EngineTarget:
    """Where the engine tests run: device, dtype and attention kernel of the model under test."""

    device: torch.device
    dtype: torch.dtype
    attention: str

    @property
    def exact(self) -> bool:
        """float64 keeps near-uniform random attention rankings and logits stable across code paths."""
        return self.dtype == torch.float64

    @property
    def score_tolerance(self) -> float:
        return SCORE_TOLERANCE[self.dtype]

    def assert_logits_close(self, actual: torch.Tensor, expected: torch.Tensor, atol: float = 0.0) -> None:
        """Within ``atol``, the float64 bound each test states (0: bitwise); below float64, the dtype's tolerance."""
        tolerance = atol if self.exact else LOGIT_TOLERANCE[self.dtype]
        torch.testing.assert_close(actual, expected, rtol=0, atol=tolerance)


CPU_FLOAT64 = EngineTarget(torch.device("cpu"), torch.float64, "sdpa")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("engine", "where the engine tests run (scripts/gpu_check.sh sets these on a GPU)")
    group.addoption("--engine-device", default="cpu", help="torch device of the engine tests' model (default cpu)")
    group.addoption("--engine-dtype", default="float64", choices=["float64", "float32", "bfloat16"])
    group.addoption(
        "--engine-attn", default="sdpa", choices=SUPPORTED_ATTENTION, help="the model's attn_implementation"
    )


# The tests scripts/test_transformers_matrix.sh repeats on every transformers of the CI matrix: engine and method
# tests on the tiny LLaVA (through `target`, `model`, `eager_model` or `model64`) join it by that, whatever their
# file; the adapter's, LLaVA-NeXT's and the later methods' files also by a `pytestmark` of their own.
MATRIX_FIXTURES = {"target", "model64"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if MATRIX_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.transformers_matrix)


@pytest.fixture(scope="session")
def target(pytestconfig: pytest.Config, record_testsuite_property) -> EngineTarget:
    """The ``--engine-*`` options, also written to a JUnit report, which himap_lmms/gpu_check.py checks against."""
    device = torch.device(pytestconfig.getoption("--engine-device"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError(f"--engine-device={device} but torch {torch.__version__} sees no CUDA device")
    dtype_name, attention = pytestconfig.getoption("--engine-dtype"), pytestconfig.getoption("--engine-attn")
    record_testsuite_property("engine_target", f"{device} {dtype_name} {attention}")
    return EngineTarget(device, getattr(torch, dtype_name), attention)


def draw_image(seed: int, size: int = 336) -> Image.Image:
    """A deterministic picture with a few coloured boxes, so image tokens differ from each other."""
    generator = torch.Generator().manual_seed(seed)
    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = torch.randint(0, size - 40, (2,), generator=generator).tolist()
        colour = tuple(torch.randint(0, 256, (3,), generator=generator).tolist())
        draw.rectangle([x, y, x + 40, y + 40], fill=colour)
    return image


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llava(tmp_path_factory.mktemp("tiny_llava"), corpus=QUESTIONS)


@pytest.fixture(scope="session")
def processor(tiny_llava_dir: Path):
    return AutoProcessor.from_pretrained(tiny_llava_dir)


@pytest.fixture(scope="session")
def model64(tiny_llava_dir: Path) -> LlavaForConditionalGeneration:
    """float64 SDPA model: rankings of near-uniform random attention are then stable across code paths."""
    return LlavaForConditionalGeneration.from_pretrained(tiny_llava_dir, **dtype_argument(torch.float64)).eval()


def load_model(
    tiny_llava_dir: Path, target: EngineTarget, attention: str, model_class: type = LlavaForConditionalGeneration
) -> LlavaForConditionalGeneration:
    model = model_class.from_pretrained(tiny_llava_dir, **dtype_argument(target.dtype), attn_implementation=attention)
    return model.to(target.device).eval()


def sdpa_and_eager(
    directory: Path, dtype: torch.dtype = torch.float64, model_class: type = LlavaForConditionalGeneration
) -> tuple[LlavaForConditionalGeneration, LlavaForConditionalGeneration]:
    """The checkpoint (of ``model_class``) twice on the CPU in ``dtype``: with SDPA for the engine, eager for a
    slow reference."""
    target = EngineTarget(torch.device("cpu"), dtype, "sdpa")
    return load_model(directory, target, "sdpa", model_class), load_model(directory, target, "eager", model_class)


@pytest.fixture(scope="session")
def model(tiny_llava_dir: Path, target: EngineTarget) -> LlavaForConditionalGeneration:
    """The model under test: the tiny LLaVA on the target's device, dtype and attention kernel."""
    return load_model(tiny_llava_dir, target, target.attention)


@pytest.fixture(scope="session")
def eager_model(tiny_llava_dir: Path, target: EngineTarget) -> LlavaForConditionalGeneration:
    """The same weights with eager attention (the slow reference needs its probabilities), on the target."""
    return load_model(tiny_llava_dir, target, "eager")


def encode(
    processor, questions: list[str], images: list[Image.Image | None], target: EngineTarget = CPU_FLOAT64
) -> dict:
    """Left-padded inputs in the vicuna format, on the target's device and dtype; a None image: a text-only prompt."""
    prompts = [
        processor.apply_chat_template(
            [{"role": "user", "content": ("<image>\n" if image is not None else "") + question}],
            add_generation_prompt=True,
            tokenize=False,
        )
        for question, image in zip(questions, images)
    ]
    present = [image for image in images if image is not None]
    inputs = processor(
        images=present or None, text=prompts, return_tensors="pt", padding=True, add_special_tokens=False
    )
    return dict(inputs.to(target.device, target.dtype))


@pytest.fixture(scope="module")
def eager64(tiny_llava_dir) -> LlavaForConditionalGeneration:
    """Eager float64 on the CPU, next to ``model64``: the method tests compare against it exactly, whatever
    ``--engine-*`` says."""
    return load_model(tiny_llava_dir, CPU_FLOAT64, "eager")


PINPOINTS = [[56, 112], [112, 56], [112, 112]]


@pytest.fixture(scope="module")
def next_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-layer LLaVA-NeXT with 56 px tiles (16 patches each), saved like a hub checkpoint."""
    out = tmp_path_factory.mktemp("tiny_llava_next")
    tokenizer = build_tokenizer(QUESTIONS, 600)
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56}, image_grid_pinpoints=PINPOINTS
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=VICUNA_CHAT_TEMPLATE,
    )
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=56,
            patch_size=14,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=6,
            num_attention_heads=4,
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=PINPOINTS,
        vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    save_model(LlavaNextForConditionalGeneration(config), out)
    save_processor(processor, out)
    return out
