"""Pooling, the downsampling baseline: each image's feature grid (each tile's, on LLaVA-NeXT) average-pooled to
the share ``ratio`` of its tokens before the first layer (a quarter by default). ``ratio`` sets the pooled grid's
side, so the count kept is a square per tile (:func:`pooled_side`). The pooling's torch code is
:mod:`himap_lmms.pruning.kernels.pool` (its spec's ``embed``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from himap_lmms.pruning.baselines import before_layer_zero
from himap_lmms.pruning.config import PruneStep, PruningConfig, coerce_model_arg
from himap_lmms.pruning.registry import MethodSpec, lazy


def pooled_side(side: int, ratio: float) -> int:
    """Side of the grid that ``method=pool`` averages a ``side x side`` grid down to for the share ``ratio``
    kept: the nearest whole side, at least 1 (12 of 24 at 0.25, 8 at 1/9)."""
    return max(1, min(side, round(side * math.sqrt(ratio))))


@dataclass(frozen=True)
class PooledStep(PruneStep):
    """Pooling's step before layer 0: it keeps a square of :func:`pooled_side` per grid."""

    def budget(self, num_image_tokens: int) -> int:
        """For one square grid, the pooled square; otherwise (LLaVA-NeXT's tiles) the share ``ratio``."""
        side = math.isqrt(num_image_tokens)
        if side * side == num_image_tokens:
            return pooled_side(side, self.ratio) ** 2
        return super().budget(num_image_tokens)


def pool(ratio: float | None = None) -> PruningConfig:
    """One pooling step before layer 0 (see the module)."""
    return PruningConfig("pool", (PooledStep(0, "pooled", ratio=0.25 if ratio is None else ratio),))


SPEC = MethodSpec(
    name="pool",
    args={"ratio": None},
    build=pool,
    title="pool",
    label=before_layer_zero,
    embed=lazy("himap_lmms.pruning.kernels.pool", "pool_embeddings"),
    check=lazy("himap_lmms.pruning.kernels.pool", "check_pool"),
    coerce=coerce_model_arg,
)
