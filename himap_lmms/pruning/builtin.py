"""Registers the methods shipped with this package, in the order the docs list them (imported once by
:mod:`himap_lmms.pruning`). VisionZip chooses before the language model, so its spec carries its input merge."""

from __future__ import annotations

from dataclasses import replace

from himap_lmms.pruning.config import builtin_specs
from himap_lmms.pruning.registry import register_builtin
from himap_lmms.pruning.visionzip import check_visionzip, visionzip_embeddings

for _spec in builtin_specs():
    if _spec.name == "visionzip":
        _spec = replace(_spec, embed=visionzip_embeddings, check=check_visionzip)
    register_builtin(_spec)
