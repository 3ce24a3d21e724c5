"""The saliency and disruption probes on a tiny random LLaVA (16 image tokens, 4 text layers, float64)."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest
import torch
from PIL import Image, ImageDraw
from transformers import AutoProcessor, LlavaForConditionalGeneration
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from himap_lmms.compat import dtype_argument, image_token_id, language_model_of
from himap_lmms.probes import (
    Disruption,
    answer_token_id,
    disrupted_generate,
    disruption_sweep,
    run_probe_request,
    saliency_probe,
)
from himap_lmms.probes.disruption import random_rows
from himap_lmms.probes.layout import sequence_layout
from himap_lmms.probes.plots import plot_disruption_heatmap, plot_group_flows, plot_visual_flows
from himap_lmms.probes.saliency import FLOW_KEYS, attention_gradients, layer_flows
from himap_lmms.prompting import VICUNA_CHAT_TEMPLATE, chat_prompt
from himap_lmms.pruning import PrunedLlava, PruningConfig
from himap_lmms.tiny_llava import TINY_CHECKPOINT, build_tiny_llava

REPO = Path(__file__).resolve().parent.parent
SPEC = replace(TINY_CHECKPOINT, image_size=56, layers=4, kv_heads=2)
NUM_LAYERS = SPEC.layers
QUESTION = (
    "What colour is the square?\nA. red\nB. blue\nAnswer with the option's letter from the given choices directly."
)
DOCS = [
    {"question": "What colour is the square?", "choices": ["red", "blue"], "answer": 1, "hint": ""},
    {"question": "How many circles are there?", "choices": ["one", "two", "three"], "answer": 0, "hint": "Look."},
]


def picture(seed: int) -> Image.Image:
    """A deterministic picture of coloured boxes, different for each seed."""
    generator = torch.Generator().manual_seed(seed)
    image = Image.new("RGB", (SPEC.image_size, SPEC.image_size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x, y = torch.randint(0, SPEC.image_size - 12, (2,), generator=generator).tolist()
        draw.rectangle([x, y, x + 12, y + 12], fill=tuple(torch.randint(0, 256, (3,), generator=generator).tolist()))
    return image


def load_by_path(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llava(tmp_path_factory.mktemp("probe_llava"), SPEC, corpus=[QUESTION])


@pytest.fixture(scope="module")
def processor(tiny_dir: Path):
    return AutoProcessor.from_pretrained(tiny_dir)


@pytest.fixture(scope="module")
def model(tiny_dir: Path) -> LlavaForConditionalGeneration:
    return LlavaForConditionalGeneration.from_pretrained(tiny_dir, **dtype_argument(torch.float64)).eval()


def encode(processor, image: Image.Image, question: str = QUESTION) -> dict[str, torch.Tensor]:
    """One example as the himap_llava adapter encodes it (vicuna template, ``<image>`` first)."""
    prompt = chat_prompt(processor.tokenizer, question, 1, VICUNA_CHAT_TEMPLATE)
    inputs = processor(images=[image], text=[prompt], return_tensors="pt", add_special_tokens=False)
    return dict(inputs.to("cpu", torch.float64))


@pytest.fixture(scope="module")
def inputs(processor) -> dict[str, torch.Tensor]:
    return encode(processor, picture(0))


def assert_real_png(path: Path, size: tuple[int, int] | None = None) -> None:
    """The file is a PNG of the expected size with a drawing on it (dark pixels: text, lines, cells)."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        if size is not None:
            assert image.size == size
        grey = image.convert("L")
        assert grey.getextrema()[0] < 100
        dark = sum(count for value, count in enumerate(grey.histogram()) if value < 200)
        assert dark > 0.005 * image.size[0] * image.size[1]


# ----------------------------------------------------------------------------------------------------------
# Layout and answer token
# ----------------------------------------------------------------------------------------------------------


def test_layout_is_read_from_the_prompt(model, inputs):
    layout = sequence_layout(inputs["input_ids"][0], image_token_id(model.config))
    sizes = layout.sizes
    assert sizes["image"] == SPEC.num_image_tokens == 16
    assert sum(sizes.values()) == inputs["input_ids"].shape[1]
    first_image = int(layout.image.nonzero()[0])
    assert sizes["prefix"] == first_image and bool(layout.prefix[:first_image].all())
    assert bool(layout.text[-1]) and not bool(layout.text[first_image + 15])
    with pytest.raises(ValueError, match="no image token"):
        sequence_layout(torch.tensor([1, 2, 3]), image_token_id(model.config))


def test_answer_token_is_the_word_start_piece(processor):
    tokenizer = processor.tokenizer
    token = answer_token_id(tokenizer, "A")
    assert tokenizer.convert_ids_to_tokens(token) == "▁A"
    assert tokenizer.decode([token]).strip() == "A"


# ----------------------------------------------------------------------------------------------------------
# Saliency
# ----------------------------------------------------------------------------------------------------------


def loss_with_attention_nudge(model, inputs, target: int, layer: int, head: int, row: int, col: int, delta: float):
    """Cross-entropy of the stock forward with A_layer[head, row, col] raised by ``delta``.

    Independent of the probe's hooks: raising one attention probability by delta adds delta * V[col] (of the
    head's key/value group) to that head's slice of the attention output at ``row``, right before o_proj.
    """
    attention = language_model_of(model).layers[layer].self_attn
    head_dim, group = attention.head_dim, head // attention.num_key_value_groups
    values = {}

    def keep_values(module, args, output):
        values["v"] = output[0, col, group * head_dim : (group + 1) * head_dim]

    def nudge(module, args):
        hidden = args[0].clone()
        hidden[0, row, head * head_dim : (head + 1) * head_dim] += delta * values["v"]
        return (hidden,)

    handles = [
        attention.v_proj.register_forward_hook(keep_values),
        attention.o_proj.register_forward_pre_hook(nudge),
    ]
    try:
        with torch.no_grad():
            logits = model(**inputs).logits[0, -1]
    finally:
        for handle in handles:
            handle.remove()
    return float(torch.nn.functional.cross_entropy(logits[None], torch.tensor([target])))


def rms_norm_in_input_precision(self: LlamaRMSNorm, hidden: torch.Tensor) -> torch.Tensor:
    """Llama's RMSNorm without its float32 round trip, so a float64 model is float64 throughout."""
    return self.weight * (hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))


def test_saliency_equals_finite_differences(model, processor, inputs, monkeypatch):
    # transformers' RMSNorm rounds to float32, which would put ~1e-8 of noise into every loss and swamp the
    # finite differences; eager attention still computes its softmax in float32, hence rel=1e-5 below.
    monkeypatch.setattr(LlamaRMSNorm, "forward", rms_norm_in_input_precision)
    target = answer_token_id(processor.tokenizer, "B")
    layout = sequence_layout(inputs["input_ids"][0], image_token_id(model.config))
    products = {}

    def keep(layer, attention, grad):
        products[layer] = (attention[0].clone(), (attention[0] * grad[0]).clone())
        return layer_flows(layout, attention, grad)

    per_layer, _, loss = attention_gradients(model, inputs, target, keep)
    assert float(loss) == pytest.approx(loss_with_attention_nudge(model, inputs, target, 0, 0, 0, 0, 0.0), rel=1e-7)
    eps = 1e-5
    for layer in (0, NUM_LAYERS - 1):
        attention, product = products[layer]
        text_to_image = product.abs() * (layout.text[:, None] & layout.image[None, :])
        for flat in (product.abs().argmax(), text_to_image.argmax()):
            head, row, col = (int(i) for i in torch.unravel_index(flat, product.shape))
            plus = loss_with_attention_nudge(model, inputs, target, layer, head, row, col, eps)
            minus = loss_with_attention_nudge(model, inputs, target, layer, head, row, col, -eps)
            expected = float(attention[head, row, col]) * (plus - minus) / (2 * eps)
            assert float(product[head, row, col]) == pytest.approx(expected, rel=1e-5, abs=1e-12)
            assert abs(expected) > 1e-8  # a meaningful entry, not a zero compared with a zero

    result = saliency_probe(model, inputs, target)
    for key in FLOW_KEYS:
        assert result.flows[key] == pytest.approx([flows[key] for flows in per_layer], rel=1e-12)
    for layer, (_, product) in products.items():
        assert result.flows["total"][layer] == pytest.approx(float(product.abs().mean(dim=0).sum()), rel=1e-12)


def test_saliency_group_sums_add_up(model, processor, inputs):
    result = saliency_probe(model, inputs, answer_token_id(processor.tokenizer, "A"))
    sizes = result.group_sizes
    for layer in range(NUM_LAYERS):
        flows = {key: values[layer] for key, values in result.flows.items()}
        by_group = sum(flows[f"into_{group}"] * size for group, size in sizes.items())
        assert by_group == pytest.approx(flows["total"], rel=1e-10)
        into_text = flows["img2txt"] + flows["txt2txt"] + flows["prefix2txt"]
        assert into_text == pytest.approx(flows["into_text"] * sizes["text"], rel=1e-10)
        assert flows["img2txt"] > 0 and flows["img2img"] >= 0
    assert result.predicted_token_id == int(model(**inputs).logits[0, -1].argmax())


def test_saliency_leaves_the_model_as_it_was(model, processor, inputs):
    saliency_probe(model, inputs, answer_token_id(processor.tokenizer, "A"))
    assert language_model_of(model).config._attn_implementation == "sdpa"
    assert all(parameter.requires_grad and parameter.grad is None for parameter in model.parameters())


# ----------------------------------------------------------------------------------------------------------
# Disruption
# ----------------------------------------------------------------------------------------------------------


def test_undisturbed_run_matches_transformers(model, inputs):
    ours = disrupted_generate(model, inputs, None, max_new_tokens=4)
    with torch.no_grad():
        reference = model(**inputs).logits[0, -1]
        generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)[0, inputs["input_ids"].shape[1] :]
    torch.testing.assert_close(ours.first_logits, reference, rtol=0, atol=1e-10)
    assert ours.token_ids == generated.tolist()
    assert ours.top5 == reference.topk(5).indices.tolist()


def test_layers_outside_the_window_run_undisturbed(model, inputs):
    """Cutting only the last layer's img2img leaves the image rows' outputs untouched: the last layer's image
    rows feed nothing later, so the first step's logits equal the undisturbed ones exactly."""
    undisturbed = disrupted_generate(model, inputs, None, max_new_tokens=4)
    last = NUM_LAYERS - 1
    cut = disrupted_generate(model, inputs, Disruption("img2img", start_layer=last, end_layer=last), max_new_tokens=4)
    assert torch.equal(cut.first_logits, undisturbed.first_logits)
    assert cut.token_ids == undisturbed.token_ids


def test_cutting_img2txt_everywhere_hides_the_image(model, processor):
    first, second = encode(processor, picture(1)), encode(processor, picture(2))
    cut = Disruption("img2txt", start_layer=0)
    assert not torch.allclose(
        disrupted_generate(model, first, None, 1).first_logits, disrupted_generate(model, second, None, 1).first_logits
    )
    blind_first = disrupted_generate(model, first, cut, max_new_tokens=3)
    blind_second = disrupted_generate(model, second, cut, max_new_tokens=3)
    torch.testing.assert_close(blind_first.first_logits, blind_second.first_logits, rtol=0, atol=1e-12)
    assert blind_first.token_ids == blind_second.token_ids
    # From layer 1 on, layer 0 has already carried image information into the text rows.
    late = [disrupted_generate(model, x, Disruption("img2txt", 1), 1).first_logits for x in (first, second)]
    assert not torch.allclose(*late)


def recomputed_logits(model, inputs, generated: list[int], window: range, rows: torch.Tensor) -> torch.Tensor:
    """Last-position logits of transformers' own forward over prompt + ``generated``, without a KV cache.

    Every decoder layer's mask is swapped (by a pre-hook) for an explicit causal one that, in ``window``, also
    forbids the edges from ``rows`` (a bool over the whole sequence) to the prompt's image keys.
    """
    prompt = inputs["input_ids"]
    input_ids = torch.cat([prompt, torch.tensor([generated], dtype=prompt.dtype)], dim=1)
    length = input_ids.shape[1]
    image = input_ids[0] == image_token_id(model.config)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    cut = causal & ~(rows[:, None] & image[None, :])

    def as_mask(allowed: torch.Tensor) -> torch.Tensor:
        return torch.zeros(allowed.shape, dtype=model.dtype).masked_fill(~allowed, -1e30)[None, None]

    def swap(layer: int):
        mask = as_mask(cut if layer in window else causal)
        return lambda module, args, kwargs: (args, {**kwargs, "attention_mask": mask})

    layers = language_model_of(model).layers
    handles = [layer.register_forward_pre_hook(swap(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        with torch.no_grad():
            return model(input_ids=input_ids, pixel_values=inputs["pixel_values"], use_cache=False).logits[0, -1]
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("flow", ["img2txt", "img2img"])
def test_cut_generation_equals_recomputing_with_the_stock_forward(model, inputs, flow):
    """Each step of the engine's cached generation under a cut equals transformers' forward over the whole
    sequence so far under the same per-layer masks: the cut reaches the decoding steps, where generated tokens
    are text rows (img2txt cuts them too, img2img does not)."""
    layout = sequence_layout(inputs["input_ids"][0], image_token_id(model.config))
    disruption = Disruption(flow, start_layer=1, end_layer=2)
    edit = disruption.attention_edit(layout, NUM_LAYERS)
    engine = PrunedLlava(model, PruningConfig(), attention_edit=edit, logits_dtype=torch.float64)
    ours = engine.generate(
        inputs["input_ids"], inputs["attention_mask"], inputs["pixel_values"], max_new_tokens=4, return_logits=True
    )
    generated = ours.sequences[0].tolist()
    prompt_rows = layout.text if flow == "img2txt" else layout.image
    for step, logits in enumerate(ours.logits):
        rows = torch.cat([prompt_rows, torch.full((step,), flow == "img2txt")])
        expected = recomputed_logits(model, inputs, generated[:step], range(1, 3), rows)
        torch.testing.assert_close(logits[0], expected, rtol=0, atol=1e-10)
    probe = disrupted_generate(model, inputs, disruption, max_new_tokens=4)
    assert probe.token_ids == generated[: len(probe.token_ids)]
    assert torch.equal(probe.first_logits, ours.logits[0][0])


def test_an_attention_edit_needs_method_none(model):
    with pytest.raises(ValueError, match=r"attention_edit needs method='none', got method='fastv'"):
        PrunedLlava(model, PruningConfig.from_args("fastv"), attention_edit=lambda layer, allowed: allowed)


def test_img2img_and_img2rnd_change_the_output(model, inputs):
    undisturbed = disrupted_generate(model, inputs, None, 1).first_logits
    for flow in ("img2img", "img2rnd"):
        assert not torch.allclose(disrupted_generate(model, inputs, Disruption(flow, 0), 1).first_logits, undisturbed)


def test_img2rnd_is_seeded(model, inputs):
    layout = sequence_layout(inputs["input_ids"][0], image_token_id(model.config))
    rows = random_rows(layout, seed=0)
    assert len(rows) == layout.sizes["text"] and bool((layout.image | layout.text)[rows].all())
    assert torch.equal(rows, random_rows(layout, seed=0)) and not torch.equal(rows, random_rows(layout, seed=1))
    same = [disrupted_generate(model, inputs, Disruption("img2rnd", 0, seed=0), 1).first_logits for _ in range(2)]
    other = disrupted_generate(model, inputs, Disruption("img2rnd", 0, seed=1), 1).first_logits
    assert torch.equal(*same)
    assert not torch.allclose(same[0], other)


# ----------------------------------------------------------------------------------------------------------
# The adapter's entry point
# ----------------------------------------------------------------------------------------------------------


def test_probe_requests_return_json_records(model, processor, inputs):
    saliency = json.loads(
        run_probe_request(model, processor, inputs, {"probe": "saliency", "until": []}, {"answer": 1})
    )
    assert saliency["gold"] == "B" and saliency["target_token_id"] == answer_token_id(processor.tokenizer, "B")
    assert set(saliency["flows"]) == set(FLOW_KEYS) and all(len(v) == NUM_LAYERS for v in saliency["flows"].values())
    assert isinstance(saliency["prediction"], str)

    kwargs = {"probe": "disruption", "flow": "img2txt", "start_layer": "1", "end_layer": "None", "seed": 3.0}
    disruption = json.loads(run_probe_request(model, processor, inputs, kwargs, {"answer": 0}))
    assert (disruption["start_layer"], disruption["end_layer"], disruption["seed"]) == (1, NUM_LAYERS - 1, 3)
    expected = disrupted_generate(model, inputs, Disruption("img2txt", 1), 8, processor.tokenizer.eos_token_id)
    assert disruption["disrupted"]["top5"] == expected.top5
    assert disruption["undisturbed"]["top5"] == disrupted_generate(model, inputs, None, 1).top5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"probe": "attention"}, "probe='attention'"),
        ({"probe": "disruption", "flow": "img2all"}, "flow='img2all'"),
        ({"probe": "disruption", "flow": "img2txt", "start_layer": NUM_LAYERS}, f"start_layer={NUM_LAYERS}"),
        ({"probe": "disruption", "flow": "img2txt", "start_layer": 0, "end_layer": -1}, "end_layer=-1"),
        ({"probe": "disruption", "flow": "img2txt", "start_layer": 1.5}, "start_layer=1.5"),
        ({"probe": "saliency", "answer_field": "label"}, "answer_field='label'"),
        ({"probe": "disruption", "flw": "img2img"}, "gen_kwargs flw='img2img' is not a setting of the disruption"),
        ({"probe": "saliency", "flow": "img2img"}, "gen_kwargs flow='img2img' is not a setting of the saliency"),
        ({"probe": "disruption", "flow": "img2txt", "start_layer": 3, "end_layer": 1}, "end_layer=1 is below"),
        ({"probe": "disruption", "flow": "img2txt", "temperature": 0.7}, "decodes greedily"),
        ({"probe": "saliency", "num_beams": 3}, "decodes greedily"),
    ],
)
def test_bad_probe_settings_are_named(model, processor, inputs, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        run_probe_request(model, processor, inputs, kwargs, {"answer": 0})


# ----------------------------------------------------------------------------------------------------------
# Figures, task functions and the sweep
# ----------------------------------------------------------------------------------------------------------


def test_figures_are_real_pngs(tmp_path):
    flows = {key: [0.1 * (layer + 1) * (index + 1) for layer in range(6)] for index, key in enumerate(FLOW_KEYS)}
    assert_real_png(plot_group_flows(flows, tmp_path / "groups.png"), size=(640, 400))
    assert_real_png(plot_visual_flows(flows, tmp_path / "visual.png"), size=(640, 400))
    drops = {"img2txt": {0: 30.0, 4: 10.0, 8: 1.0}, "img2img": {0: 5.0, 4: 8.0, 8: 0.5}}
    assert_real_png(plot_disruption_heatmap(drops, tmp_path / "heatmap.png"))


def test_task_functions_score_and_report(model, processor, monkeypatch, tmp_path):
    utils = load_by_path(REPO / "tasks" / "himap_probes" / "utils.py", "himap_probes_utils_under_test")
    monkeypatch.setenv("HIMAP_PROBE_DIR", str(tmp_path / "probes"))
    records, scores = [], []
    for seed, doc in enumerate(DOCS):
        doc = {**doc, "image": picture(seed)}
        inputs = encode(processor, picture(seed), utils.doc_to_text(doc))
        saliency = run_probe_request(model, processor, inputs, {"probe": "saliency"}, doc)
        records.append(utils.saliency_process_results(doc, [saliency])["img2txt_peak_layer"])
        disruption = run_probe_request(model, processor, inputs, {"probe": "disruption", "flow": "img2img"}, doc)
        scores.append(utils.disruption_process_results(doc, [disruption]))
    assert 0 <= utils.saliency_aggregate_img2txt_peak(records) < NUM_LAYERS
    assert 0 <= utils.saliency_aggregate_img2img_peak(records) < NUM_LAYERS
    mean = json.loads((tmp_path / "probes" / "saliency_mean.json").read_text())
    assert mean["num_examples"] == 2 and len(mean["flows"]["img2txt"]) == NUM_LAYERS
    assert len(json.loads((tmp_path / "probes" / "saliency_examples.json").read_text())) == 2
    assert_real_png(tmp_path / "probes" / "saliency_groups.png", size=(640, 400))
    assert_real_png(tmp_path / "probes" / "saliency_visual.png", size=(640, 400))
    for score in scores:
        assert set(score) == {"accuracy", "undisturbed_accuracy", "accuracy_drop", "label_consistency", "top5_jaccard"}
        assert score["accuracy_drop"] == score["undisturbed_accuracy"] - score["accuracy"]
        assert 0.0 <= score["top5_jaccard"] <= 1.0
    with pytest.raises(ValueError, match="himap_llava"):
        utils.disruption_process_results(DOCS[0], ["B"])


def test_sweep_writes_table_and_heatmap(model, processor, tmp_path):
    docs = [{**doc, "image": picture(seed)} for seed, doc in enumerate(DOCS)]
    rows = disruption_sweep.run_sweep(
        model, processor, docs, ["img2txt", "img2rnd"], [0, 2], max_new_tokens=2, progress=False
    )
    assert [(row.flow, row.start_layer, row.end_layer) for row in rows] == [
        ("img2txt", 0, 3),
        ("img2txt", 2, 3),
        ("img2rnd", 0, 3),
        ("img2rnd", 2, 3),
    ]
    assert all(row.num_examples == 2 and 0 <= row.top5_jaccard <= 1 for row in rows)
    paths = disruption_sweep.write_outputs(rows, tmp_path)
    assert len(paths["csv"].read_text().strip().splitlines()) == 1 + len(rows)
    assert paths["markdown"].read_text().startswith("| flow | start_layer |")
    assert_real_png(paths["heatmap"])
    assert disruption_sweep.parse_layers("0:8:4", 32) == [0, 4] and disruption_sweep.parse_layers("all", 3) == [0, 1, 2]
