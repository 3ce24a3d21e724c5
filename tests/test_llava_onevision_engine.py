"""LLaVA-OneVision through the pruning engine: transformers' own ``LlavaOnevisionForConditionalGeneration`` (Qwen2
decoder with q/k/v biases and grouped-query attention, SigLIP tower without a class token, AnyRes tiles with one
image-newline token per row of the packed grid), on the tiny checkpoint of :mod:`himap_lmms.tiny_vlms`.

``method=none`` must be transformers' ``generate`` (tokens equal, logits within float tolerance): alone, in a
left-padded batch of differently sized images, and with two images in one prompt. Every method that runs on
OneVision must keep exactly the positions of a slow reference that physically removes tokens and keeps their
positions (tests/references.py; DART's and PyramidDrop's authors' code in tests/test_authors_methods.py), with its
logits, in float64 and float32, alone and inside the batch. Newline tokens are image tokens (docs/models.md): they
count in every budget and may be pruned. VisionZip and pooling are refused, naming the method and the model.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import LOGIT_TOLERANCE, QUESTIONS, draw_image, sdpa_and_eager
from lmms_eval.api.instance import Instance
from PIL import Image
from references import check_against, generate, image_positions, reference_logits, reference_ranking
from test_authors_methods import dart_reference, pdrop_reference
from transformers import AutoProcessor, LlavaOnevisionForConditionalGeneration

from himap_lmms.compat import image_token_id, language_model_of, without_token_type_ids
from himap_lmms.cost import kv_hidden_of, prefill_cost
from himap_lmms.lmms_llava_onevision import HimapLlavaOnevision
from himap_lmms.lmms_model import HimapLlava
from himap_lmms.model_shapes import ONEVISION_SHAPES, onevision_config
from himap_lmms.pruning import PrunedLlava, PruningConfig
from himap_lmms.tiny_vlms import build_tiny_llava_onevision

pytestmark = pytest.mark.transformers_matrix

STEPS = 3
DTYPES = {"float64": torch.float64, "float32": torch.float32}
# Logits against the eager references: the tiny OneVision's reach about 5, ten times the tiny LLaVA's that conftest's
# tolerances are sized for, and transformers' eager attention (the references') takes its softmax in float32 in every
# dtype, so even a float64 reference is only float32-exact: differences up to 1.1e-5 seen in float64 (transformers
# 4.57), 2e-5 in float32.
REFERENCE_ATOL = {torch.float64: 5 * LOGIT_TOLERANCE[torch.float32], torch.float32: 10 * LOGIT_TOLERANCE[torch.float32]}
# A 56 px square: 16 base tokens + one 56 px tile's 4 x 4 grid with a newline ending each row = 36 image tokens.
# A 112 x 56 px image (width x height) is tiled 1 x 2: 16 base + 4 rows of 8 patches and their newlines = 52.
SQUARE, WIDE = (56, 56), (112, 56)


@pytest.fixture(scope="module")
def onevision_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llava_onevision(tmp_path_factory.mktemp("llava_onevision"), corpus=QUESTIONS)


@pytest.fixture(scope="module")
def onevision_processor(onevision_dir: Path):
    return AutoProcessor.from_pretrained(onevision_dir)


@pytest.fixture(scope="module", params=list(DTYPES))
def models(request, onevision_dir: Path) -> tuple:
    """(engine's SDPA model, reference's eager model) in one dtype."""
    return sdpa_and_eager(onevision_dir, DTYPES[request.param], LlavaOnevisionForConditionalGeneration)


@pytest.fixture(scope="module")
def model64(onevision_dir: Path) -> LlavaOnevisionForConditionalGeneration:
    return sdpa_and_eager(onevision_dir, torch.float64, LlavaOnevisionForConditionalGeneration)[0]


def picture(seed: int, size: tuple[int, int]) -> Image.Image:
    return draw_image(seed, 112).resize(size)


def encode(processor, prompts: list[tuple[str, list[Image.Image]]], dtype: torch.dtype = torch.float64) -> dict:
    """Left-padded inputs for ``(question, images)`` prompts, through the checkpoint's ChatML template (an image
    part per image before the text) and its processor, which tiles a prompt's only image and not several."""
    texts = [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}] * len(images) + [{"type": "text", "text": question}]}],
            add_generation_prompt=True,
        )
        for question, images in prompts
    ]
    images = [sample for _, sample in prompts]
    inputs = processor(text=texts, images=images, return_tensors="pt", padding=True)
    return without_token_type_ids(inputs.to("cpu", dtype))


def batch_of(processor, dtype: torch.dtype = torch.float64) -> dict:
    inputs = encode(processor, [(QUESTIONS[0], [picture(0, SQUARE)]), (QUESTIONS[1], [picture(1, WIDE)])], dtype)
    assert not bool(inputs["attention_mask"].all()), "the prompts should need padding"
    return inputs


def image_counts(model, inputs: dict) -> list[int]:
    return (inputs["input_ids"] == image_token_id(model.config)).sum(dim=1).tolist()


# --- method=none is transformers' generate -----------------------------------------------------------------


@pytest.mark.parametrize("case", ["alone", "left-padded batch", "two images in one prompt"])
def test_none_matches_transformers_generate(model64, onevision_processor, case) -> None:
    if case == "alone":
        inputs = encode(onevision_processor, [(QUESTIONS[0], [picture(0, WIDE)])])
    elif case == "left-padded batch":
        inputs = batch_of(onevision_processor)
    else:
        inputs = encode(onevision_processor, [(QUESTIONS[2], [picture(2, SQUARE), picture(3, WIDE)])])
    reference = model64.generate(
        **inputs, max_new_tokens=STEPS, do_sample=False, output_logits=True, return_dict_in_generate=True
    )
    ours = PrunedLlava(model64, PruningConfig()).generate(**inputs, max_new_tokens=STEPS, return_logits=True)
    assert ours.sequences.tolist() == reference.sequences[:, inputs["input_ids"].shape[1] :].tolist()
    for mine, theirs in zip(ours.logits, reference.logits, strict=True):
        torch.testing.assert_close(mine, theirs.float(), rtol=0, atol=1e-6)


# --- the newline tokens are image tokens ---------------------------------------------------------------------


def test_newline_tokens_count_in_budgets_and_may_be_pruned(model64, onevision_processor) -> None:
    """Every ``image_token_id`` slot is an image token, the newlines included: ratios count them, and the input
    baseline's evenly spaced choice over all of them keeps some newline slots and drops others."""
    inputs = batch_of(onevision_processor)
    assert image_counts(model64, inputs) == [36, 52]
    fastv = PrunedLlava(model64, PruningConfig.from_args("fastv", ratio=0.5)).generate(**inputs, max_new_tokens=1)
    assert [kept.numel() for kept in fastv.stats.kept[0]] == [18, 26]
    single = encode(onevision_processor, [(QUESTIONS[0], [picture(0, SQUARE)])])
    uniform = PrunedLlava(model64, PruningConfig.from_args("input", keep=9)).generate(**single, max_new_tokens=1)
    image = image_positions(model64, single)
    # slots 16..35 are the tile's 4 rows of 4 patches, each followed by its newline (slots 20, 25, 30, 35)
    newlines = {image[16 + 5 * row + 4] for row in range(4)}
    kept = set(uniform.stats.kept[0][0].tolist())
    assert kept & newlines and newlines - kept


def test_cost_records_count_the_grouped_key_values(model64, onevision_processor) -> None:
    """Two key-value heads of 16 for four query heads: the key and value projections are half the hidden width."""
    inputs = encode(onevision_processor, [(QUESTIONS[0], [picture(0, SQUARE)])])
    result = PrunedLlava(model64, PruningConfig.from_args("fastv", ratio=0.5)).generate(**inputs, max_new_tokens=1)
    (cost,) = result.stats.costs(model64.config.get_text_config())
    prompt = int(inputs["attention_mask"].sum())
    tokens = [prompt] * 2 + [prompt - 18] * 10
    assert list(cost.tokens_per_layer) == tokens
    assert cost == prefill_cost(tokens, 64, 128, prompt_tokens=prompt, kv_hidden=32)
    assert cost.flops < prefill_cost(tokens, 64, 128, prompt_tokens=prompt).flops


# --- every method that runs, against its slow reference --------------------------------------------------


def schedule_of(config: PruningConfig, model, inputs: dict) -> list[tuple[int, str, int]]:
    """The (layer, score, keep) steps of ``config`` for the one sample of ``inputs``."""
    (count,) = image_counts(model, inputs)
    return [(step.layer, step.score, step.budget(count)) for step in config.steps]


def positional_reference(config: PruningConfig, model, inputs: dict) -> list[torch.Tensor]:
    """The random and input baselines' kept positions, in plain Python: each step draws one seeded value per image
    token still there (random) or takes evenly spaced ones (input), and keeps its budget of the best."""
    image = image_positions(model, inputs)
    kept, current = [], image
    for step in config.steps:
        budget = step.budget(len(image))
        if step.score == "random":
            values = torch.rand(len(current), generator=torch.Generator().manual_seed(step.seed)).tolist()
            best = sorted(range(len(current)), key=lambda i: (-values[i], i))[:budget]
        else:
            best = torch.linspace(0, len(current) - 1, budget).round().long().tolist()
        current = sorted(current[i] for i in best)
        kept.append(torch.tensor(current))
    return kept


def attention_case(config: PruningConfig):
    """HiMAP and FastV: tests/references.py's ranking from eager attention, and its logits with those kept sets."""

    def kept_of(eager, inputs):
        return [top for _, _, top in reference_ranking(eager, inputs, schedule_of(config, eager, inputs))]

    def logits_of(eager, inputs, kept, generated):
        return reference_logits(eager, inputs, schedule_of(config, eager, inputs), kept, generated)

    return config, kept_of, logits_of


def positional_case(config: PruningConfig):
    def logits_of(eager, inputs, kept, generated):
        return reference_logits(eager, inputs, schedule_of(config, eager, inputs), kept, generated)

    return config, lambda eager, inputs: positional_reference(config, eager, inputs), logits_of


def authors_case(config: PruningConfig, reference):
    """DART and PyramidDrop: their authors' code (tests/test_authors_methods.py), ``reference(eager, inputs,
    generated) -> (kept, logits)``."""

    def kept_of(eager, inputs):
        kept, _ = reference(eager, inputs, inputs["input_ids"][0, :0])
        return kept if isinstance(kept, list) else [kept]

    return config, kept_of, lambda eager, inputs, kept, generated: reference(eager, inputs, generated)[1]


CASES = {
    "himap": lambda: attention_case(PruningConfig.from_args("himap")),
    "fastv": lambda: attention_case(PruningConfig.from_args("fastv", ratio=0.25)),
    "random": lambda: positional_case(PruningConfig.from_args("random", seed=3)),
    "input": lambda: positional_case(PruningConfig.from_args("input", ratio=0.25)),
    "dart": lambda: authors_case(
        PruningConfig.from_args("dart", k=2, ratio=0.5, image_pivots=2, text_pivots=2),
        lambda eager, inputs, generated: dart_reference(eager, inputs, generated, 2, None, 0.5, 2, 2),
    ),
    "pyramiddrop": lambda: authors_case(
        PruningConfig.from_args("pyramiddrop", layers="2/5/8", ratio=0.5),
        lambda eager, inputs, generated: pdrop_reference(
            eager, inputs, generated, [2, 5, 8], [0.5, 0.25, 0.125], repeat_keys=True
        ),
    ),
}


@pytest.mark.parametrize("method", list(CASES))
def test_method_matches_its_reference_alone_and_batched(models, onevision_processor, method) -> None:
    model, eager = models
    config, kept_of, logits_of = CASES[method]()
    inputs = batch_of(onevision_processor, model.dtype)
    check_against(model, eager, config, kept_of, logits_of, inputs, atol=REFERENCE_ATOL[model.dtype])


def test_himap_on_a_prompt_with_two_images_matches_the_reference(onevision_dir, onevision_processor) -> None:
    """The images of one prompt are ranked together; the instruction rows are the text after the last image."""
    model, eager = sdpa_and_eager(onevision_dir, torch.float64, LlavaOnevisionForConditionalGeneration)
    inputs = encode(onevision_processor, [(QUESTIONS[2], [picture(4, SQUARE), picture(5, WIDE)])])
    config, kept_of, logits_of = attention_case(PruningConfig.from_args("himap", k1=2, ratio1=0.5, k2=5, ratio2=0.25))
    result = generate(model, config, inputs, steps=2)
    expected = kept_of(eager, inputs)
    assert [kept[0].tolist() for kept in result.stats.kept] == [k.tolist() for k in expected]
    for step in range(2):
        reference = logits_of(eager, inputs, expected, result.sequences[0, :step])
        torch.testing.assert_close(result.logits[step][0], reference, rtol=0, atol=REFERENCE_ATOL[torch.float64])


# --- refused methods ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (PruningConfig.from_args("visionzip"), r"method=visionzip does not run on llava_onevision .*no class token"),
        (
            PruningConfig.from_args("visionzip", variant="prior", ratio=0.25),
            r"method=visionzip does not run on llava_onevision",
        ),
        (PruningConfig.from_args("pool"), r"method=pool does not run on llava_onevision"),
    ],
    ids=["visionzip", "visionzip-prior", "pool"],
)
def test_methods_without_a_onevision_rule_are_refused(model64, config, message) -> None:
    with pytest.raises(ValueError, match=message):
        PrunedLlava(model64, config)


# --- the lmms-eval adapter -------------------------------------------------------------------------------


def request(question: str, image: Image.Image, doc_id: int) -> Instance:
    return Instance(
        request_type="generate_until",
        arguments=(question, {"max_new_tokens": STEPS, "until": []}, lambda doc: [doc["image"]], doc_id, "toy", "test"),
        idx=0,
        metadata={"task": "toy", "doc_id": doc_id, "repeats": 1},
    )


def test_adapter_answers_as_transformers_generate(onevision_dir, onevision_processor, model64) -> None:
    """``himap_llava_onevision`` with ``method=none``, batched: the answers of ``generate`` on the checkpoint's own
    prompt (image parts, then the text), one prompt at a time as stock ``llava_hf`` runs them."""
    adapter = HimapLlavaOnevision(
        pretrained=str(onevision_dir), method="none", device="cpu", dtype="float64", batch_size=2
    )
    images = [picture(6, SQUARE), picture(7, WIDE)]
    adapter.task_dict = {"toy": {"test": [{"image": image} for image in images]}}
    answers = [result.text for result in adapter.generate_until([request(QUESTIONS[b], images[b], b) for b in (0, 1)])]
    for b, image in enumerate(images):
        inputs = encode(onevision_processor, [(QUESTIONS[b], [image])])
        tokens = model64.generate(**inputs, max_new_tokens=STEPS, do_sample=False)[0, inputs["input_ids"].shape[1] :]
        assert answers[b] == onevision_processor.tokenizer.decode(tokens, skip_special_tokens=True)


def test_probe_tasks_are_refused_naming_the_model(onevision_dir) -> None:
    """The probes rebuild LLaVA's forward and are not tested on OneVision: a probe task is an error, not a guess."""
    adapter = HimapLlavaOnevision(pretrained=str(onevision_dir), device="cpu")
    image = picture(6, SQUARE)
    adapter.task_dict = {"toy": {"test": [{"image": image}]}}
    probe = request(QUESTIONS[0], image, 0)
    probe.arguments[1]["probe"] = "saliency"
    with pytest.raises(
        ValueError, match=r"saliency probe, which supports LLaVA checkpoints .* not himap_llava_onevision"
    ):
        adapter.generate_until([probe])


def test_adapters_name_the_family_they_load(onevision_dir, tiny_llava_dir) -> None:
    with pytest.raises(ValueError, match=r"is a 'llava_onevision' model; himap_llava supports llava, llava_next"):
        HimapLlava(pretrained=str(onevision_dir), device="cpu")
    with pytest.raises(ValueError, match=r"is a 'llava' model; himap_llava_onevision supports llava_onevision"):
        HimapLlavaOnevision(pretrained=str(tiny_llava_dir), device="cpu")


# --- the 7B shape ---------------------------------------------------------------------------------------------


def test_the_7b_shape_is_llava_onevision_qwen2_7b() -> None:
    """Built on the meta device: Qwen2-7B's grouped key-value projections with biases, 729 tokens per 384 px tile,
    and the hub checkpoint's 8.03 billion parameters."""
    shape = ONEVISION_SHAPES["onevision-7b"]
    config = onevision_config(shape)
    with torch.device("meta"):
        model = LlavaOnevisionForConditionalGeneration(config)
    attention = language_model_of(model).layers[0].self_attn
    assert len(language_model_of(model).layers) == 28 and kv_hidden_of(config.text_config) == 512
    assert attention.k_proj.weight.shape == (512, 3584) and attention.q_proj.bias is not None
    assert shape.tokens_per_tile == 729
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(8.03e9, rel=2e-3)
