"""FastV (Chen et al., arXiv 2403.06764): one step before layer ``k`` keeping the image tokens the last prompt
token attends to most in layer ``k - 1`` (defaults K=2, R=50 %, the paper's reference setting)."""

from __future__ import annotations

from himap_lmms.pruning.config import PruneStep, PruningConfig, coerce_model_arg
from himap_lmms.pruning.registry import MethodSpec, lazy

# The rule HiMAP's and FastV's attention scores share; PyramidDrop's ``variant=prior`` ranks with it too.
attention_rule = lazy("himap_lmms.pruning.scoring", "attention_rule")


def fastv(k: int = 2, keep: int | None = None, ratio: float | None = None) -> PruningConfig:
    """One step at layer ``k``, ranked by the attention of the last prompt token (half the image by default)."""
    ratio = 0.5 if keep is None and ratio is None else ratio
    return PruningConfig("fastv", (PruneStep(k, "last_token", keep, ratio),))


SPEC = MethodSpec(
    name="fastv",
    args={"k": 2, "keep": None, "ratio": None},
    build=fastv,
    title="FastV",
    scores={"last_token": attention_rule},
    previous_layer_scores=("last_token",),
    coerce=coerce_model_arg,
)
