"""The testbed's training (:mod:`himap_lmms.testbed.train`) trains on what the evaluation asks: its first turn
is the task's prompt token for token (the stock prompt functions of POPE and TextVQA, the paper's ScienceQA
prompt), later turns are laid out as the chat template lays them out, the loss sees only answers, the vision
read-out is told which patches hold an object, and a step's batch depends on the step alone (the "seeded"
claim)."""

from __future__ import annotations

import random

import pytest
import torch
from lmms_eval.tasks.pope.utils import pope_doc_to_text
from lmms_eval.tasks.textvqa.utils import textvqa_doc_to_text

from himap_lmms.prompting import VICUNA_CHAT_TEMPLATE, chat_prompt
from himap_lmms.pruning_study import encode as study_encode  # the study's encoding
from himap_lmms.scienceqa import doc_to_text
from himap_lmms.synthetic import BENCHMARKS, generate_records
from himap_lmms.synthetic.scenes import COLOURS, OBJECT_SHAPES, POSITIONS, SHORT_ANSWER
from himap_lmms.testbed import train
from himap_lmms.tiny_llava import build_processor, build_tokenizer

STOCK_KWARGS = {"pre_prompt": "", "post_prompt": SHORT_ANSWER}  # the stock tasks' default kwargs
TASK_PROMPTS = {
    "scienceqa": doc_to_text,
    "pope": lambda doc: pope_doc_to_text(doc, STOCK_KWARGS),
    "textvqa": lambda doc: textvqa_doc_to_text(doc, {**STOCK_KWARGS, "ocr": False}),
}


@pytest.fixture(scope="module")
def parts():
    tokenizer = build_tokenizer(train.corpus(), train.SPEC.vocab, isolate_newlines=True)
    return tokenizer, build_processor(train.SPEC, tokenizer)


def unpadded(batch: dict[str, torch.Tensor], row: int) -> list[int]:
    return batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist()


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_first_turn_is_the_evaluation_prompt(parts, name: str) -> None:
    tokenizer, processor = parts
    records = generate_records(name, 12, seed=7)
    trained = train.encode(processor, [train.from_record(name, r, tokenizer) for r in records])
    # What the himap_llava adapter builds from the task's doc_to_text with its default chat template.
    adapter = [chat_prompt(tokenizer, TASK_PROMPTS[name](r), 1, VICUNA_CHAT_TEMPLATE) for r in records]
    task = processor(
        images=[r["image"] for r in records], text=adapter, return_tensors="pt", padding=True, add_special_tokens=False
    )
    for row, record in enumerate(records):
        answer = train.answer_ids(tokenizer, BENCHMARKS[name].answer(record))
        assert unpadded(trained, row) == [*unpadded(task, row), *answer, tokenizer.eos_token_id]
    assert torch.equal(trained["pixel_values"], task["pixel_values"])
    if name == "scienceqa":  # the pruning study asks the same
        evaluated = study_encode(processor, records)
        assert all(unpadded(trained, row)[:-2] == unpadded(evaluated, row) for row in range(len(records)))


def test_later_turns_follow_the_chat_template_and_only_answers_carry_loss(parts) -> None:
    tokenizer, processor = parts
    talk = train.conversation(random.Random(3), tokenizer, questions=5, dense_turns=2)
    assert len(talk.turns) == 7 and all(request in train.DENSE_TURNS for request, _ in talk.turns[-2:])
    messages = []
    for index, (content, answer) in enumerate(talk.turns):
        messages.append({"role": "user", "content": ("<image>\n" if index == 0 else "") + content})
        messages.append({"role": "assistant", "content": tokenizer.decode(answer).strip()})
    text = processor.apply_chat_template(messages, tokenize=False)
    reference = processor(images=[talk.image], text=[text], return_tensors="pt", add_special_tokens=False)
    batch = train.encode(processor, [talk])
    assert unpadded(batch, 0) == reference["input_ids"][0].tolist()
    labelled = batch["labels"][0][batch["labels"][0] != -100].tolist()
    assert labelled == [token for _, answer in talk.turns for token in [*answer, tokenizer.eos_token_id]]


def test_the_dense_turns_list_every_object_once_in_the_order_they_ask_for(parts) -> None:
    tokenizer, _ = parts
    talk = train.conversation(random.Random(4), tokenizer, questions=2, dense_turns=len(train.DENSE_TURNS))
    scene, dense = talk.scene, dict(talk.turns[2:])
    assert sorted(dense) == sorted(train.DENSE_TURNS)  # every form once
    listings = {request: train.DENSE_TURNS[request](scene) for request in dense}
    for request, answer in dense.items():
        assert answer == train.answer_ids(tokenizer, listings[request])
    in_order = [tuple(item.rsplit(" ", 2)) for item in listings["Describe the scene."].rstrip(".").split(", ")]
    assert [place for place, _, _ in in_order] == [POSITIONS[region] for region in sorted(scene.objects)]
    assert len(in_order) == len(scene.objects) >= 2
    # Each list: every shape (or colour) once, in order, with its count and then its objects in reading order.
    for request, by, names in (
        ("List the shapes.", "shape", OBJECT_SHAPES),
        ("List the colours.", "colour", list(COLOURS)),
    ):
        listed = []
        groups = [group.partition(": ") for group in listings[request].rstrip(".").split("; ")]
        assert [head.split(" ")[0] for head, _, _ in groups] == list(names)
        for head, _, members in groups:
            name, count = head.split(" ")
            items = [item.split(" ", 1) for item in members.split(", ")] if members else []
            assert int(count) == len(items)
            for other, place in items:
                listed.append((place, *((other, name) if by == "shape" else (name, other))))
            places = [place for _, place in items]
            assert places == sorted(places, key=POSITIONS.index)
        assert sorted(listed) == sorted(in_order)


def test_conversations_mix_the_three_formats(parts) -> None:
    tokenizer, _ = parts
    rng = random.Random(0)
    contents = [content for _ in range(20) for content, _ in train.conversation(rng, tokenizer, 6).turns]
    assert any(c.endswith("directly.") for c in contents)  # ScienceQA
    assert any(c.startswith("Is there a ") for c in contents)  # POPE
    assert any(
        c.startswith(("What colour is the ", "How many ", "Where is the ")) and c.endswith(SHORT_ANSWER)
        for c in contents
    )


def test_read_out_targets_mark_exactly_the_object_patches() -> None:
    record = generate_records("pope", 1, seed=3, with_layout=True)[0]
    scene = record["layout"]
    targets = train.layout_targets([scene])[0]
    marked = set(torch.nonzero(targets[:, 0]).flatten().tolist())
    assert marked == {patch for region in scene.objects for patch in scene.patches(region)}
    assert len(marked) == 4 * len(scene.objects)
    for region, thing in scene.objects.items():
        for patch in scene.patches(region):
            assert targets[patch, 0] == list(COLOURS).index(thing.colour) + 1
            assert targets[patch, 1] == list(OBJECT_SHAPES).index(thing.shape) + 1
            assert targets[patch, 2] == region


def test_a_steps_batch_depends_on_the_step_alone(parts) -> None:
    tokenizer, _ = parts
    settings = train.TrainSettings(batch_size=3, questions=6, dense_turns=1)

    def batch(step: int) -> list:
        return [(t.turns, t.scene, t.image.tobytes()) for t in train.train_batch(step, settings, tokenizer)]

    assert batch(5) == batch(5)
    assert batch(5) != batch(6)
