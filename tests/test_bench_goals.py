"""The cost benchmark's verdict on a method against its equal-FLOPs FastV: the median's interval, not one number.

On a shared machine rounds vary by more than the 5 % the goal asks about, so the verdict is PASS only when the
interval of the median ratio lies under the limit, MISS when it lies above, and UNSURE in between.
"""

from __future__ import annotations

import math
import random

import pytest

from himap_lmms.bench.goals import GoalSet, check_goals, verdict
from himap_lmms.bench.summary import median_interval, paired_ratio

GOALS = GoalSet(name="test", prefill_efficiency=0.0, overhead=1.0, end_to_end=0.0, equal_flops_prefill=0.05)


def _coverage(n: int, k: int) -> float:
    """P(the k-th smallest <= median <= the k-th largest) for n independent rounds: 1 - 2 P(Binomial(n, 1/2) < k)."""
    return 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2**n


@pytest.mark.parametrize("n", range(1, 41))
def test_median_interval_is_the_narrowest_with_95_percent_coverage(n: int) -> None:
    values = random.Random(n).sample(range(1000), n)
    interval = median_interval([float(v) for v in values])
    ordered = sorted(values)
    if n < 6:  # even the range covers the median with less than 95 %
        assert interval is None and _coverage(n, 1) < 0.95
        return
    k = ordered.index(interval[0]) + 1
    assert interval == (ordered[k - 1], ordered[n - k])
    assert _coverage(n, k) >= 0.95 > _coverage(n, k + 1)


def test_known_intervals() -> None:
    assert median_interval([float(v) for v in range(1, 8)]) == (1.0, 7.0)  # 7 rounds: the range
    assert median_interval([float(v) for v in range(1, 26)]) == (8.0, 18.0)
    assert median_interval([float(v) for v in range(1, 26)], level=0.5) == (11.0, 15.0)


def _goal(ratios: list[float], flops: tuple[float, float] = (0.40, 0.40)) -> dict:
    pair = {
        "partner": "fastv=m",
        "flops_ratio": flops[0],
        "flops_ratio_partner": flops[1],
        "prefill_ratio": paired_ratio(ratios),
        "overhead_share": 0.01,
        "overhead_share_partner": 0.002,
    }
    results = {"settings": {"new_tokens": 8}, "batches": {"1": {"m": {"vs_equal_flops_fastv": pair}}}}
    (goal,) = check_goals(results, GOALS)
    return goal


@pytest.mark.parametrize(
    ("ratios", "expected"),
    [
        ([1.00, 1.01, 1.02, 1.03, 1.04, 1.02, 1.01, 1.00, 1.03], "PASS"),
        ([0.90, 0.92, 0.93, 0.91, 0.94, 0.92, 0.93], "PASS"),  # faster than FastV is no overhead
        ([1.10, 1.12, 1.15, 1.11, 1.20, 1.13, 1.14], "MISS"),
        ([1.01, 1.15, 1.09, 1.08, 1.10, 1.06, 1.12], "UNSURE"),  # median 1.09, but the range reaches 1.01
        ([1.00, 1.00, 1.00], "UNSURE"),  # too few rounds for any interval
    ],
)
def test_verdict_follows_the_interval(ratios: list[float], expected: str) -> None:
    goal = _goal(ratios)
    assert verdict(goal) == expected
    assert f"{len(ratios)} rounds" in goal["value"]
    assert goal["goal"] == "batch 1: m's prefill at most 5% slower than FastV's at the same FLOPs ratio (fastv=m)"


def test_unsure_says_why() -> None:
    assert "too few rounds for a 95% interval, range 1.000-1.000" in _goal([1.0, 1.0, 1.0])["value"]
    assert "95% interval 1.010-1.150" in _goal([1.01, 1.15, 1.09, 1.08, 1.10, 1.06, 1.12])["value"]


def test_a_partner_at_other_flops_misses_however_close_the_times() -> None:
    assert verdict(_goal([1.0] * 9, flops=(0.40, 0.42))) == "MISS"
