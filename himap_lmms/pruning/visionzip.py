"""VisionZip (Yang et al., arXiv 2412.04467): per image, the tokens the vision tower's class token attends to
most, plus a few merged ones, chosen in the tower before the language model. The selection's torch code is
:mod:`himap_lmms.pruning.kernels.visionzip` (its spec's ``embed``); docs/later_methods.md cites the authors' code
for every rule.

``variant=authors`` (the default, their ``visionzip(model, dominant, contextual)``): ``dominant`` tokens (the
class token and the ``dominant - 1`` patches it attends to most) and ``contextual`` merged ones go into the
language model in a row, numbered on from the text before them; defaults 54 + 10, their README's. Instead of the
counts, ``ratio`` keeps ``round(ratio * P)`` tokens of an image of ``P`` patches, split as the authors' 54 + 10
(so that one preset fits images of any size; 0.1111 of 576 is their 54 + 10). ``variant=prior``: ``keep`` (or
``ratio`` of the image's) tokens, the share ``contextual`` of them merged, at their own slots and positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from himap_lmms.pruning.baselines import before_layer_zero
from himap_lmms.pruning.config import PruneStep, PruningConfig, coerce_model_arg, count
from himap_lmms.pruning.registry import MethodSpec, lazy
from himap_lmms.pruning.variants import check_variant, prior_label
from himap_lmms.values import parse_float

VISIONZIP_DOMINANT, VISIONZIP_CONTEXTUAL = 54, 10
_TAKES = {
    "authors": ("dominant", "contextual", "ratio", "variant"),
    "prior": ("keep", "ratio", "contextual", "variant"),
}


@dataclass(frozen=True)
class VisionZipStep(PruneStep):
    """VisionZip's step before layer 0: ``visionzip`` (``variant=authors``) hands the language model ``keep``
    tokens per image of which ``merged`` are contextual (or, with ``ratio``, the share ``contextual`` of its
    budget); ``class_token`` (``variant=prior``) keeps its budget, the share ``contextual`` of it merged."""

    contextual: float = 0.0
    merged: int = 0

    def counts(self, num_patches: int) -> tuple[int, int]:
        """(dominant, contextual) for an image of ``num_patches``: the counts given, or the budget split at the
        share ``contextual`` (rounded; the class token is always one dominant token)."""
        if self.keep is not None:
            return self.keep - self.merged, self.merged
        total = self.budget(num_patches)
        contextual = round(self.contextual * total)
        return total - contextual, contextual


def visionzip(
    dominant: int | None = None,
    contextual: float | None = None,
    keep: int | None = None,
    ratio: float | None = None,
    variant: str = "authors",
) -> PruningConfig:
    """VisionZip's step (see the module); ``variant=prior`` keeps a quarter by default, 10/64 of it merged."""
    variant = check_variant("visionzip", variant, _TAKES, dominant=dominant, keep=keep, ratio=ratio)
    if variant == "prior":
        contextual = 10 / 64 if contextual is None else contextual
        if not (isinstance(contextual, (int, float)) and not isinstance(contextual, bool) and 0 <= contextual < 1):
            raise ValueError(f"contextual={contextual!r} is out of range: it must be in [0, 1)")
        ratio = 0.25 if keep is None and ratio is None else ratio
        return PruningConfig("visionzip", (VisionZipStep(0, "class_token", keep, ratio, contextual=contextual),))
    if ratio is not None:
        if dominant is not None or contextual is not None:
            raise ValueError("give either ratio or the counts dominant and contextual, not both")
        share = VISIONZIP_CONTEXTUAL / (VISIONZIP_DOMINANT + VISIONZIP_CONTEXTUAL)
        step = VisionZipStep(0, "visionzip", ratio=ratio, contextual=share, positions="renumber")
        return PruningConfig("visionzip", (step,))
    dominant = count("dominant", VISIONZIP_DOMINANT if dominant is None else dominant, lowest=1)
    contextual = count("contextual", VISIONZIP_CONTEXTUAL if contextual is None else contextual, lowest=0)
    step = VisionZipStep(0, "visionzip", keep=dominant + contextual, merged=contextual, positions="renumber")
    return PruningConfig("visionzip", (step,))


def label(config: PruningConfig) -> list[str]:
    step = config.steps[0]
    if step.score == "visionzip" and step.keep is not None:
        return [f"dominant={step.keep - step.merged}", f"contextual={step.merged}"]
    if step.score == "visionzip":  # a ratio, split as the authors' 54 + 10
        return before_layer_zero(config)
    return [*before_layer_zero(config), f"contextual={step.contextual}", *prior_label(config, ("class_token",))]


def _coerce(name: str, value: Any) -> Any:
    """``contextual`` is a count for the authors' variant and a share for the prior one: read as a number, checked
    by :func:`visionzip`."""
    return parse_float(name, value) if name == "contextual" and value is not None else coerce_model_arg(name, value)


SPEC = MethodSpec(
    name="visionzip",
    args={"dominant": None, "contextual": None, "keep": None, "ratio": None, "variant": "authors"},
    build=visionzip,
    title="VisionZip",
    label=label,
    embed=lazy("himap_lmms.pruning.kernels.visionzip", "visionzip_embeddings"),
    check=lazy("himap_lmms.pruning.kernels.visionzip", "check_visionzip"),
    coerce=_coerce,
)
