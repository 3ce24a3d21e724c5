"""Yes/no object-existence questions about a :class:`~himap_lmms.synthetic.scenes.Scene`, in POPE's schema.

POPE (Li et al., 2023) asks "Is there a <object> in the image?" about COCO images, half of the answers yes, and
draws the absent objects of its "no" questions three ways: at random, among the most frequent objects
(popular), or among objects that often co-occur with what is there (adversarial). Synthetic scenes have no
frequency or co-occurrence statistics, so the three categories here keep POPE's meaning of increasingly
tempting absent objects by how much of them the scene shows:

- ``random``: any (colour, shape) the scene lacks;
- ``popular``: one the scene lacks whose colour or shape (exactly one of the two) some object has;
- ``adversarial``: one the scene lacks whose colour and shape both appear, on different objects, so only the
  binding of the two tells it apart.

Every row has POPE's columns (``id``, ``question_id``, ``question``, ``answer``, ``image_source``, ``image``,
``category``), answers are ``"yes"``/``"no"`` in equal numbers within every category, and chance is 50 %.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import datasets

from himap_lmms.synthetic.scenes import COLOURS, OBJECT_SHAPES, SHORT_ANSWER, Scene

CATEGORIES = ("random", "popular", "adversarial")


def absent(scene: Scene, category: str) -> list[tuple[str, str]]:
    """The (colour, shape) pairs the scene lacks that a "no" question of ``category`` may ask about."""
    colours = {thing.colour for thing in scene.objects.values()}
    shapes = {thing.shape for thing in scene.objects.values()}
    missing = [(c, s) for c, s in itertools.product(COLOURS, OBJECT_SHAPES) if not scene.count(c, s)]
    if category == "random":
        return missing
    if category == "popular":
        return [(c, s) for c, s in missing if (c in colours) != (s in shapes)]
    return [(c, s) for c, s in missing if c in colours and s in shapes]


def question(colour: str, shape: str) -> str:
    return f"Is there a {colour} {shape} in the image?"


def record(rng: random.Random, scene: Scene, index: int) -> dict[str, Any] | None:
    """A yes question on even ``index``, a no question on odd, of the category ``index // 2`` picks in turn
    (None: the scene has no absent object of that category)."""
    category = CATEGORIES[(index // 2) % len(CATEGORIES)]
    if index % 2 == 0:
        thing = scene.objects[rng.choice(sorted(scene.objects))]
        colour, shape, answer = thing.colour, thing.shape, "yes"
    else:
        options = absent(scene, category)
        if not options:
            return None
        (colour, shape), answer = rng.choice(options), "no"
    return {
        "id": str(index),
        "question_id": str(index),
        "question": question(colour, shape),
        "answer": answer,
        "image_source": f"synthetic-{index}",
        "category": category,
    }


def features() -> datasets.Features:
    text = datasets.Value("string")
    return datasets.Features(
        {
            "id": text,
            "question_id": text,
            "question": text,
            "answer": text,
            "image_source": text,
            "image": datasets.Image(),
            "category": text,
        }
    )


def prompt(row: dict[str, Any]) -> str:
    """What the stock ``pope`` task asks (its ``pope_doc_to_text`` with the default post prompt)."""
    return row["question"].strip() + SHORT_ANSWER


def answer(row: dict[str, Any]) -> str:
    return row["answer"]
