"""Three synthetic benchmarks in the schemas of stock lmms-eval tasks, on scenes whose answers are small.

Real benchmarks cannot be downloaded here, so the demo, the tests and the testbed model use scenes drawn with
PIL (:mod:`~himap_lmms.synthetic.scenes`: every object covers 4 of the 144 image patches, among other objects
and clutter) and questions about them in three formats:

=========  =====================  ==========================  ======================================
benchmark  schema of              lmms-eval task              headline metric
=========  =====================  ==========================  ======================================
scienceqa  ``lmms-lab/ScienceQA``  scienceqa_img_himap_local   exact_match (letter), chance 25 %
pope       ``lmms-lab/POPE``       pope_synth                  pope_f1_score (yes/no), chance 50 %
textvqa    ``lmms-lab/textvqa``    textvqa_synth               exact_match (VQA accuracy)
=========  =====================  ==========================  ======================================

:func:`generate_records` draws them (seeded), :func:`write_benchmark` writes a split as parquet under
``data/`` where the tasks in ``tasks/`` read it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from himap_lmms.synthetic import pope, scienceqa, vqa
from himap_lmms.synthetic.scenes import Scene, draw_scene, make_scene

RecordFn = Callable[[random.Random, Scene, int], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Benchmark:
    """One synthetic benchmark: the task that reads it, where its split lies under ``data/``, how to draw a
    row (without its image) about a scene, and the prompt and answer the task's scoring expects of a row."""

    name: str
    task: str
    file: str  # the split's parquet file, relative to data/
    record: RecordFn
    features: Callable[[], datasets.Features]
    prompt: Callable[[dict[str, Any]], str]  # the user content the task asks (after "<image>\n")
    answer: Callable[[dict[str, Any]], str]  # the reply the task scores as right
    category: Callable[[dict[str, Any]], str]  # the question's group, for per-category accuracy
    headline: str  # the metric the leaderboard shows
    readme_header: str = ""

    def path(self, root: str | Path) -> Path:
        return Path(root) / self.file


def _category_column(row: dict[str, Any]) -> str:
    """The question's group where the schema has a ``category`` column (ScienceQA, POPE)."""
    return row["category"]


# The ScienceQA split keeps the hub repository's layout (config ScienceQA-IMG, named in the README's header), so
# `load_dataset(<dir>, "ScienceQA-IMG")` reads it like `lmms-lab/ScienceQA`; the other two are plain parquet
# files that their tasks name.
_SCIENCEQA_HEADER = (
    "---\nconfigs:\n- config_name: ScienceQA-IMG\n  data_files:\n  - split: test\n"
    "    path: ScienceQA-IMG/test-*.parquet\n---\n\n"
)
BENCHMARKS = {
    "scienceqa": Benchmark(
        "scienceqa", "scienceqa_img_himap_local", "scienceqa_img_synth/ScienceQA-IMG/test-00000-of-00001.parquet",
        scienceqa.record, scienceqa.features, scienceqa.prompt, scienceqa.answer, _category_column, "exact_match",
        _SCIENCEQA_HEADER,
    ),
    "pope": Benchmark(
        "pope", "pope_synth", "pope_synth/test.parquet", pope.record, pope.features, pope.prompt, pope.answer,
        _category_column, "pope_f1_score",
    ),
    "textvqa": Benchmark(
        "textvqa", "textvqa_synth", "textvqa_synth/validation.parquet", vqa.record, vqa.features, vqa.prompt,
        vqa.answer, vqa.category, "exact_match",
    ),
}  # fmt: skip


def benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}: expected one of {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def generate_records(name: str, n: int, seed: int, with_layout: bool = False) -> list[dict[str, Any]]:
    """``n`` rows of benchmark ``name``, the same for the same ``seed``.

    A scene that has no question of the kind row ``i`` asks for is drawn again. ``with_layout`` adds a
    ``layout`` key (the :class:`Scene`), which is not a column of the real dataset: the testbed's training uses
    it to supervise its vision tower. It draws no random numbers, so the other columns do not depend on it.
    """
    make = benchmark(name).record
    rng = random.Random(seed)
    rows = []
    for index in range(n):
        while True:
            scene = make_scene(rng)
            row = make(rng, scene, index)
            if row is not None:
                break
        row["image"] = draw_scene(scene)
        if with_layout:
            row["layout"] = scene
        rows.append(row)
    return rows


def write_benchmark(name: str, root: str | Path, n: int, seed: int) -> Path:
    """Write ``n`` rows of benchmark ``name`` to its parquet file under ``root`` (with a README saying what it
    is) and return the file's path."""
    spec = benchmark(name)
    path = spec.path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = datasets.Dataset.from_list(generate_records(name, n, seed), features=spec.features())
    table.to_parquet(str(path))
    (Path(root) / Path(spec.file).parts[0] / "README.md").write_text(
        f"{spec.readme_header}Synthetic `{name}` questions ({n}, seed {seed}) in the schema of the real dataset, "
        f"read by the lmms-eval task `{spec.task}` in `tasks/`. Written by `scripts/make_sample_data.py`; see "
        "`himap_lmms/synthetic/`. Not the real benchmark: a testbed for visual-token pruning.\n"
    )
    return path


def load_split(name: str, root: str | Path) -> list[dict[str, Any]]:
    """The split of benchmark ``name`` under ``root`` as its task reads it (ScienceQA through the task's checks,
    the others as the parquet file their YAML names); ``ValueError`` naming the file if it is missing or empty."""
    spec = benchmark(name)
    path = spec.path(root)
    if name == "scienceqa":
        from himap_lmms.scienceqa import load_local_split

        return list(load_local_split(path.parents[1]))
    if not path.is_file():
        raise ValueError(f"no {name} split at {str(path)!r}: write it with scripts/make_sample_data.py")
    split = path.stem
    rows = list(datasets.load_dataset("parquet", data_files={split: str(path)}, split=split))
    if not rows:
        raise ValueError(f"the {name} split {str(path)!r} has no rows: there is nothing to evaluate")
    return rows
