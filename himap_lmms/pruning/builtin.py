"""Registers the methods shipped with this package, in the order the docs list them (imported once by
:mod:`himap_lmms.pruning`).

Each is one module declaring its :class:`~himap_lmms.pruning.registry.MethodSpec`, exactly as a user's method is
(docs/adding_a_method.md); the only difference is where it is listed: here rather than under the entry-point
group ``himap_lmms.methods``. The modules import no torch (their rules name their torch code lazily), so reading
configs stays light.
"""

from __future__ import annotations

from himap_lmms.pruning import baselines, dart, fastv, himap, pool, pyramiddrop, visionzip
from himap_lmms.pruning.registry import register_builtin

for _spec in (
    baselines.NONE,
    fastv.SPEC,
    himap.SPEC,
    baselines.RANDOM,
    baselines.INPUT,
    dart.SPEC,
    pyramiddrop.SPEC,
    visionzip.SPEC,
    pool.SPEC,
):
    register_builtin(_spec)
