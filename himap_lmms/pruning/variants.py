"""Named variants of one method: DART, PyramidDrop and VisionZip follow their authors' code by default
(``variant=authors``); ``variant=prior`` is this repo's earlier reading of their papers (docs/later_methods.md
lists every difference), kept for comparison with old runs. Their labels differ, so a leaderboard never mixes
them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from himap_lmms.pruning.config import PruningConfig

VARIANTS = ("authors", "prior")


def check_variant(method: str, variant: str, takes: Mapping[str, tuple[str, ...]] | None = None, **given: Any) -> str:
    """``variant`` itself, once known and once every argument ``given`` (not None) is one ``takes[variant]``
    lists (no restriction without ``takes``)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r} is not known: choose one of {', '.join(VARIANTS)}")
    allowed = (takes or {}).get(variant)
    for name, value in given.items():
        if value is not None and allowed is not None and name not in allowed:
            raise ValueError(
                f"{name} is not an argument of method={method},variant={variant} (it takes {', '.join(allowed)})"
            )
    return variant


def prior_label(config: PruningConfig, prior_scores: tuple[str, ...]) -> list[str]:
    """``["variant=prior"]`` when ``config``'s first step is scored by one of ``prior_scores``, else ``[]``."""
    return ["variant=prior"] if config.steps[0].score in prior_scores else []
