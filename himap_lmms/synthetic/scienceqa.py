"""Multiple-choice questions about a :class:`~himap_lmms.synthetic.scenes.Scene`, in the ScienceQA-IMG schema.

Records carry the columns of the hub dataset (``image``, ``question``, ``choices``, ``answer``, ``hint``,
``task``, ``grade``, ``subject``, ``topic``, ``category``, ``skill``, ``lecture``, ``solution``), so the task
code that reads ScienceQA reads them unchanged. Every family lists the same four choices in the same order:
the letter names the answer, and a model has only to read the image, not to find its answer among shuffled
options (docs/testbed.md); chance is 25 %.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, NamedTuple

import datasets

from himap_lmms.scienceqa import OPTION_LETTERS, build_prompt
from himap_lmms.synthetic.scenes import COLOURS, CORNERS, OBJECT_SHAPES, POSITIONS, Scene

Question = tuple[str, list[str], int]  # question text, choices, index of the answer
HINT = "Look at the picture."
COUNTS = ("0", "1", "2", "3")


class Family(NamedTuple):
    """A question family: the ScienceQA metadata it is filed under (so per-group accuracy works) and its
    fixed choices."""

    subject: str
    grade: str
    skill: str
    choices: list[str]


FAMILIES = {
    "colour_at": Family("natural science", "grade2", "colour of the shape at a position", list(COLOURS)),
    "shape_at": Family("natural science", "grade4", "shape at a position", list(OBJECT_SHAPES)),
    "corner_of": Family("social science", "grade3", "corner of a coloured shape", list(CORNERS.values())),
    "count_colour": Family("language science", "grade7", "counting shapes of a colour", list(COUNTS)),
}


def _choose(family: str, answer: str) -> tuple[list[str], int]:
    choices = FAMILIES[family].choices
    return list(choices), choices.index(answer)


def _colour_at(rng: random.Random, scene: Scene) -> Question:
    region = rng.choice(sorted(scene.objects))
    thing = scene.objects[region]
    return f"What colour is the {thing.shape} in the {POSITIONS[region]}?", *_choose("colour_at", thing.colour)


def _shape_at(rng: random.Random, scene: Scene) -> Question:
    region = rng.choice(sorted(scene.objects))
    return f"Which shape is in the {POSITIONS[region]}?", *_choose("shape_at", scene.objects[region].shape)


def _corner_of(rng: random.Random, scene: Scene) -> Question | None:
    """A corner object whose colour and shape no other object shares (so the question has one answer)."""
    unique = [
        region
        for region in CORNERS
        if region in scene.objects and scene.count(scene.objects[region].colour, scene.objects[region].shape) == 1
    ]
    if not unique:
        return None
    region = rng.choice(unique)
    thing = scene.objects[region]
    return f"Which corner is the {thing.colour} {thing.shape} in?", *_choose("corner_of", CORNERS[region])


def _count_colour(rng: random.Random, scene: Scene) -> Question:
    """Draws the count first, then a colour with it, so that counts stay spread (a count no colour has becomes
    the largest count there is: the missing ones are nearly always the high ones)."""
    counts = {colour: scene.count(colour=colour) for colour in COLOURS}
    count = rng.randint(0, 3)
    if count not in counts.values():
        count = max(n for n in counts.values() if n <= 3)
    colour = rng.choice([name for name, n in counts.items() if n == count])
    return f"How many {colour} shapes are there?", *_choose("count_colour", str(count))


_ASK: dict[str, Callable[[random.Random, Scene], Question | None]] = {
    "colour_at": _colour_at,
    "shape_at": _shape_at,
    "corner_of": _corner_of,
    "count_colour": _count_colour,
}


def ask(rng: random.Random, family: str, scene: Scene) -> Question | None:
    """A question of ``family`` about ``scene`` (None if the scene has none: no unique corner object)."""
    return _ASK[family](rng, scene)


def draw_hint(rng: random.Random) -> str:
    """The hint column: :data:`HINT` on about 30 % of questions, else empty (most ScienceQA hints are empty)."""
    return HINT if rng.random() < 0.3 else ""


def record(rng: random.Random, scene: Scene, index: int) -> dict[str, Any] | None:
    """One question about ``scene`` as a ScienceQA-IMG row without its image (None: no question of the
    family drawn)."""
    family = rng.choice(list(FAMILIES))
    asked = ask(rng, family, scene)
    if asked is None:
        return None
    question, choices, answer = asked
    info = FAMILIES[family]
    return {
        "question": question,
        "choices": choices,
        "answer": answer,
        "hint": draw_hint(rng),
        "task": "closed choice",
        "grade": info.grade,
        "subject": info.subject,
        "topic": "shapes",
        "category": family,
        "skill": info.skill,
        "lecture": "",
        "solution": f"The answer is {choices[answer]}.",
    }


def features() -> datasets.Features:
    text = datasets.Value("string")
    return datasets.Features(
        {
            "image": datasets.Image(),
            "question": text,
            "choices": datasets.Sequence(text),
            "answer": datasets.Value("int8"),
            **{name: text for name in ("hint", "task", "grade", "subject", "topic", "category", "skill")},
            "lecture": text,
            "solution": text,
        }
    )


def prompt(row: dict[str, Any]) -> str:
    """The paper's user content: context, question, lettered options and the answer instruction."""
    return build_prompt(row["question"], row["choices"], row["hint"])


def answer(row: dict[str, Any]) -> str:
    return OPTION_LETTERS[row["answer"]]
