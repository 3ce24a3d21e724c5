"""Short-answer questions about small details of a :class:`~himap_lmms.synthetic.scenes.Scene`, in TextVQA's
schema, scored by TextVQA's VQA accuracy.

Three families, each about one 2 x 2-patch object or a count of them:

- ``colour_of``: "What colour is the triangle?" (a shape only one object has) -> ``red``;
- ``count_shape``: "How many crosses are there?" -> ``0`` .. ``3``;
- ``where_is``: "Where is the blue circle?" (an object no other shares) -> ``top left`` ... ``bottom right``.

A synthetic question has one true answer, so its ten "annotator" answers are ten copies of it, and VQA
accuracy (min(1, matches / 3) over the ten leave-one-out subsets) is 1 for that answer and 0 for any other.
Rows have TextVQA's columns (``image_id``, ``question_id``, ``question``, ``question_tokens``, ``image``,
``image_width``, ``image_height``, ``answers``, ``image_classes``, ``set_name``, ``ocr_tokens``).
"""

from __future__ import annotations

import random
from typing import Any

import datasets

from himap_lmms.synthetic.scenes import IMAGE_SIZE, OBJECT_SHAPES, POSITIONS, SHORT_ANSWER, Scene

FAMILIES = ("colour_of", "count_shape", "where_is")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
ANSWERS = 10  # annotators per TextVQA question


def ask(rng: random.Random, family: str, scene: Scene) -> tuple[str, str] | None:
    """(question, answer) of ``family`` about ``scene``, or None if the scene has no such question."""
    if family == "colour_of":
        unique = [t for t in scene.objects.values() if scene.count(shape=t.shape) == 1]
        if not unique:
            return None
        thing = rng.choice(unique)
        return f"what colour is the {thing.shape}?", thing.colour
    if family == "count_shape":
        counts = {shape: scene.count(shape=shape) for shape in OBJECT_SHAPES}
        count = rng.randint(0, 3)
        if count not in counts.values():
            count = max(n for n in counts.values() if n <= 3)
        shape = rng.choice([name for name, n in counts.items() if n == count])
        return f"how many {PLURALS[shape]} are there?", str(count)
    unique = [r for r, t in scene.objects.items() if scene.count(t.colour, t.shape) == 1]
    if not unique:
        return None
    region = rng.choice(sorted(unique))
    thing = scene.objects[region]
    return f"where is the {thing.colour} {thing.shape}?", POSITIONS[region]


def record(rng: random.Random, scene: Scene, index: int) -> dict[str, Any] | None:
    """A question of the family ``index`` picks in turn (None: the scene has no question of it). TextVQA
    stores questions in lower case; its prompt capitalises them."""
    family = FAMILIES[index % len(FAMILIES)]
    asked = ask(rng, family, scene)
    if asked is None:
        return None
    question, answer = asked
    return {
        "image_id": f"synthetic-{index}",
        "question_id": index,
        "question": question,
        "question_tokens": question.rstrip("?").split(),
        "image_width": IMAGE_SIZE,
        "image_height": IMAGE_SIZE,
        "answers": [answer] * ANSWERS,
        "image_classes": [family],
        "set_name": "val",
        "ocr_tokens": [],
    }


def features() -> datasets.Features:
    text = datasets.Value("string")
    return datasets.Features(
        {
            "image_id": text,
            "question_id": datasets.Value("int64"),
            "question": text,
            "question_tokens": datasets.Sequence(text),
            "image": datasets.Image(),
            "image_width": datasets.Value("int64"),
            "image_height": datasets.Value("int64"),
            "answers": datasets.Sequence(text),
            "image_classes": datasets.Sequence(text),
            "set_name": text,
            "ocr_tokens": datasets.Sequence(text),
        }
    )


def prompt(row: dict[str, Any]) -> str:
    """What the stock ``textvqa_val`` task asks (its ``textvqa_doc_to_text``, default kwargs: no OCR tokens)."""
    return row["question"].capitalize() + SHORT_ANSWER


def answer(row: dict[str, Any]) -> str:
    return row["answers"][0]


def category(row: dict[str, Any]) -> str:
    """The question's group for per-category accuracy: the family the row files under ``image_classes``."""
    return row["image_classes"][0]
