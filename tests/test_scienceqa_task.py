"""The ScienceQA-IMG task with the paper's prompt: pure functions first, then the task as lmms-eval builds it.

The lmms-eval tests build a small ScienceQA-IMG directory (README.md with ``configs:`` and a parquet file
with an Image feature, the layout of the hub release and of ``data/scienceqa_img_synth``) under a temporary
working directory, because ``scienceqa_img_himap_local`` reads a path relative to the working directory.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import datasets
import pytest
from PIL import Image, ImageFile

from himap_lmms import scienceqa as sqa

REPO = Path(__file__).resolve().parents[1]
TASK_DIR = REPO / "tasks" / "scienceqa_img_himap"
LOCAL_DATA = Path("data") / "scienceqa_img_synth"
POST = "Answer with the option's letter from the given choices directly."


def png_bytes(colour: str = "red", size: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def make_doc(**overrides: Any) -> dict[str, Any]:
    doc = {
        "image": Image.new("RGB", (16, 16), "red"),
        "question": "Which of these states is farthest north?",
        "choices": ["West Virginia", "Louisiana", "Arizona", "Oklahoma"],
        "answer": 0,
        "hint": "",
        "subject": "social science",
        "grade": "grade2",
    }
    doc.update(overrides)
    return doc


FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "question": datasets.Value("string"),
        "choices": datasets.Sequence(datasets.Value("string")),
        "answer": datasets.Value("int8"),
        "hint": datasets.Value("string"),
        "grade": datasets.Value("string"),
        "subject": datasets.Value("string"),
    }
)


def make_dataset(rows: list[dict[str, Any]], features: datasets.Features = FEATURES) -> datasets.Dataset:
    """Rows -> a Dataset with ScienceQA-IMG's types; images given as PNG bytes (or None / junk)."""
    columns = {name: [row[name] for row in rows] for name in features}
    columns["image"] = [None if row["image"] is None else {"bytes": row["image"], "path": None} for row in rows]
    return datasets.Dataset.from_dict(columns, features=features)


def row(**overrides: Any) -> dict[str, Any]:
    """A dataset row (image as bytes) built from :func:`make_doc`."""
    return make_doc(**{"image": png_bytes(), **overrides})


# Six docs whose per-group accuracies are easy to compute by hand (see test_group_accuracy_by_hand).
GROUP_ROWS = [
    # question,     subject,            grade,     gold, model answer
    ("Q1 nat g3", "natural science", "grade3", 0, "A"),  # correct
    ("Q2 nat g8", "natural science", "grade8", 1, "A"),  # wrong
    ("Q3 nat g10", "natural science", "grade10", 1, "B."),  # correct
    ("Q4 soc g5", "social science", "grade5", 2, "C)"),  # correct
    ("Q5 lan g2", "language science", "grade2", 0, " A\n"),  # correct
    ("Q6 lan g12", "language science", "grade12", 0, "A. first"),  # wrong: longer than the letter
]
# Hand computation: overall 4/6; NAT 2/3 (Q1, Q3 of Q1-3); SOC 1/1; LAN 1/2 (Q5);
# grades 1-6: Q1, Q4, Q5 all correct = 3/3; grades 7-12: Q2 wrong, Q3 right, Q6 wrong = 1/3.
EXPECTED = {
    "exact_match": 4 / 6,
    "acc_natural_science": 2 / 3,
    "acc_social_science": 1.0,
    "acc_language_science": 0.5,
    "acc_grade1_6": 1.0,
    "acc_grade7_12": 1 / 3,
}
ANSWERS = {question: answer for question, *_, answer in GROUP_ROWS}


def group_rows() -> list[dict[str, Any]]:
    return [
        row(question=q, subject=s, grade=g, answer=gold, choices=["first", "second", "third"], hint="")
        for q, s, g, gold, _ in GROUP_ROWS
    ]


def write_sqa_dir(root: Path, rows: list[dict[str, Any]]) -> Path:
    """A directory that loads as ``load_dataset(root, "ScienceQA-IMG", split="test")``."""
    (root / "ScienceQA-IMG").mkdir(parents=True, exist_ok=True)
    make_dataset(rows).to_parquet(root / "ScienceQA-IMG" / "test-00000-of-00001.parquet")
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: ScienceQA-IMG\n  data_files:\n  - split: test\n"
        "    path: ScienceQA-IMG/test-*\n---\n"
    )
    return root


# ----------------------------------------------------------------------------------------------------------
# Prompt
# ----------------------------------------------------------------------------------------------------------


def test_prompt_without_hint_is_question_options_instruction() -> None:
    assert sqa.doc_to_text(make_doc()) == (
        "Which of these states is farthest north?\n"
        "A. West Virginia\nB. Louisiana\nC. Arizona\nD. Oklahoma\n"
        "Answer with the option's letter from the given choices directly."
    )


def test_prompt_with_hint_starts_with_context_line() -> None:
    doc = make_doc(hint="Figure: a map.\n\nLook at the map.", choices=["yes", "no"])
    assert sqa.doc_to_text(doc) == (
        "Context: Figure: a map.\n\nLook at the map.\nWhich of these states is farthest north?\nA. yes\nB. no\n" + POST
    )


@pytest.mark.parametrize("hint", ["", "   ", None])
def test_blank_or_missing_hint_gives_no_context(hint: str | None) -> None:
    assert sqa.format_context(hint) == ""
    assert not sqa.doc_to_text(make_doc(hint=hint)).startswith("Context")


def test_prompt_has_no_image_token_or_chat_template() -> None:
    text = sqa.doc_to_text(make_doc(hint="Read."))
    assert "<image>" not in text and "USER:" not in text and "ASSISTANT:" not in text


def test_target_is_the_gold_letter() -> None:
    assert [sqa.doc_to_target(make_doc(answer=i)) for i in range(4)] == ["A", "B", "C", "D"]


def test_visual_is_one_rgb_image() -> None:
    visuals = sqa.doc_to_visual(make_doc(image=Image.new("L", (4, 4))))
    assert len(visuals) == 1 and visuals[0].mode == "RGB"


# ----------------------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("output", ["B", " B", "B\n", "B.", "B)", "  B. "])
def test_exact_match_accepts_the_letter_alone(output: str) -> None:
    assert sqa.is_correct(output, "B")


@pytest.mark.parametrize(
    "output", ["", "A", "b", "(B)", "B:", "BB", "B. Louisiana", "The answer is B", "Answer: B", "B.."]
)
def test_exact_match_rejects_anything_else(output: str) -> None:
    assert not sqa.is_correct(output, "B")


def test_process_results_scores_and_carries_groups() -> None:
    doc = make_doc(answer=1, subject="natural science", grade="grade9")
    scored = sqa.process_results(doc, ["B"])
    assert scored["exact_match"] == 1.0
    assert set(scored) == {"exact_match", *sqa.GROUPS}
    assert scored["acc_grade7_12"] == {"correct": True, "subject": "natural science", "grade": "grade9"}
    assert sqa.process_results(doc, ["B. Louisiana"])["exact_match"] == 0.0


def test_group_accuracy_by_hand() -> None:
    items: dict[str, list] = {}
    for doc in group_rows():
        for metric, value in sqa.process_results(doc, [ANSWERS[doc["question"]]]).items():
            items.setdefault(metric, []).append(value)
    assert sum(items["exact_match"]) / len(items["exact_match"]) == pytest.approx(EXPECTED["exact_match"])
    aggregations = {
        "acc_natural_science": sqa.aggregate_natural_science,
        "acc_social_science": sqa.aggregate_social_science,
        "acc_language_science": sqa.aggregate_language_science,
        "acc_grade1_6": sqa.aggregate_grade1_6,
        "acc_grade7_12": sqa.aggregate_grade7_12,
    }
    for metric, aggregate in aggregations.items():
        assert aggregate(items[metric]) == pytest.approx(EXPECTED[metric]), metric


def test_group_without_docs_has_no_value() -> None:
    items = [sqa.process_results(make_doc(subject="natural science"), ["A"])["acc_social_science"]]
    assert sqa.aggregate_social_science(items) is None
    missing = [sqa.process_results({k: v for k, v in make_doc().items() if k != "grade"}, ["A"])["acc_grade1_6"]]
    assert sqa.aggregate_grade1_6(missing) is None


def test_grade_number() -> None:
    assert [sqa.grade_number(g) for g in ("grade1", "grade12", None)] == [1, 12, None]


# ----------------------------------------------------------------------------------------------------------
# Bad data: every error names the doc and the field
# ----------------------------------------------------------------------------------------------------------


def test_process_docs_returns_good_data_unchanged() -> None:
    dataset = make_dataset(group_rows())
    assert sqa.process_docs(dataset) is dataset


def test_missing_column_is_named() -> None:
    features = datasets.Features({k: v for k, v in FEATURES.items() if k != "hint"})
    with pytest.raises(ValueError, match=r"lacks required column\(s\) 'hint'"):
        sqa.process_docs(make_dataset(group_rows(), features))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"image": None}, r"doc 1 \(question 'Broken\?'\): field 'image' is missing"),
        ({"image": b"not a picture"}, r"doc 1 .*field 'image' is not a readable image"),
        ({"image": png_bytes()[:40]}, r"doc 1 .*field 'image' is not a readable image"),
        ({"answer": 4}, r"doc 1 .*field 'answer'=4 is out of range for 4 choices"),
        ({"answer": -1}, r"doc 1 .*field 'answer'=-1 is out of range"),
        ({"choices": [], "answer": 0}, r"doc 1 .*field 'choices' is empty"),
        ({"question": " "}, r"doc 1 .*field 'question' is empty"),
        ({"grade": "year 3"}, r"doc 1 .*field 'grade'='year 3' is not of the form 'grade<N>'"),
    ],
)
def test_bad_doc_is_named_with_its_field(overrides: dict[str, Any], message: str) -> None:
    rows = [row(), row(**{"question": "Broken?", **overrides})]
    with pytest.raises(ValueError, match=message):
        sqa.process_docs(make_dataset(rows))


def test_image_path_that_does_not_exist_is_named(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere.png")
    with pytest.raises(ValueError, match=r"doc 0 .*field 'image' points to .*nowhere.png"):
        sqa.check_image({"bytes": None, "path": missing}, sqa.doc_label({"question": "Q"}, 0))


def test_image_column_must_be_an_image_feature() -> None:
    features = datasets.Features({**FEATURES, "image": datasets.Value("string")})
    columns = {name: [value] for name, value in make_doc(image="a.png").items()}
    with pytest.raises(ValueError, match="column 'image' must be a datasets Image feature"):
        sqa.process_docs(datasets.Dataset.from_dict(columns, features=features))


@pytest.mark.parametrize("lenient_process", [False, True])
def test_undecodable_image_in_doc_to_visual_is_named(monkeypatch: pytest.MonkeyPatch, lenient_process: bool) -> None:
    # Importing lmms_eval.api.task turns PIL's truncated-image loading on for the whole process; a truncated
    # image must still be an error, not a picture padded with grey, and the process setting must survive.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", lenient_process)
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buffer, format="JPEG")
    data = buffer.getvalue()
    truncated = Image.open(io.BytesIO(data[: len(data) // 2]))  # the header opens, the pixels do not
    with pytest.raises(ValueError, match=r"question 'Which of these.*field 'image' cannot be decoded"):
        sqa.doc_to_visual(make_doc(image=truncated))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is lenient_process


def test_hook_checks_name_the_field_too() -> None:
    with pytest.raises(ValueError, match="field 'answer'=7 is out of range"):
        sqa.doc_to_target(make_doc(answer=7))
    with pytest.raises(ValueError, match="field 'hint' is missing"):
        sqa.doc_to_text({k: v for k, v in make_doc().items() if k != "hint"})
    with pytest.raises(ValueError, match="field 'image' is missing"):
        sqa.doc_to_visual(make_doc(image=None))
    with pytest.raises(ValueError, match="field 'grade'=3 is not of the form"):
        sqa.check_text_fields(make_doc(grade=3))


# ----------------------------------------------------------------------------------------------------------
# The tasks inside lmms-eval
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def task_manager():
    from lmms_eval.tasks import TaskManager

    return TaskManager(include_path=str(REPO / "tasks"))


@pytest.fixture
def local_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding ``data/scienceqa_img_synth`` with the six group docs; private HF cache."""
    write_sqa_dir(tmp_path / LOCAL_DATA, group_rows())
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_task_manager_finds_both_tasks(task_manager) -> None:
    assert {"scienceqa_img_himap", "scienceqa_img_himap_local"} <= set(task_manager.all_tasks)


def test_local_task_builds_from_a_path_relative_to_the_working_directory(task_manager, local_workdir) -> None:
    from lmms_eval.tasks import get_task_dict

    task = get_task_dict(["scienceqa_img_himap_local"], task_manager)["scienceqa_img_himap_local"]
    docs = task.test_docs()
    assert len(docs) == len(GROUP_ROWS)
    assert task.config.dataset_path == "data/scienceqa_img_synth"
    assert task.doc_to_text(docs[0]) == "Q1 nat g3\nA. first\nB. second\nC. third\n" + POST
    assert task.doc_to_target(docs[1]) == "B"
    assert task.doc_to_visual(docs[0])[0].mode == "RGB"
    generation = task.config.generation_kwargs
    assert generation["max_new_tokens"] == 8 and generation["do_sample"] is False
    assert generation["temperature"] == 0 and generation["until"] == []


def test_main_task_reads_lmms_labs_scienceqa_img() -> None:
    from lmms_eval import utils

    config = utils.load_yaml_config(str(TASK_DIR / "scienceqa_img_himap.yaml"), mode="simple")
    assert (config["dataset_path"], config["dataset_name"], config["test_split"]) == (
        "lmms-lab/ScienceQA",
        "ScienceQA-IMG",
        "test",
    )
    local = utils.load_yaml_config(str(TASK_DIR / "scienceqa_img_himap_local.yaml"), mode="simple")
    assert (local["task"], local["dataset_path"]) == ("scienceqa_img_himap_local", "data/scienceqa_img_synth")
    assert set(local) == set(config) | {"dataset_kwargs"}  # everything else comes from the main YAML


def test_own_copy_through_a_user_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README recipe: a YAML including the local task with an absolute dataset_path, found through
    ``--include_path`` from any working directory."""
    from lmms_eval.tasks import TaskManager, get_task_dict

    data = write_sqa_dir(tmp_path / "my_copy", group_rows()[:2])
    my_tasks = tmp_path / "my_tasks"
    my_tasks.mkdir()
    (my_tasks / "my_sqa.yaml").write_text(
        f"include: {TASK_DIR / 'scienceqa_img_himap_local.yaml'}\ntask: my_sqa\ndataset_path: {data}\n"
    )
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.chdir(my_tasks)
    manager = TaskManager(include_path=str(my_tasks), include_defaults=False)
    task = get_task_dict(["my_sqa"], manager)["my_sqa"]
    assert len(task.test_docs()) == 2
    assert task.doc_to_text(task.test_docs()[1]).startswith("Q2 nat g8\nA. first")


def test_regenerated_local_data_is_not_served_from_a_stale_cache(task_manager, local_workdir) -> None:
    """datasets caches a local directory by its README configs; the task's data_files make changes count."""
    from lmms_eval.tasks import get_task_dict

    assert len(get_task_dict(["scienceqa_img_himap_local"], task_manager)["scienceqa_img_himap_local"].test_docs()) == 6
    time.sleep(0.05)  # a distinct modification time even on coarse-grained file systems
    write_sqa_dir(local_workdir / LOCAL_DATA, group_rows()[:3])
    assert len(get_task_dict(["scienceqa_img_himap_local"], task_manager)["scienceqa_img_himap_local"].test_docs()) == 3


def test_bad_local_data_fails_when_the_task_is_built(task_manager, local_workdir) -> None:
    """lmms-eval retries dataset loading (tenacity) and then raises RetryError from our ValueError."""
    from lmms_eval.tasks import get_task_dict

    write_sqa_dir(local_workdir / LOCAL_DATA, [row(), row(question="Out of range?", answer=9)])
    with pytest.raises(Exception) as raised:
        get_task_dict(["scienceqa_img_himap_local"], task_manager)
    error = raised.value if isinstance(raised.value, ValueError) else raised.value.__cause__
    assert isinstance(error, ValueError)
    assert "doc 1 (question 'Out of range?'): field 'answer'=9 is out of range" in str(error)


def test_evaluation_reports_overall_and_group_accuracy(task_manager, local_workdir) -> None:
    """A stub model answering from a table: lmms-eval's results equal the hand computation."""
    from lmms_eval import evaluator
    from lmms_eval.api.model import lmms

    class TableModel(lmms):
        def generate_until(self, requests):
            answers = []
            for request in requests:
                _, _, doc_to_visual, doc_id, task, split = request.args
                doc = self.task_dict[task][split][doc_id]
                assert len(doc_to_visual(doc)) == 1
                answers.append(ANSWERS[doc["question"]])
            return answers

        def loglikelihood(self, requests):
            raise NotImplementedError

        def generate_until_multi_round(self, requests):
            raise NotImplementedError

    results = evaluator.simple_evaluate(
        model=TableModel(), tasks=["scienceqa_img_himap_local"], task_manager=task_manager
    )
    scores = results["results"]["scienceqa_img_himap_local"]
    for metric, expected in EXPECTED.items():
        assert scores[f"{metric},none"] == pytest.approx(expected), metric


@pytest.mark.skipif(not (REPO / LOCAL_DATA / "README.md").exists(), reason="bundled data not present yet")
def test_bundled_data_builds_from_the_repo_root(task_manager, tmp_path, monkeypatch) -> None:
    from lmms_eval.tasks import get_task_dict

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.chdir(REPO)
    task = get_task_dict(["scienceqa_img_himap_local"], task_manager)["scienceqa_img_himap_local"]
    docs = task.test_docs()
    assert len(docs) > 0
    assert task.doc_to_text(docs[0]).endswith("\n" + POST)
