"""The reference points every method is read against, in one module because each is a few lines and none reads
the content: ``none`` (the unpruned model), ``random`` (HiMAP's schedule and budgets with seeded random
ranking, to isolate what the scores are worth) and ``input`` (evenly spaced image tokens kept before layer 0, as
a lower input resolution would)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from himap_lmms.pruning.config import PruneStep, PruningConfig, coerce_model_arg
from himap_lmms.pruning.himap import ARGS as HIMAP_ARGS
from himap_lmms.pruning.himap import himap
from himap_lmms.pruning.registry import MethodSpec, lazy


@dataclass(frozen=True)
class SeededStep(PruneStep):
    """A step ranked by values drawn from ``seed``."""

    seed: int = 0


def random(seed: int = 0, **schedule: Any) -> PruningConfig:
    """HiMAP's schedule and budgets (``schedule``: ``k1``, ``keep1``, ... as :func:`himap` takes them) with seeded
    random ranking: what the scores add over chance."""
    steps = himap(**schedule).steps
    return PruningConfig(
        "random", tuple(SeededStep(s.layer, "random", s.keep, s.ratio, suffix=s.suffix, seed=seed) for s in steps)
    )


def input_(keep: int | None = None, ratio: float | None = None) -> PruningConfig:
    """Keep evenly spaced image tokens before the first layer (like a lower input resolution); a quarter by
    default."""
    ratio = 0.25 if keep is None and ratio is None else ratio
    return PruningConfig("input", (PruneStep(0, "uniform", keep, ratio),))


def before_layer_zero(config: PruningConfig) -> list[str]:
    """The label of a one-step method before layer 0: its budget only (there is no layer to name)."""
    return [config.steps[0].budget_as_typed()]


NONE = MethodSpec(name="none", args={}, build=PruningConfig, title="vanilla")
RANDOM = MethodSpec(
    name="random",
    args={**HIMAP_ARGS, "seed": 0},
    build=random,
    title="random",
    scores={"random": lazy("himap_lmms.pruning.scoring", "random_rule")},
    label=lambda config: [*(step.as_typed() for step in config.steps), f"seed={config.steps[0].seed}"],
    coerce=coerce_model_arg,
)
INPUT = MethodSpec(
    name="input",
    args={"keep": None, "ratio": None},
    build=input_,
    title="input",
    scores={"uniform": lazy("himap_lmms.pruning.scoring", "uniform_rule")},
    label=before_layer_zero,
    coerce=coerce_model_arg,
)
