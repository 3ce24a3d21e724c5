"""Visual-token pruning for LLaVA on bare transformers models (no lmms-eval import here)."""

from himap_lmms.pruning.config import METHODS, PRUNING_ARGUMENTS, PruneStep, PruningConfig, split_pruning_args
from himap_lmms.pruning.engine import DecodeState, Generation, PrefillStats, PrunedLlava
from himap_lmms.pruning.scoring import PRUNING_LABELS

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
