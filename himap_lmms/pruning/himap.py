"""HiMAP: an instruction-guided step at ``k1`` (the attention image tokens receive from the text after the image,
phi_sh), then an intra-visual step at ``k2`` on the survivors (the attention they receive from the image tokens,
phi_dp); docs/method.md. Defaults 2/50 %, 8/12.5 %: the paper's reference setting."""

from __future__ import annotations

from himap_lmms.pruning.config import PruneStep, PruningConfig, coerce_model_arg
from himap_lmms.pruning.fastv import attention_rule
from himap_lmms.pruning.registry import MethodSpec

ARGS = {"k1": 2, "keep1": None, "ratio1": None, "k2": 8, "keep2": None, "ratio2": None}


def himap(
    k1: int = 2,
    keep1: int | None = None,
    ratio1: float | None = None,
    k2: int = 8,
    keep2: int | None = None,
    ratio2: float | None = None,
) -> PruningConfig:
    """HiMAP's two steps; a budget not given as ``keep*`` or ``ratio*`` is the reference setting's share."""
    ratio1 = 0.5 if keep1 is None and ratio1 is None else ratio1
    ratio2 = 0.125 if keep2 is None and ratio2 is None else ratio2
    return PruningConfig(
        "himap",
        (
            PruneStep(k1, "instruction", keep1, ratio1, suffix="1"),
            PruneStep(k2, "visual", keep2, ratio2, suffix="2"),
        ),
    )


SPEC = MethodSpec(
    name="himap",
    args=ARGS,
    build=himap,
    title="HiMAP",
    scores={"instruction": attention_rule, "visual": attention_rule},
    previous_layer_scores=("instruction", "visual"),
    coerce=coerce_model_arg,
)
