"""Every invalid pruning argument raises ValueError naming the argument and its allowed range."""

from __future__ import annotations

import re

import pytest

from himap_lmms.pruning import PrunedLlava, PruningConfig, split_pruning_args


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
        ("dart", {"pivots": 0}, r"pivots=0 is out of range: it must be an integer >= 1"),
        ("dart", {"k": 0}, r"k=0 is out of range: it must be an integer >= 1"),
        ("dart", {"ratio": 1.5}, r"ratio=1.5 is out of range: it must be in \(0, 1\]"),
        ("dart", {"k1": 2}, r"k1 is not an argument of method=dart \(it takes k, keep, ratio, pivots\)"),
        ("pyramiddrop", {"ratio": 0}, r"ratio=0.0 is out of range: it must be in \(0, 1\]"),
        ("pyramiddrop", {"stages": 0}, r"stages=0 is out of range: it must be an integer >= 1"),
        ("pyramiddrop", {"layers": "8/8"}, r"layers=8/8 must be strictly increasing"),
        ("pyramiddrop", {"layers": "0/8"}, r"layers=0/8 is out of range: each must be an integer >= 1"),
        ("pyramiddrop", {"layers": "8,16"}, r"layers='8,16' is not a list of layers such as 8/16/24"),
        ("pyramiddrop", {"layers": "8/16", "stages": 2}, r"give either layers .* or stages .*, not both"),
        ("visionzip", {"contextual": 1.0}, r"contextual=1.0 is out of range: it must be in \[0, 1\)"),
        ("visionzip", {"keep": 0}, r"keep=0 is out of range: it must be an integer >= 1"),
        ("visionzip", {"k": 2}, r"k is not an argument of method=visionzip \(it takes keep, ratio, contextual\)"),
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


@pytest.mark.parametrize(("num_layers", "layers"), [(32, [8, 16, 24]), (40, [10, 20, 30]), (12, [3, 6, 9])])
def test_pyramiddrop_default_stages_follow_the_depth(num_layers: int, layers: list[int]) -> None:
    config = PruningConfig.from_args("pyramiddrop")
    assert config.describe() == "pyramiddrop(stages=3,ratio=0.5)"
    bound = config.for_depth(num_layers)
    assert [step.layer for step in bound.steps] == layers
    assert [step.budget(576) for step in bound.steps] == [288, 144, 72]
    assert bound.describe() == f"pyramiddrop(layers={'/'.join(map(str, layers))},ratio=0.5)"


def test_pyramiddrop_layers_are_checked_against_the_model(model64) -> None:
    explicit = PruningConfig.from_args("pyramiddrop", layers="2/5/9", ratio="0.4")
    assert explicit.for_depth(12) == explicit
    assert [step.budget(576) for step in explicit.steps] == [230, 92, 37]
    with pytest.raises(ValueError, match=r"layers=8/16/24 is out of range: the model has 12 decoder layers"):
        PrunedLlava(model64, PruningConfig.from_args("pyramiddrop", layers="8/16/24"))
    with pytest.raises(ValueError, match=r"stages=4 does not fit a model with 3 decoder layers: .* layers 1/1/2/2"):
        PruningConfig.from_args("pyramiddrop", stages=4).for_depth(3)


def test_later_methods_describe_themselves() -> None:
    assert PruningConfig.from_args("dart", keep="64").describe() == "dart(k=2,keep=64,pivots=8)"
    assert PruningConfig.from_args("visionzip").describe() == "visionzip(ratio=0.25,contextual=0.15625)"
    assert PruningConfig.from_args("visionzip", keep=64, contextual="0").steps[0].contextual == 0.0


def test_later_methods_arguments_pass_through_model_args() -> None:
    """What lmms-eval parses from ``method=pyramiddrop,layers=3/6/9,...`` reaches the config, the rest does not."""
    args = {"method": "pyramiddrop", "layers": "3/6/9", "ratio": 0.5, "pretrained": "x", "batch_size": 2}
    pruning, rest = split_pruning_args(args)
    assert rest == {"pretrained": "x", "batch_size": 2}
    assert PruningConfig.from_args(**pruning).describe() == "pyramiddrop(layers=3/6/9,ratio=0.5)"
    pruning, _ = split_pruning_args({"method": "dart", "pivots": 4, "keep": "64"})
    assert PruningConfig.from_args(**pruning).describe() == "dart(k=2,keep=64,pivots=4)"
    pruning, _ = split_pruning_args({"method": "visionzip", "contextual": 0.25})
    assert PruningConfig.from_args(**pruning).describe() == "visionzip(ratio=0.25,contextual=0.25)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"method": "himap", "k1": "20"}, "k1=20 is out of range: the model has 12 decoder layers"),  # not k2=8 < k1
        ({"method": "himap", "k1": 4, "k2": 3}, "k2=3 must be greater than k1=4"),  # both fit: the order is the error
        ({"method": "pyramiddrop", "layers": "3/6/14"}, "layers=3/6/14 is out of range: the model has 12"),
    ],
)
def test_a_typed_layer_is_checked_against_the_depth_before_the_order(args: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        PruningConfig.from_args(num_layers=12, **args)


def test_from_args_with_a_depth_is_the_bound_schedule() -> None:
    assert PruningConfig.from_args("pyramiddrop", num_layers=12) == PruningConfig.pyramiddrop().for_depth(12)
