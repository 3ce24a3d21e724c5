"""The synthetic ScienceQA-IMG-schema generator and the dataset the repo ships."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import datasets
import numpy as np

from himap_lmms.synthetic_data import COLOURS, CORNERS, FAMILIES, generate_records, write_dataset

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "data" / "scienceqa_img_synth"
COLUMNS = {"image", "question", "choices", "answer", "hint", "task", "grade", "subject", "topic", "category"}


def test_same_seed_same_records_other_seed_other_records() -> None:
    first, again, other = generate_records(20, seed=3), generate_records(20, seed=3), generate_records(20, seed=4)
    strip = lambda rows: [({k: v for k, v in r.items() if k != "image"}, r["image"].tobytes()) for r in rows]  # noqa: E731
    assert strip(first) == strip(again)
    assert strip(first) != strip(other)


def test_records_follow_the_schema_and_list_their_familys_four_choices() -> None:
    """Four distinct choices (chance 25 %), always in the family's order, so the letter names the answer."""
    for record in generate_records(200, seed=0):
        assert COLUMNS <= set(record)
        assert isinstance(record["question"], str) and record["question"].endswith("?")
        assert record["choices"] == FAMILIES[record["category"]].choices
        assert len(set(record["choices"])) == 4 and 0 <= record["answer"] < 4
        assert record["grade"].startswith("grade")
        pixels = np.asarray(record["image"])
        assert pixels.shape == (168, 168, 3) and pixels.std() > 10


def test_corner_questions_name_a_corner_whose_pixels_hold_the_asked_colour() -> None:
    """The answer really is in the named region: that corner cell shows the colour the question names."""
    cells = {name: cell for cell, name in CORNERS.items()}
    checked = 0
    for record in generate_records(300, seed=5):
        if record["category"] != "corner_of":
            continue
        colour = record["question"].split()[4]  # "Which corner is the {colour} {shape} in?"
        row, column = divmod(cells[record["choices"][record["answer"]]], 3)
        patch = np.asarray(record["image"])[row * 56 + 20 : row * 56 + 36, column * 56 + 20 : column * 56 + 36]
        assert (patch.reshape(-1, 3) == COLOURS[colour]).all(axis=-1).mean() > 0.3
        checked += 1
    assert checked > 30


def test_no_answer_is_a_safe_guess() -> None:
    """Counts are spread over 0-3 and no family has a dominant answer, so a blank canvas can't guess well."""
    records = generate_records(800, seed=6)
    for family in {r["category"] for r in records}:
        answers = Counter(r["choices"][r["answer"]] for r in records if r["category"] == family)
        assert max(answers.values()) / sum(answers.values()) < 0.4, (family, answers)
    counts = Counter(r["choices"][r["answer"]] for r in records if r["category"] == "count_colour")
    assert set(counts) == {"0", "1", "2", "3"}


def test_layout_describes_the_drawn_scene_and_changes_nothing_else() -> None:
    plain, described = generate_records(30, seed=8), generate_records(30, seed=8, with_layout=True)
    for record, other in zip(plain, described):
        assert "layout" not in record
        assert record["question"] == other["question"] and record["image"].tobytes() == other["image"].tobytes()
        pixels = np.asarray(other["image"]).astype(int)
        for cell, (colour, _) in other["layout"].items():
            row, column = divmod(cell, 3)
            centre = pixels[row * 56 + 34, column * 56 + 28]  # inside every shape, below a triangle's apex
            assert tuple(centre) == COLOURS[colour]


def test_written_directory_loads_like_the_hub_config(tmp_path: Path) -> None:
    path = write_dataset(tmp_path / "sqa", {"test": 12, "validation": 5}, seed=9)
    test = datasets.load_dataset(str(path), "ScienceQA-IMG", split="test")
    assert test.num_rows == 12 and COLUMNS <= set(test.column_names)
    assert test[0]["image"].size == (168, 168)
    assert datasets.load_dataset(str(path), "ScienceQA-IMG", split="validation").num_rows == 5


def test_shipped_split_is_small_and_complete() -> None:
    size = sum(f.stat().st_size for f in SHIPPED.rglob("*") if f.is_file())
    assert size < 2_000_000
    test = datasets.load_dataset(
        str(SHIPPED), "ScienceQA-IMG", split="test", data_files={"test": "ScienceQA-IMG/test-*"}
    )
    assert test.num_rows >= 300
    assert len(set(test["category"])) == 4 and len(set(test["subject"])) == 3
