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
        ("dart", {"pivots": 0, "variant": "prior"}, r"pivots=0 is out of range: it must be an integer >= 1"),
        ("dart", {"image_pivots": -1}, r"image_pivots=-1 is out of range: it must be an integer >= 0"),
        ("dart", {"image_pivots": 0, "text_pivots": 0}, r"image_pivots=0 and text_pivots=0: DART needs"),
        ("dart", {"k": 0}, r"k=0 is out of range: it must be an integer >= 1"),
        ("dart", {"ratio": 1.5}, r"ratio=1.5 is out of range: it must be in \(0, 1\]"),
        ("dart", {"k1": 2}, r"k1 is not an argument of method=dart \(it takes k, keep, ratio, image_pivots"),
        ("dart", {"pivots": 8}, r"pivots is not an argument of method=dart,variant=authors \(it takes k, keep"),
        ("dart", {"text_pivots": 4, "variant": "prior"}, r"text_pivots is not an argument of .*variant=prior"),
        ("dart", {"variant": "paper"}, r"variant='paper' is not known: choose one of authors, prior"),
        ("pyramiddrop", {"ratio": 0}, r"ratio=0.0 is out of range: it must be in \(0, 1\]"),
        ("pyramiddrop", {"stages": 0}, r"stages=0 is out of range: it must be an integer >= 1"),
        ("pyramiddrop", {"layers": "8/8"}, r"layers=8/8 must be strictly increasing"),
        ("pyramiddrop", {"layers": "0/8"}, r"layers=0/8 is out of range: each must be an integer >= 1"),
        ("pyramiddrop", {"layers": "8,16"}, r"layers='8,16' is not a list of layers such as 8/16/24"),
        ("pyramiddrop", {"layers": "8/16", "stages": 2}, r"give either layers .* or stages .*, not both"),
        ("pyramiddrop", {"variant": "x"}, r"variant='x' is not known"),
        (
            "visionzip",
            {"contextual": 1.0, "variant": "prior"},
            r"contextual=1.0 is out of range: it must be in \[0, 1\)",
        ),
        ("visionzip", {"contextual": 0.5}, r"contextual=0.5 is out of range: it must be an integer >= 0"),
        ("visionzip", {"dominant": 0}, r"dominant=0 is out of range: it must be an integer >= 1"),
        ("visionzip", {"keep": 0, "variant": "prior"}, r"keep=0 is out of range: it must be an integer >= 1"),
        ("visionzip", {"keep": 64}, r"keep is not an argument of method=visionzip,variant=authors \(it takes dom"),
        ("visionzip", {"k": 2}, r"k is not an argument of method=visionzip \(it takes dominant, contextual, keep"),
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


def test_pyramiddrop_defaults_are_the_authors_llava15_script() -> None:
    """scripts/v1_5/pdrop_eval/*.sh: --layer_list [8,16,24] --image_token_ratio_list [0.5,0.25,0.125], whatever
    the model's depth (the scripts run it on 13B's 40 layers too)."""
    config = PruningConfig.from_args("pyramiddrop")
    assert config.describe() == "pyramiddrop(layers=8/16/24,ratio=0.5)"
    assert config.for_depth(40) == config
    assert [(s.layer, s.budget(576), s.positions) for s in config.steps] == [
        (8, 288, "renumber"),
        (16, 144, "renumber"),
        (24, 72, "renumber"),
    ]
    # int(...) of each stage's share, not round(): 0.027 * 100 = 2.7 keeps 2
    assert [s.budget(100) for s in PruningConfig.from_args("pyramiddrop", ratio=0.3).steps] == [30, 9, 2]
    assert [s.budget(100) for s in PruningConfig.from_args("pyramiddrop", ratio=0.3, variant="prior").steps] == [
        30,
        9,
        3,
    ]


@pytest.mark.parametrize(("num_layers", "layers"), [(32, [8, 16, 24]), (40, [10, 20, 30]), (12, [3, 6, 9])])
@pytest.mark.parametrize("variant", ["authors", "prior"])
def test_pyramiddrop_stages_follow_the_depth(num_layers: int, layers: list[int], variant: str) -> None:
    config = PruningConfig.from_args("pyramiddrop", stages="3", variant=variant)
    label = ",variant=prior" if variant == "prior" else ""
    assert config.describe() == f"pyramiddrop(stages=3,ratio=0.5{label})"
    bound = config.for_depth(num_layers)
    assert [step.layer for step in bound.steps] == layers
    assert [step.budget(576) for step in bound.steps] == [288, 144, 72]
    assert bound.describe() == f"pyramiddrop(layers={'/'.join(map(str, layers))},ratio=0.5{label})"
    if variant == "prior":  # whose default was three stages over the depth
        assert PruningConfig.from_args("pyramiddrop", variant="prior") == config


def test_pyramiddrop_layers_are_checked_against_the_model(model64) -> None:
    explicit = PruningConfig.from_args("pyramiddrop", layers="2/5/9", ratio="0.4")
    assert explicit.for_depth(12) == explicit
    assert [step.budget(576) for step in explicit.steps] == [230, 92, 36]  # int(36.86), as the authors round
    with pytest.raises(ValueError, match=r"layers=8/16/24 is out of range: the model has 12 decoder layers"):
        PrunedLlava(model64, PruningConfig.from_args("pyramiddrop", layers="8/16/24"))
    with pytest.raises(ValueError, match=r"stages=4 does not fit a model with 3 decoder layers: .* layers 1/1/2/2"):
        PruningConfig.from_args("pyramiddrop", stages=4).for_depth(3)


def test_later_methods_describe_themselves() -> None:
    """The authors' defaults and the prior variants have different labels, so a leaderboard never mixes them."""
    assert PruningConfig.from_args("dart").describe() == "dart(k=2,keep=128,image_pivots=4,text_pivots=4)"
    prior = PruningConfig.from_args("dart", keep="64", variant="prior")
    assert prior.describe() == "dart(k=2,keep=64,pivots=8,variant=prior)"
    assert PruningConfig.from_args("visionzip").describe() == "visionzip(dominant=54,contextual=10)"
    prior = PruningConfig.from_args("visionzip", variant="prior")
    assert prior.describe() == "visionzip(ratio=0.25,contextual=0.15625,variant=prior)"
    assert PruningConfig.from_args("visionzip", ratio="0.25").describe() == "visionzip(ratio=0.25)"
    assert PruningConfig.from_args("visionzip", keep=64, contextual="0", variant="prior").steps[0].contextual == 0.0


def test_later_methods_defaults_are_the_authors_llava15_settings() -> None:
    """DART: scripts/v1_5/eval/*.sh (--pruned_layer 2 --max_num_trunction 128, 4 + 4 pivots): 16 tokens per pivot,
    132 image tokens in all; VisionZip: README's visionzip(model, dominant=54, contextual=10)."""
    dart = PruningConfig.from_args("dart").steps[0]
    assert (dart.layer, dart.pivot_quota(576), dart.budget(576), dart.positions) == (2, 16, 132, "original")
    # the ratio is the share kept (1 - the scripts' reduction_ratio): 576 * 0.222 // 8 = 15 per pivot
    assert PruningConfig.from_args("dart", ratio="0.222").steps[0].budget(576) == 4 + 8 * 15
    visionzip = PruningConfig.from_args("visionzip").steps[0]
    assert (visionzip.layer, visionzip.budget(576), visionzip.merged, visionzip.positions) == (0, 64, 10, "renumber")


def test_later_methods_arguments_pass_through_model_args() -> None:
    """What lmms-eval parses from ``method=pyramiddrop,layers=3/6/9,...`` reaches the config, the rest does not."""
    args = {"method": "pyramiddrop", "layers": "3/6/9", "ratio": 0.5, "pretrained": "x", "batch_size": 2}
    pruning, rest = split_pruning_args(args)
    assert rest == {"pretrained": "x", "batch_size": 2}
    assert PruningConfig.from_args(**pruning).describe() == "pyramiddrop(layers=3/6/9,ratio=0.5)"
    pruning, _ = split_pruning_args({"method": "dart", "pivots": 4, "keep": "64", "variant": "prior"})
    assert PruningConfig.from_args(**pruning).describe() == "dart(k=2,keep=64,pivots=4,variant=prior)"
    pruning, _ = split_pruning_args({"method": "dart", "image_pivots": "2", "text_pivots": "6"})
    assert PruningConfig.from_args(**pruning).describe() == "dart(k=2,keep=128,image_pivots=2,text_pivots=6)"
    pruning, _ = split_pruning_args({"method": "visionzip", "dominant": "162", "contextual": "30"})
    assert PruningConfig.from_args(**pruning).describe() == "visionzip(dominant=162,contextual=30)"


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
    bound = PruningConfig.from_args("pyramiddrop", stages=3).for_depth(12)
    assert PruningConfig.from_args("pyramiddrop", stages="3", num_layers=12) == bound
    assert [step.layer for step in bound.steps] == [3, 6, 9]
