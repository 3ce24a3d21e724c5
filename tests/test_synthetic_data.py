"""The three synthetic benchmarks (:mod:`himap_lmms.synthetic`): seeded, answers that follow from the drawn scene,
objects on 4 of the 144 patches, POPE's categories and balance, and the shipped splits are what the generators
write."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest

from himap_lmms.synthetic import BENCHMARKS, generate_records, write_benchmark
from himap_lmms.synthetic.pope import absent
from himap_lmms.synthetic.scenes import COLOURS, CORNERS, GRID, PATCH, POSITIONS, Scene
from himap_lmms.synthetic.scienceqa import FAMILIES
from himap_lmms.synthetic.vqa import PLURALS

DATA = Path(__file__).resolve().parent.parent / "data"
SHIPPED_SEEDS = {"scienceqa": 20250317, "pope": 20250318, "textvqa": 20250319}  # scripts/make_sample_data.py


@pytest.fixture(scope="module")
def records() -> dict[str, list[dict]]:
    return {name: generate_records(name, 120, seed=11, with_layout=True) for name in BENCHMARKS}


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_seeded(name: str) -> None:
    def rows(seed: int) -> list:
        return [(r["question"], r["image"].tobytes()) for r in generate_records(name, 5, seed)]

    assert rows(1) == rows(1)
    assert rows(1) != rows(2)


def coloured_patches(image, colour: tuple[int, int, int]) -> set[int]:
    pixels = np.all(np.asarray(image) == colour, axis=-1)
    rows, columns = np.nonzero(pixels)
    return {int(r // PATCH) * GRID + int(c // PATCH) for r, c in zip(rows, columns)}


def test_every_object_covers_four_of_the_144_patches(records) -> None:
    """The pixels of each colour lie exactly in the 2 x 2 patches of the objects of that colour: an answer lives in
    4 image tokens per object."""
    for record in records["scienceqa"]:
        scene: Scene = record["layout"]
        for name, rgb in COLOURS.items():
            regions = [region for region, thing in scene.objects.items() if thing.colour == name]
            expected = {patch for region in regions for patch in scene.patches(region)}
            assert coloured_patches(record["image"], rgb) == expected
            assert len(expected) == 4 * len(regions)
        assert 2 <= len(scene.objects) <= 6 and 4 <= len(scene.clutter) <= 10


def region_named(question: str) -> int:
    return next(i for i, name in sorted(enumerate(POSITIONS), key=lambda p: -len(p[1])) if f"the {name}" in question)


def test_scienceqa_answers_follow_from_the_scene(records) -> None:
    for record in records["scienceqa"]:
        scene, question, answer = record["layout"], record["question"], record["choices"][record["answer"]]
        if record["category"] == "colour_at":
            assert scene.objects[region_named(question)].colour == answer
        elif record["category"] == "shape_at":
            assert scene.objects[region_named(question)].shape == answer
        elif record["category"] == "corner_of":
            colour, shape = re.match(r"Which corner is the (\w+) (\w+) in\?", question).groups()
            [region] = [r for r, t in scene.objects.items() if (t.colour, t.shape) == (colour, shape)]
            assert CORNERS[region] == answer
        else:
            colour = re.match(r"How many (\w+) shapes", question).group(1)
            assert scene.count(colour=colour) == int(answer)
    assert set(Counter(r["category"] for r in records["scienceqa"])) == {
        "colour_at",
        "shape_at",
        "corner_of",
        "count_colour",
    }


def test_pope_answers_categories_and_balance(records) -> None:
    rows = records["pope"]
    for row in rows:
        colour, shape = re.match(r"Is there a (\w+) (\w+) in the image\?", row["question"]).groups()
        present = row["layout"].count(colour, shape) > 0
        assert row["answer"] == ("yes" if present else "no")
        if not present:
            assert (colour, shape) in absent(row["layout"], row["category"])
            colours = {t.colour for t in row["layout"].objects.values()}
            shapes = {t.shape for t in row["layout"].objects.values()}
            shared = (colour in colours) + (shape in shapes)
            assert shared == {"popular": 1, "adversarial": 2}.get(row["category"], shared)
    counts = Counter((row["category"], row["answer"]) for row in rows)
    assert set(counts.values()) == {len(rows) // 6}  # every category, half yes and half no


def test_vqa_answers_follow_from_the_scene(records) -> None:
    for row in records["textvqa"]:
        scene, question, [answer] = row["layout"], row["question"], set(row["answers"])
        assert len(row["answers"]) == 10
        if match := re.match(r"what colour is the (\w+)\?", question):
            [thing] = [t for t in scene.objects.values() if t.shape == match.group(1)]
            assert thing.colour == answer
        elif match := re.match(r"how many (\w+) are there\?", question):
            shape = {plural: shape for shape, plural in PLURALS.items()}[match.group(1)]
            assert scene.count(shape=shape) == int(answer)
        else:
            colour, shape = re.match(r"where is the (\w+) (\w+)\?", question).groups()
            [region] = [r for r, t in scene.objects.items() if (t.colour, t.shape) == (colour, shape)]
            assert POSITIONS[region] == answer
    assert Counter(row["image_classes"][0] for row in records["textvqa"]) == {
        "colour_of": 40,
        "count_shape": 40,
        "where_is": 40,
    }


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_counts_and_answers_are_spread(records, name: str) -> None:
    """No answer is given to more than half of a benchmark's questions, so a constant answer is far from the
    bars."""
    answers = Counter(BENCHMARKS[name].answer(row) for row in records[name])
    assert max(answers.values()) <= len(records[name]) / 2


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_shipped_split_is_what_the_generator_writes(tmp_path, name: str) -> None:
    shipped = BENCHMARKS[name].path(DATA)
    written = write_benchmark(name, tmp_path, 420, SHIPPED_SEEDS[name])
    assert written.relative_to(tmp_path) == shipped.relative_to(DATA)
    ours, theirs = (datasets.Dataset.from_parquet(str(p)) for p in (shipped, written))
    assert len(ours) == 420
    assert ours.to_pandas().drop(columns="image").equals(theirs.to_pandas().drop(columns="image"))
    assert [r["image"]["bytes"] for r in ours.cast_column("image", datasets.Image(decode=False))] == [
        r["image"]["bytes"] for r in theirs.cast_column("image", datasets.Image(decode=False))
    ]


def test_scienceqa_rows_list_their_familys_four_choices(records) -> None:
    """Four distinct choices (chance 25 %), always in the family's order, so the letter names the answer."""
    for record in records["scienceqa"]:
        assert record["choices"] == FAMILIES[record["category"]].choices
        assert len(set(record["choices"])) == 4 and 0 <= record["answer"] < 4
        assert record["grade"].startswith("grade") and record["question"].endswith("?")


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_layout_changes_nothing_else(name: str) -> None:
    plain, described = generate_records(name, 10, seed=8), generate_records(name, 10, seed=8, with_layout=True)
    for record, other in zip(plain, described):
        assert "layout" not in record and isinstance(other.pop("layout"), Scene)
        assert record.pop("image").tobytes() == other.pop("image").tobytes()
        assert record == other


def test_scienceqa_split_loads_like_the_hub_config_and_every_split_is_small() -> None:
    directory = BENCHMARKS["scienceqa"].path(DATA).parents[1]
    test = datasets.load_dataset(
        str(directory), "ScienceQA-IMG", split="test", data_files={"test": "ScienceQA-IMG/test-*"}
    )
    assert test.num_rows == 420 and test[0]["image"].size == (168, 168)
    assert len(set(test["category"])) == 4 and len(set(test["subject"])) == 3
    for spec in BENCHMARKS.values():
        assert spec.path(DATA).stat().st_size < 1_000_000


def test_an_inventory_by_anything_but_shape_or_colour_is_refused(records) -> None:
    scene = records["pope"][0]["layout"]
    with pytest.raises(ValueError, match="by='size': an inventory is by 'shape' or 'colour'"):
        scene.inventory(by="size")
