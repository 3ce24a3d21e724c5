"""The testbed's training (:mod:`himap_lmms.testbed.train`) trains on what the evaluation asks: its first turn
is the study's and the task's prompt token for token, later turns are laid out as the chat template lays them out,
the loss sees only answers, and a step's batch depends on the step alone (the "seeded" claim)."""

from __future__ import annotations

import random

import pytest
import torch

from himap_lmms.prompting import VICUNA_CHAT_TEMPLATE, chat_prompt
from himap_lmms.pruning_study import encode as study_encode  # the evaluation's encoding
from himap_lmms.scienceqa import OPTION_LETTERS, doc_to_text
from himap_lmms.synthetic_data import generate_records
from himap_lmms.testbed import train
from himap_lmms.tiny_llava import build_processor, build_tokenizer


@pytest.fixture(scope="module")
def parts():
    tokenizer = build_tokenizer(train.corpus(), train.SPEC.vocab, isolate_newlines=True)
    processor = build_processor(train.SPEC, tokenizer)
    letter_ids = [train.answer_token(tokenizer, letter) for letter in OPTION_LETTERS[:5]]
    return tokenizer, processor, letter_ids


def unpadded(batch: dict[str, torch.Tensor], row: int) -> list[int]:
    return batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist()


def test_first_turn_is_the_evaluation_prompt(parts) -> None:
    _, processor, letter_ids = parts
    records = generate_records(12, seed=7)  # some with a hint, some without
    assert {bool(r["hint"]) for r in records} == {True, False}
    trained = train.encode(processor, [train.from_record(r, letter_ids) for r in records])
    evaluated = study_encode(processor, records)
    # What the himap_llava adapter builds from the task's doc_to_text with its default chat template.
    adapter = [chat_prompt(processor.tokenizer, doc_to_text(r), 1, VICUNA_CHAT_TEMPLATE) for r in records]
    task = processor(images=[r["image"] for r in records], text=adapter, padding=True, add_special_tokens=False)
    for row in range(len(records)):
        assert unpadded(trained, row)[:-2] == unpadded(evaluated, row)  # minus the answer letter and EOS
        assert unpadded(evaluated, row) == [t for t, m in zip(task["input_ids"][row], task["attention_mask"][row]) if m]
    assert torch.equal(trained["pixel_values"], evaluated["pixel_values"])


def test_later_turns_follow_the_chat_template_and_only_answers_carry_loss(parts) -> None:
    tokenizer, processor, letter_ids = parts
    talk = train.conversation(random.Random(3), tokenizer, letter_ids, questions=3, describe=True)
    assert len(talk.turns) == 4 and talk.turns[-1][0] == train.DESCRIBE
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


def test_a_steps_batch_depends_on_the_step_alone(parts) -> None:
    tokenizer, _, letter_ids = parts
    settings = train.TrainSettings(batch_size=3, questions=6, describe_share=0.5)

    def batch(step: int) -> list:
        return [
            (t.turns, t.layout, t.image.tobytes()) for t in train.train_batch(step, settings, tokenizer, letter_ids)
        ]

    assert batch(5) == batch(5)
    assert batch(5) != batch(6)
