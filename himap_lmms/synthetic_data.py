"""Synthetic multiple-choice questions about drawn scenes, in the ScienceQA-IMG schema.

Real ScienceQA cannot be downloaded here, so the demo, the tests and the testbed model use scenes drawn with
PIL: a 3 x 3 grid of cells, some holding a coloured shape. Every question needs the image, and most need one
small region of it ("What colour is the shape in the top left?"), which is what visual-token pruning has to
keep. Records carry the columns of the hub dataset (``image``, ``question``, ``choices``, ``answer``, ``hint``,
``task``, ``grade``, ``subject``, ``topic``, ``category``, ``skill``, ``lecture``, ``solution``) so the same
task code reads both; :func:`write_dataset` lays them out like the hub repo (config ``ScienceQA-IMG``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (140, 60, 180),
    "orange": (245, 130, 30),
}
SHAPES = ("circle", "square", "triangle")
POSITIONS = (
    "top left", "top middle", "top right",
    "middle left", "centre", "middle right",
    "bottom left", "bottom middle", "bottom right",
)  # fmt: skip
BACKGROUND = (250, 250, 250)
CONFIG = "ScienceQA-IMG"

# Question families, each with the ScienceQA-style metadata it is filed under (so per-group accuracy works).
FAMILIES = {
    "colour_at": ("natural science", "grade2", "colour of the shape at a position"),
    "shape_at": ("natural science", "grade4", "shape at a position"),
    "position_of": ("social science", "grade3", "position of a coloured shape"),
    "count_colour": ("language science", "grade7", "counting shapes of a colour"),
}


def draw_scene(objects: dict[int, tuple[str, str]], size: int) -> Image.Image:
    """A white canvas with ``{cell: (colour, shape)}`` drawn in a 3 x 3 grid; shapes fill ~60 % of a cell."""
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    cell = size / 3
    margin = cell * 0.2
    for index, (colour, shape) in objects.items():
        row, column = divmod(index, 3)
        left, top = column * cell + margin, row * cell + margin
        right, bottom = (column + 1) * cell - margin, (row + 1) * cell - margin
        fill = COLOURS[colour]
        if shape == "circle":
            draw.ellipse([left, top, right, bottom], fill=fill)
        elif shape == "square":
            draw.rectangle([left, top, right, bottom], fill=fill)
        else:
            draw.polygon([((left + right) / 2, top), (right, bottom), (left, bottom)], fill=fill)
    return image


def _options(rng: random.Random, answer: str, pool: list[str], count: int) -> tuple[list[str], int]:
    """``count`` distinct options from ``pool`` including ``answer``, shuffled; returns them and its index."""
    distractors = rng.sample([item for item in pool if item != answer], count - 1)
    options = [answer, *distractors]
    rng.shuffle(options)
    return options, options.index(answer)


def _colour_at(rng: random.Random, objects: dict[int, tuple[str, str]], count: int):
    cell = rng.choice(sorted(objects))
    colour, shape = objects[cell]
    options, answer = _options(rng, colour, list(COLOURS), count)
    return f"What colour is the {shape} in the {POSITIONS[cell]}?", options, answer


def _shape_at(rng: random.Random, objects: dict[int, tuple[str, str]], count: int):
    cell = rng.choice(sorted(objects))
    options, answer = _options(rng, objects[cell][1], list(SHAPES), min(count, len(SHAPES)))
    return f"Which shape is in the {POSITIONS[cell]}?", options, answer


def _position_of(rng: random.Random, objects: dict[int, tuple[str, str]], count: int):
    unique = [cell for cell, (colour, _) in objects.items() if sum(c == colour for c, _ in objects.values()) == 1]
    if not unique:
        return None
    cell = rng.choice(sorted(unique))
    colour, shape = objects[cell]
    options, answer = _options(rng, POSITIONS[cell], list(POSITIONS), count)
    return f"Where is the {colour} {shape}?", options, answer


def _count_colour(rng: random.Random, objects: dict[int, tuple[str, str]], count: int):
    """Recolours ``objects`` in place so that 0 to 3 of them have the asked colour, each count about as likely.

    With colours drawn independently most counts would be 0 or 1: a model could guess them, and a blank canvas
    ("there is nothing, so 0") would pass the blank-image control on half the counting questions.
    """
    colour = rng.choice(list(COLOURS))
    true = rng.randint(0, min(3, len(objects)))
    chosen = set(rng.sample(sorted(objects), true))
    others = [name for name in COLOURS if name != colour]
    for cell, (_, shape) in objects.items():
        objects[cell] = (colour if cell in chosen else rng.choice(others), shape)
    options, answer = _options(rng, str(true), [str(n) for n in range(6)], count)
    return f"How many {colour} shapes are there?", options, answer


_ASK: dict[str, Callable] = {
    "colour_at": _colour_at,
    "shape_at": _shape_at,
    "position_of": _position_of,
    "count_colour": _count_colour,
}


def make_record(rng: random.Random, image_size: int, with_layout: bool = False) -> dict[str, Any]:
    """One scene and one question about it, as a ScienceQA-IMG row (plus ``layout`` if asked, see below)."""
    while True:
        cells = rng.sample(range(9), rng.randint(2, 5))
        objects = {cell: (rng.choice(list(COLOURS)), rng.choice(SHAPES)) for cell in cells}
        family = rng.choice(list(FAMILIES))
        count = rng.choices([2, 3, 4, 5], weights=[1, 2, 6, 1])[0]
        asked = _ASK[family](rng, objects, count)
        if asked is not None:
            break
    question, choices, answer = asked
    subject, grade, skill = FAMILIES[family]
    record = {
        "image": draw_scene(objects, image_size),
        "question": question,
        "choices": choices,
        "answer": answer,
        "hint": "Look at the picture." if rng.random() < 0.3 else "",
        "task": "closed choice",
        "grade": grade,
        "subject": subject,
        "topic": "shapes",
        "category": family,
        "skill": skill,
        "lecture": "",
        "solution": f"The answer is {choices[answer]}.",
    }
    if with_layout:
        record["layout"] = dict(objects)
    return record


def generate_records(n: int, seed: int, image_size: int = 168, with_layout: bool = False) -> list[dict[str, Any]]:
    """``n`` records, the same for the same ``seed``.

    ``with_layout`` adds a ``layout`` key, ``{cell: (colour, shape)}`` for the drawn objects (cells 0-8 in
    reading order), which is not a ScienceQA column: the testbed's training uses it to supervise its vision
    tower. It draws no extra random numbers, so the other columns are the same with or without it.
    """
    rng = random.Random(seed)
    return [make_record(rng, image_size, with_layout) for _ in range(n)]


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


def write_dataset(out_dir: str | Path, splits: dict[str, int], seed: int, image_size: int = 168) -> Path:
    """Write splits as the hub repo lays them out: ``load_dataset(out_dir, "ScienceQA-IMG", split=...)``."""
    out_dir = Path(out_dir)
    (out_dir / CONFIG).mkdir(parents=True, exist_ok=True)
    for offset, (split, n) in enumerate(splits.items()):
        rows = generate_records(n, seed + 1000 * offset, image_size)
        table = datasets.Dataset.from_list(rows, features=features())
        table.to_parquet(str(out_dir / CONFIG / f"{split}-00000-of-00001.parquet"))
    data_files = "".join(f"  - split: {split}\n    path: {CONFIG}/{split}-*.parquet\n" for split in splits)
    (out_dir / "README.md").write_text(
        f"---\nconfigs:\n- config_name: {CONFIG}\n  data_files:\n{data_files}---\n\n"
        "Synthetic scenes and multiple-choice questions in the ScienceQA-IMG schema, written by "
        f"`scripts/make_sample_data.py` (seed {seed}, {image_size} px). Not ScienceQA: a testbed for pruning.\n"
    )
    return out_dir
