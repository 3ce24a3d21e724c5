"""PyramidDrop (Xing et al., arXiv 2410.17247): before each of ``layers``, keep ``int(n * ratio ** s)`` of the
sample's ``n`` image tokens at stage ``s``, ranked by the attention of the last prompt position. Budgets count from
the sample's image tokens, not stage by stage. The ranking's torch code is
:mod:`himap_lmms.pruning.kernels.pyramiddrop`; docs/later_methods.md cites the authors' code for every rule.

``variant=authors`` (the default, their ``pdrop_rank_drop``): that attention is computed with the projections of
the layer about to run, and the kept sequence is renumbered 0..n'-1. ``variant=prior``: the previous layer's
attention (FastV's score), original position ids, budgets rounded to the nearest count.

Without ``layers`` and ``stages`` the authors' 8/16/24 are used (``scripts/v1_5/pdrop_eval/*.sh``: ``--layer_list
[8,16,24]``, ratios halving); ``stages=n`` instead splits the model's depth evenly: 8/16/24 in LLaVA-1.5-7B's
32, 10/20/30 in 13B's 40, 3/6/9 in the testbed's 12 (resolved by
:meth:`~himap_lmms.pruning.config.PruningConfig.for_depth`); ``variant=prior`` defaults to three such stages.
"""

from __future__ import annotations

from himap_lmms.pruning.config import PruneStep, PruningConfig, coerce_model_arg, is_share, layer_list
from himap_lmms.pruning.fastv import attention_rule
from himap_lmms.pruning.registry import MethodSpec, lazy
from himap_lmms.pruning.variants import check_variant, prior_label

PYRAMIDDROP_LAYERS = (8, 16, 24)
_DEFAULT_STAGES = 3


def pyramiddrop(
    layers: tuple[int, ...] | None = None,
    stages: int | None = None,
    ratio: float = 0.5,
    variant: str = "authors",
) -> PruningConfig:
    """PyramidDrop's stages (see the module)."""
    variant = check_variant("pyramiddrop", variant)
    if layers is not None and stages is not None:
        raise ValueError("give either layers (the pruning layers) or stages (spread over the depth), not both")
    if stages is not None and (isinstance(stages, bool) or not isinstance(stages, int) or stages < 1):
        raise ValueError(f"stages={stages!r} is out of range: it must be an integer >= 1")
    if not is_share(ratio):
        raise ValueError(f"ratio={ratio!r} is out of range: it must be in (0, 1]")
    depth = None
    if layers is None and (stages is not None or variant == "prior"):
        stages = _DEFAULT_STAGES if stages is None else stages
        layers, depth = tuple(range(1, stages + 1)), stages + 1
    elif layers is None:
        layers = PYRAMIDDROP_LAYERS
    elif not layers or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in layers):
        raise ValueError(f"layers={layer_list(layers)} is out of range: each must be an integer >= 1")
    elif any(a >= b for a, b in zip(layers, layers[1:])):
        raise ValueError(f"layers={layer_list(layers)} must be strictly increasing")
    if variant == "authors":
        rule = {"score": "next_layer_last_token", "positions": "renumber", "floor": True}
    else:
        rule = {"score": "last_token"}
    steps = tuple(PruneStep(layer, ratio=ratio**s, listed=True, **rule) for s, layer in enumerate(layers, 1))
    return PruningConfig("pyramiddrop", steps, depth)


def label(config: PruningConfig) -> list[str]:
    where = f"stages={len(config.steps)}" if config.depth else f"layers={layer_list([s.layer for s in config.steps])}"
    return [where, f"ratio={config.steps[0].ratio}", *prior_label(config, ("last_token",))]


SPEC = MethodSpec(
    name="pyramiddrop",
    args={"layers": None, "stages": None, "ratio": 0.5, "variant": "authors"},
    build=pyramiddrop,
    title="PyramidDrop",
    scores={
        "next_layer_last_token": lazy("himap_lmms.pruning.kernels.pyramiddrop", "next_layer_last_token_rule"),
        "last_token": attention_rule,
    },
    previous_layer_scores=("next_layer_last_token", "last_token"),
    label=label,
    coerce=coerce_model_arg,
)
