"""Synthetic multiple-choice questions about drawn scenes, in the ScienceQA-IMG schema.

Real ScienceQA cannot be downloaded here, so the demo, the tests and the testbed model use scenes drawn with
PIL: a 3 x 3 grid of cells, some holding a coloured shape. Every question needs the image, and most need one
small region of it ("What colour is the circle in the top left?"), which is what visual-token pruning has to
keep. Records carry the columns of the hub dataset (``image``, ``question``, ``choices``, ``answer``, ``hint``,
``task``, ``grade``, ``subject``, ``topic``, ``category``, ``skill``, ``lecture``, ``solution``) so the same
task code reads both; :func:`write_dataset` lays them out like the hub repo (config ``ScienceQA-IMG``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import datasets
from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
}
SHAPES = ("circle", "square", "triangle", "cross")
POSITIONS = (
    "top left", "top middle", "top right",
    "middle left", "centre", "middle right",
    "bottom left", "bottom middle", "bottom right",
)  # fmt: skip
CORNERS = {0: "top left", 2: "top right", 6: "bottom left", 8: "bottom right"}
COUNTS = ("0", "1", "2", "3")
BACKGROUND = (250, 250, 250)
CONFIG = "ScienceQA-IMG"

Scene = dict[int, tuple[str, str]]  # {cell 0-8 in reading order: (colour, shape)}
Question = tuple[str, list[str], int]  # question text, choices, index of the answer

HINT = "Look at the picture."


class Family(NamedTuple):
    """A question family: the ScienceQA-style metadata it is filed under (so per-group accuracy works) and its
    choices. Every family lists the same four choices in the same order, so the letter names the answer and a
    model has only to read the image, not to find its answer among shuffled options (see README, "The bundled
    testbed"); chance is 25 %."""

    subject: str
    grade: str
    skill: str
    choices: list[str]


FAMILIES = {
    "colour_at": Family("natural science", "grade2", "colour of the shape at a position", list(COLOURS)),
    "shape_at": Family("natural science", "grade4", "shape at a position", list(SHAPES)),
    "corner_of": Family("social science", "grade3", "corner of a coloured shape", list(CORNERS.values())),
    "count_colour": Family("language science", "grade7", "counting shapes of a colour", list(COUNTS)),
}


def draw_scene(objects: Scene, size: int) -> Image.Image:
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
        elif shape == "triangle":
            draw.polygon([((left + right) / 2, top), (right, bottom), (left, bottom)], fill=fill)
        else:
            arm = (right - left) / 6
            middle_x, middle_y = (left + right) / 2, (top + bottom) / 2
            draw.rectangle([middle_x - arm, top, middle_x + arm, bottom], fill=fill)
            draw.rectangle([left, middle_y - arm, right, middle_y + arm], fill=fill)
    return image


def make_scene(rng: random.Random) -> Scene:
    """2 to 5 objects in distinct cells; one colour is given to 0 to 3 of them (each count equally likely), the
    rest get the other colours.

    With colours drawn independently most colours would appear at most once: counting questions would nearly
    always answer 0 or 1, and a blank canvas ("there is nothing, so 0") would pass the blank-image control.
    """
    shared_count = rng.randint(0, 3)
    cells = rng.sample(range(9), rng.randint(max(2, shared_count), 5))
    shared = rng.choice(list(COLOURS))
    chosen = set(rng.sample(cells, shared_count))
    others = [name for name in COLOURS if name != shared]
    return {cell: (shared if cell in chosen else rng.choice(others), rng.choice(SHAPES)) for cell in cells}


def _choose(family: str, answer: str) -> tuple[list[str], int]:
    choices = FAMILIES[family].choices
    return list(choices), choices.index(answer)


def _colour_at(rng: random.Random, objects: Scene) -> Question:
    cell = rng.choice(sorted(objects))
    colour, shape = objects[cell]
    return f"What colour is the {shape} in the {POSITIONS[cell]}?", *_choose("colour_at", colour)


def _shape_at(rng: random.Random, objects: Scene) -> Question:
    cell = rng.choice(sorted(objects))
    return f"Which shape is in the {POSITIONS[cell]}?", *_choose("shape_at", objects[cell][1])


def _corner_of(rng: random.Random, objects: Scene) -> Question | None:
    """A corner object whose colour and shape no other object shares (so the question has one answer)."""
    combos = list(objects.values())
    unique = [cell for cell in CORNERS if cell in objects and combos.count(objects[cell]) == 1]
    if not unique:
        return None
    cell = rng.choice(unique)
    colour, shape = objects[cell]
    return f"Which corner is the {colour} {shape} in?", *_choose("corner_of", CORNERS[cell])


def _count_colour(rng: random.Random, objects: Scene) -> Question:
    """Draws the count first, then a colour with it, so that counts stay spread.

    A count no colour has becomes the largest count there is: the missing ones are nearly always the high ones.
    """
    counts = {colour: sum(c == colour for c, _ in objects.values()) for colour in COLOURS}
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


def ask(rng: random.Random, family: str, objects: Scene) -> Question | None:
    """A question of ``family`` about ``objects`` (None if the scene has none: no unique corner object)."""
    return _ASK[family](rng, objects)


def draw_hint(rng: random.Random) -> str:
    """The hint column: :data:`HINT` on about 30 % of questions, else empty (most ScienceQA hints are empty)."""
    return HINT if rng.random() < 0.3 else ""


def make_record(rng: random.Random, image_size: int, with_layout: bool = False) -> dict[str, Any]:
    """One scene and one question about it, as a ScienceQA-IMG row (plus ``layout`` if asked, see below)."""
    while True:
        objects = make_scene(rng)
        family = rng.choice(list(FAMILIES))
        asked = ask(rng, family, objects)
        if asked is not None:
            break
    question, choices, answer = asked
    family_info = FAMILIES[family]
    record = {
        "image": draw_scene(objects, image_size),
        "question": question,
        "choices": choices,
        "answer": answer,
        "hint": draw_hint(rng),
        "task": "closed choice",
        "grade": family_info.grade,
        "subject": family_info.subject,
        "topic": "shapes",
        "category": family,
        "skill": family_info.skill,
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
