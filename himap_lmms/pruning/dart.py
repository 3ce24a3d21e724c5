"""DART (Wen et al., arXiv 2502.11494): before layer ``k``, keep the image tokens least duplicated by a few pivot
tokens. The selection's torch code is :mod:`himap_lmms.pruning.kernels.dart`; docs/later_methods.md cites the
authors' code for every rule.

``variant=authors`` (the default, their ``get_retained_image_token``): the ``image_pivots`` image and
``text_pivots`` text tokens with the largest L1 key norm in layer ``k - 1`` are pivots, and each pivot in turn
keeps its quota (``keep`` split evenly between the pivots) of the image tokens least similar to it; the image
pivots are kept too. Defaults are their LLaVA-1.5 scripts' (``scripts/v1_5/eval/*.sh``: ``--pruned_layer 2
--max_num_trunction 128 --pivot_image_token 4 --pivot_text_token 4``). ``variant=prior``: ``pivots`` image pivots
(largest L2 key norm), the rest ranked once by their nearest pivot, ``keep`` or ``ratio`` in all.
"""

from __future__ import annotations

from dataclasses import dataclass

from himap_lmms.pruning.config import PruneStep, PruningConfig, coerce_model_arg, count
from himap_lmms.pruning.registry import MethodSpec, lazy
from himap_lmms.pruning.variants import check_variant, prior_label

DART_KEEP, DART_IMAGE_PIVOTS, DART_TEXT_PIVOTS = 128, 4, 4
_TAKES = {
    "authors": ("k", "keep", "ratio", "image_pivots", "text_pivots", "variant"),
    "prior": ("k", "keep", "ratio", "pivots", "variant"),
}


@dataclass(frozen=True)
class PivotStep(PruneStep):
    """A DART step: ``pivot_quota`` gives each of ``pivots`` image and ``text_pivots`` text pivots its quota of
    the tokens least similar to it; ``duplication`` (``variant=prior``) ranks by the nearest of ``pivots`` image
    pivots."""

    pivots: int = 0
    text_pivots: int = 0

    def budget(self, num_image_tokens: int) -> int:
        """``pivot_quota``'s is its image pivots plus one quota per pivot, ``floor(keep / pivots)`` each
        (assuming the prompt has its text pivots); ``duplication``'s is the usual count or share."""
        if self.score != "pivot_quota":
            return super().budget(num_image_tokens)
        image_pivots = min(self.pivots, num_image_tokens)
        return image_pivots + min(
            num_image_tokens - image_pivots, self.pivot_quota(num_image_tokens) * (self.pivots + self.text_pivots)
        )

    def pivot_quota(self, num_image_tokens: int) -> int:
        """DART's tokens per pivot: ``math.ceil(budget // pivots)`` in its ``get_retained_image_token``, the
        budget being ``keep`` (its ``max_num_trunction``) or ``ratio`` of the image (its ``1 - reduction_ratio``)."""
        allowance = self.keep if self.keep is not None else num_image_tokens * self.ratio
        return int(allowance // (self.pivots + self.text_pivots))


def dart(
    k: int = 2,
    keep: int | None = None,
    ratio: float | None = None,
    image_pivots: int | None = None,
    text_pivots: int | None = None,
    pivots: int | None = None,
    variant: str = "authors",
) -> PruningConfig:
    """DART's one step (see the module); ``keep`` 128 by default, a quarter of the image for ``variant=prior``."""
    variant = check_variant("dart", variant, _TAKES, image_pivots=image_pivots, text_pivots=text_pivots, pivots=pivots)
    if variant == "prior":
        pivots = count("pivots", 8 if pivots is None else pivots, lowest=1)
        ratio = 0.25 if keep is None and ratio is None else ratio
        return PruningConfig("dart", (PivotStep(k, "duplication", keep, ratio, pivots=pivots),))
    image_pivots = count("image_pivots", DART_IMAGE_PIVOTS if image_pivots is None else image_pivots, lowest=0)
    text_pivots = count("text_pivots", DART_TEXT_PIVOTS if text_pivots is None else text_pivots, lowest=0)
    if image_pivots + text_pivots == 0:
        raise ValueError("image_pivots=0 and text_pivots=0: DART needs at least one pivot")
    keep = DART_KEEP if keep is None and ratio is None else keep
    return PruningConfig(
        "dart", (PivotStep(k, "pivot_quota", keep, ratio, pivots=image_pivots, text_pivots=text_pivots),)
    )


def label(config: PruningConfig) -> list[str]:
    step = config.steps[0]
    if step.score == "pivot_quota":
        pivots = [f"image_pivots={step.pivots}", f"text_pivots={step.text_pivots}"]
    else:
        pivots = [f"pivots={step.pivots}"]
    return [step.as_typed(), *pivots, *prior_label(config, ("duplication",))]


SPEC = MethodSpec(
    name="dart",
    args={
        "k": 2,
        "keep": None,
        "ratio": None,
        "image_pivots": None,
        "text_pivots": None,
        "pivots": None,
        "variant": "authors",
    },
    build=dart,
    title="DART",
    scores={
        "pivot_quota": lazy("himap_lmms.pruning.kernels.dart", "pivot_quota_rule"),
        "duplication": lazy("himap_lmms.pruning.kernels.dart", "duplication_rule"),
    },
    previous_layer_scores=("pivot_quota", "duplication"),
    label=label,
    coerce=coerce_model_arg,
)
