"""Every invalid pruning argument raises ValueError naming the argument and its allowed range."""

from __future__ import annotations

import pytest

from himap_lmms.pruning import PrunedLlava, PruningConfig


@pytest.mark.parametrize(
    ("method", "args", "message"),
    [
        ("magic", {}, r"method='magic' is not known: choose one of none, fastv, himap"),
        ("himap", {"k1": 8, "k2": 8}, r"k2=8 must be greater than k1=8"),
        ("himap", {"k1": 0}, r"k1=0 is out of range: it must be an integer >= 1"),
        ("himap", {"keep1": 72, "keep2": 288}, r"keep2=288 is out of range: it must be <= keep1=72"),
        ("himap", {"keep1": 0, "keep2": 0}, r"keep1=0 is out of range"),
        ("himap", {"ratio1": 0.0}, r"ratio1=0.0 is out of range: it must be in \(0, 1\]"),
        ("himap", {"ratio1": 1.5}, r"ratio1=1.5 is out of range: it must be in \(0, 1\]"),
        ("himap", {"ratio1": 0.25, "ratio2": 0.5}, r"ratio2=0.5 is out of range: it must be <= ratio1=0.25"),
        ("himap", {"keep1": 288, "ratio1": 0.5}, r"give exactly one of keep1 \(a count\) or ratio1"),
        ("fastv", {"ratio": -0.1}, r"ratio=-0.1 is out of range"),
        ("fastv", {"k": "two"}, r"k='two' is not an integer"),
        ("fastv", {"keep": 2.5}, r"keep=2.5 is not an integer"),
        ("fastv", {"k1": 2}, r"k1 is not an argument of method=fastv \(it takes k, keep, ratio\)"),
        ("none", {"keep": 10}, r"keep is not an argument of method=none \(it takes no pruning arguments\)"),
    ],
)
def test_invalid_args_name_the_argument(method: str, args: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PruningConfig.from_args(method, **args)


def test_layers_are_checked_against_the_model(model64) -> None:
    with pytest.raises(ValueError, match=r"k2=12 is out of range: the model has 12 decoder layers"):
        PrunedLlava(model64, PruningConfig.from_args("himap", k1=2, k2=12))
    with pytest.raises(ValueError, match=r"k=40 is out of range"):
        PrunedLlava(model64, PruningConfig.from_args("fastv", k=40))


def test_model_args_strings_are_converted() -> None:
    config = PruningConfig.from_args("himap", k1="2", keep1="288", k2="8", keep2="72")
    assert [(s.layer, s.keep, s.score) for s in config.steps] == [(2, 288, "instruction"), (8, 72, "visual")]
    assert config.describe() == "himap(k1=2,keep1=288,k2=8,keep2=72)"
    assert PruningConfig.from_args("fastv", ratio="0.25").steps[0].budget(576) == 144


def test_defaults_match_the_reference_setting() -> None:
    steps = PruningConfig.from_args("himap").steps
    assert [(s.layer, s.budget(576)) for s in steps] == [(2, 288), (8, 72)]
    assert PruningConfig.from_args("fastv").steps[0].budget(576) == 288


def test_budget_never_exceeds_the_sample() -> None:
    step = PruningConfig.from_args("fastv", keep=300).steps[0]
    assert step.budget(576) == 300
    assert step.budget(100) == 100
    assert step.budget(0) == 0


def test_baselines_validate_like_the_methods_they_mirror() -> None:
    with pytest.raises(ValueError, match=r"k1=0 is out of range: it must be an integer >= 1"):
        PruningConfig.from_args("random", k1=0)
    with pytest.raises(ValueError, match=r"ratio=1.5 is out of range"):
        PruningConfig.from_args("input", ratio=1.5)
    with pytest.raises(ValueError, match=r"k is not an argument of method=input \(it takes keep, ratio\)"):
        PruningConfig.from_args("input", k=2)
    config = PruningConfig.from_args("random", seed="7")
    assert [(s.layer, s.score, s.seed) for s in config.steps] == [(2, "random", 7), (8, "random", 7)]
