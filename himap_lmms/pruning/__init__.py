"""Visual-token pruning for LLaVA on bare transformers models (no lmms-eval import here).

The engine's names are imported on first use (PEP 562), so that :mod:`himap_lmms.pruning.config` and the method
registry, which need no torch, can be read by the leaderboard and the sweep's argument checks without paying
torch's import.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from himap_lmms.pruning import builtin  # noqa: F401  (registers the built-in methods)
from himap_lmms.pruning.config import PruneStep, PruningConfig, split_pruning_args
from himap_lmms.pruning.registry import (
    ENTRY_POINT_GROUP,
    MethodSpec,
    ScoreContext,
    all_methods,
    lazy,
    method_spec,
    pruning_arguments,
)

_LAZY = {
    "DecodeState": "engine",
    "Generation": "engine",
    "PrefillStats": "engine",
    "PrunedLlava": "engine",
    "PRUNING_LABELS": "scoring",
}

__all__ = [
    "ENTRY_POINT_GROUP",
    "PRUNING_LABELS",
    "DecodeState",
    "Generation",
    "MethodSpec",
    "PrefillStats",
    "PruneStep",
    "PrunedLlava",
    "PruningConfig",
    "ScoreContext",
    "all_methods",
    "lazy",
    "method_spec",
    "pruning_arguments",
    "split_pruning_args",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value
