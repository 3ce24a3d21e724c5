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
    parse_rate,
    parsed,
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
    ],
)
def test_parse_rules(kind, reply, expected) -> None:
    assert parsed(kind, reply) is expected


def test_kinds_come_from_task_names_and_unknown_kinds_are_errors() -> None:
    assert [benchmark_kind(t) for t in ("pope_synth", "scienceqa_img_himap_local", "textvqa_val", "mme")] == [
        "pope",
        "scienceqa",
        "textvqa",
        None,
    ]
    with pytest.raises(ValueError, match=r"no parse rule for benchmark kind 'mme'"):
        parsed("mme", "x")
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
