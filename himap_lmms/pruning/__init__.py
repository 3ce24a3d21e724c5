"""Visual-token pruning for LLaVA on bare transformers models (no lmms-eval import here)."""

from himap_lmms.pruning import builtin  # noqa: F401  (registers the built-in methods)
from himap_lmms.pruning.config import METHODS, PruneStep, PruningConfig, split_pruning_args
from himap_lmms.pruning.engine import DecodeState, Generation, PrefillStats, PrunedLlava
from himap_lmms.pruning.registry import (
    ENTRY_POINT_GROUP,
    MethodSpec,
    ScoreContext,
    all_methods,
    method_spec,
    pruning_arguments,
)
from himap_lmms.pruning.scoring import PRUNING_LABELS

__all__ = [
    "ENTRY_POINT_GROUP",
    "METHODS",
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
    "method_spec",
    "pruning_arguments",
    "split_pruning_args",
]
