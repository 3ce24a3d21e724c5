"""Visual-token pruning for LLaVA on bare transformers models (no lmms-eval import here).

The engine's names are imported on first use (PEP 562), so that :mod:`himap_lmms.pruning.config`, which needs no
torch, can be read by the leaderboard and the sweep's argument checks without paying torch's import.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from himap_lmms.pruning.config import METHODS, PRUNING_ARGUMENTS, PruneStep, PruningConfig, split_pruning_args

_LAZY = {
    "DecodeState": "engine",
    "Generation": "engine",
    "PrefillStats": "engine",
    "PrunedLlava": "engine",
    "PRUNING_LABELS": "scoring",
}

__all__ = [
    "METHODS",
    "PRUNING_ARGUMENTS",
    "PRUNING_LABELS",
    "DecodeState",
    "Generation",
    "PrefillStats",
    "PruneStep",
    "PrunedLlava",
    "PruningConfig",
    "split_pruning_args",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value
