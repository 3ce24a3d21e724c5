"""Parse rates, agreement, flips and paired intervals on hand-built answers whose values are known."""

from __future__ import annotations

import random

import numpy as np
import pytest

from himap_lmms.comparison import (
    Answer,
    Difference,
    answer_key,
    answers_from_samples,
    benchmark_kind,
    compare,
    format_difference,
    hard_subset,
    headline,
    mean_difference,
    mme_label,
    parse_rate,
    parsed,
    resample_weights,
    rests_on_minority,
    subset_accuracy,
)


def answers(scores: list[float], replies: list[str] | None = None) -> list[Answer]:
    replies = replies or ["A" if s else "B" for s in scores]
    return [Answer(str(i), reply, float(s)) for i, (s, reply) in enumerate(zip(scores, replies))]


@pytest.mark.parametrize(
    ("kind", "reply", "expected"),
    [
        ("pope", " Yes\n", True),
        ("pope", "yes, there is", False),
        ("pope", "", False),
        ("scienceqa", "B.", True),
        ("scienceqa", "B)", True),
        ("scienceqa", "The answer is B", False),
        ("textvqa", "red", True),
        ("textvqa", "  ", False),
        ("mme", "Yes, there is a dog", True),
        ("mme", "n", True),
        ("mme", "There is a dog", False),
        ("gqa", "left", True),
        ("gqa", "", False),
    ],
)
def test_parse_rules(kind, reply, expected) -> None:
    assert parsed(kind, reply) is expected


def test_kinds_come_from_task_names_and_unknown_kinds_are_errors() -> None:
    tasks = ("pope_synth", "scienceqa_img_himap_local", "textvqa_val", "vqav2_val", "gqa", "mme", "mmmu_val")
    assert [benchmark_kind(t) for t in tasks] == ["pope", "scienceqa", "textvqa", "vqav2", "gqa", "mme", None]
    with pytest.raises(ValueError, match=r"no parse rule for benchmark kind 'mmmu'"):
        parsed("mmmu", "x")
    assert parse_rate(None, answers([1.0])) is None


def test_pope_f1_equals_lmms_evals_and_a_near_silent_row_is_flagged() -> None:
    """The study's VisionZip 12.5 % row: one right "yes" among replies the scorer cannot read scores F1 1.0."""
    from lmms_eval.tasks.pope.utils import pope_aggregate_f1_score

    rng = random.Random(3)
    pool = ["yes", "no", "Yes", "maybe", ""]
    rows = [Answer(str(i), rng.choice(pool), 0.0, rng.choice(["yes", "no"])) for i in range(200)]
    stock = [{"prediction": a.reply.lower().strip(), "ground_truth": a.truth} for a in rows]
    assert headline("pope", rows) == pytest.approx(pope_aggregate_f1_score(stock), abs=1e-12)

    silent = [Answer("0", "yes", 1.0, "yes")] + [Answer(str(i), "the", 0.0, "yes") for i in range(1, 140)]
    assert headline("pope", silent) == 1.0
    rate = parse_rate("pope", silent)
    assert rate == pytest.approx(1 / 140) and rests_on_minority(rate)
    assert not rests_on_minority(0.5) and not rests_on_minority(None)


def test_agreement_and_flips_are_counted_on_the_scored_answer() -> None:
    reference = answers([1, 1, 1, 0, 0, 1], ["A", "B.", "C", "D", "A", "B"])
    row = answers([1, 1, 0, 1, 0, 1], ["A.", "B", "D", "C", "B", "B"])
    result = compare("scienceqa", row, reference)
    assert result.n == 6
    assert result.agreement == pytest.approx(3 / 6)  # docs 0, 1 (same letter, other spelling) and 5
    assert (result.right_to_wrong, result.wrong_to_right) == (1, 1)
    assert result.difference.value == 0.0
    assert answer_key("pope", " Yes.") == answer_key("pope", "yes")


def test_identical_runs_have_a_zero_width_interval_and_a_sure_gain_a_sure_one() -> None:
    reference = answers([1, 0, 1, 0, 1, 1, 0, 1])
    same = compare("scienceqa", reference, reference)
    assert (same.agreement, same.difference) == (1.0, Difference(0.0, 0.0, 0.0))
    better = compare("scienceqa", answers([1] * 8), answers([0] * 8))
    assert better.difference == Difference(1.0, 1.0, 1.0) and better.difference.outside_noise


def test_one_flip_in_twenty_is_inside_noise_with_known_bounds() -> None:
    """The difference is (times the flipped doc is drawn) / 20, a Binomial(20, 1/20) / 20: its 2.5 % quantile is
    0 (P(0) = 0.36) and its 97.5 % quantile 3/20 (P(<= 2) = 0.92, P(<= 3) = 0.98)."""
    result = compare("scienceqa", answers([1] * 20), answers([1] * 19 + [0]))
    assert result.difference.value == pytest.approx(0.05)
    assert (result.difference.low, result.difference.high) == pytest.approx((0.0, 0.15))
    assert not result.difference.outside_noise
    assert format_difference(result.difference) == "+5.0 [+0.0, +15.0]"


def test_the_bootstrap_is_deterministic_for_a_seed() -> None:
    rng = random.Random(0)
    reference = answers([rng.random() < 0.8 for _ in range(300)])
    row = answers([rng.random() < 0.7 for _ in range(300)])
    first, again, other = (compare("scienceqa", row, reference, seed=s) for s in (7, 7, 8))
    assert np.array_equal(first.resampled, again.resampled) and first.difference == again.difference
    assert not np.array_equal(first.resampled, other.resampled)


def test_the_mean_over_benchmarks_combines_their_resamples() -> None:
    a = compare("scienceqa", answers([1] * 10), answers([0] * 10))
    b = compare("scienceqa", answers([0] * 10), answers([0] * 10))
    assert mean_difference([a, b]) == Difference(0.5, 0.5, 0.5)


def test_runs_on_different_documents_are_not_paired() -> None:
    with pytest.raises(ValueError, match=r"the runs answered different documents \(e.g. '3'\)"):
        compare("scienceqa", answers([1, 1, 1, 1]), answers([1, 1, 1]))


def test_the_hard_subset_is_what_vanilla_gets_and_pooling_loses() -> None:
    vanilla = answers([1, 1, 1, 0, 1])
    pool = answers([1, 0, 0, 0, 1])
    hard = hard_subset(vanilla, pool)
    assert hard == {"1", "2"}
    assert subset_accuracy(answers([0, 1, 1, 1, 1]), hard) == 1.0
    assert subset_accuracy(answers([0, 1, 0, 1, 1]), hard) == 0.5
    assert subset_accuracy(vanilla, frozenset()) is None


def test_answers_are_read_from_lmms_eval_samples() -> None:
    lines = [
        {"doc_id": 0, "target": "yes", "filtered_resps": ["yes"], "pope_f1_score": {"score": 1.0}},
        {"doc_id": 1, "target": "no", "filtered_resps": "Yes", "pope_f1_score": {"score": 0.0}},
    ]
    assert answers_from_samples("pope", "pope_f1_score", lines) == [
        Answer("0", "yes", 1.0, "yes"),
        Answer("1", "Yes", 0.0, "no"),
    ]
    with pytest.raises(ValueError, match=r"document 0 has no numeric 'exact_match' in its sample"):
        answers_from_samples("scienceqa", "exact_match", lines[:1])


def mme_answers(seed: int, right: float = 0.6, images: int = 6) -> list[Answer]:
    """Two questions per image, three categories, each reply scored 1 or 0 with probability ``right``."""
    rng = random.Random(seed)
    rows = []
    for category in ("color", "count", "OCR"):
        for image in range(images):
            for question in range(2):
                score = float(rng.random() < right)
                doc = f"{category}-{image}-{question}"
                rows.append(Answer(doc, "Yes" if score else "No", score, group=f"{image}.png", category=category))
    return rows


def test_mme_reads_replies_as_lmms_evals_scorer_does() -> None:
    from lmms_eval.tasks.mme.utils import parse_pred_ans

    replies = ["Yes", "no.", "y", "N", "x", "Yes, it is", "Nope", "not sure", "I think yes", "", " NO ", "know"]
    assert [mme_label(reply) for reply in replies] == [parse_pred_ans(reply) for reply in replies]
    assert answer_key("mme", "Yes, it is") == answer_key("mme", "y") == "yes"


def test_mme_score_equals_lmms_evals_aggregate() -> None:
    from lmms_eval.tasks.mme.utils import mme_aggregate_results

    rows = mme_answers(seed=1)
    stock = [{"question_id": a.group, "category": a.category, "score": a.score} for a in rows]
    assert headline("mme", rows) == pytest.approx(mme_aggregate_results(stock), abs=1e-9)
    with pytest.raises(ValueError, match=r"image '0.png' of 'color' has 1"):
        headline("mme", rows[1:])


def test_mme_resamples_keep_pairs_whole_and_categories_full() -> None:
    rows = mme_answers(seed=2)
    weights = resample_weights(len(rows), units=[(a.category, a.group) for a in rows])
    assert np.array_equal(weights[:, 0::2], weights[:, 1::2])  # both questions of an image drawn together
    for first in range(0, len(rows), 12):  # each category's 6 images drawn 6 times in every resample
        assert (weights[:, first : first + 12].sum(axis=1) == 12).all()
    better = compare("mme", mme_answers(seed=3, right=0.9), rows)
    again = compare("mme", mme_answers(seed=3, right=0.9), rows)
    assert np.array_equal(better.resampled, again.resampled)
    assert better.difference.low <= better.difference.value <= better.difference.high
    assert compare("mme", rows, rows).difference == Difference(0.0, 0.0, 0.0)


def test_the_mean_over_benchmarks_leaves_out_mmes_points() -> None:
    sqa = compare("scienceqa", answers([1] * 10), answers([0] * 10))
    mme = compare("mme", mme_answers(seed=3, right=0.9), mme_answers(seed=4))
    assert mean_difference([sqa, mme]) == mean_difference([sqa]) == Difference(1.0, 1.0, 1.0)
    assert mean_difference([mme]) is None


def test_mme_answers_are_read_from_the_samples_of_their_score() -> None:
    record = {"question_id": "code/1.png", "category": "code_reasoning", "score": 1.0}
    lines = [
        {
            "doc_id": 0,
            "target": "Yes",
            "filtered_resps": ["Yes"],
            "mme_perception_score": {**record, "category": "OCR"},
        },
        {"doc_id": 1, "target": "No", "filtered_resps": ["Yes"], "mme_cognition_score": record},
    ]
    (answer,) = answers_from_samples("mme", "mme_perception_score", lines)
    assert answer == Answer("0", "Yes", 1.0, "Yes", group="code/1.png", category="OCR")
