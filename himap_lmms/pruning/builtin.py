"""Registers the methods shipped with this package, in the order the docs list them (imported once by
:mod:`himap_lmms.pruning`).

VisionZip and pool choose before the language model, so their specs carry their input merge and model check.
Those live with torch code and are imported at their first call, so reading configs imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from importlib import import_module
from typing import Any

from himap_lmms.pruning.config import builtin_specs
from himap_lmms.pruning.registry import register_builtin

# method -> (module, its input merge, its model check)
_BEFORE_THE_LANGUAGE_MODEL = {
    "visionzip": ("himap_lmms.pruning.visionzip", "visionzip_embeddings", "check_visionzip"),
    "pool": ("himap_lmms.pruning.pool", "pool_embeddings", "check_pool"),
}


def _deferred(module: str, name: str) -> Callable[..., Any]:
    """``module.name``, imported at its first call."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(import_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


for _spec in builtin_specs():
    if _spec.name in _BEFORE_THE_LANGUAGE_MODEL:
        _module, _embed, _check = _BEFORE_THE_LANGUAGE_MODEL[_spec.name]
        _spec = replace(_spec, embed=_deferred(_module, _embed), check=_deferred(_module, _check))
    register_builtin(_spec)
