"""What to prune, where, and how many image tokens to keep.

A pruning method is a schedule of :class:`PruneStep`: before decoder layer ``layer`` runs, image tokens are
ranked by a score read from the attention of layer ``layer - 1`` and only the top ones go on. ``none`` has no
step, FastV one, HiMAP two. Two baselines for ablations rank without attention: ``random`` (HiMAP's schedule
with seeded random ranking, to isolate what the scores are worth) and ``input`` (evenly spaced image tokens
kept before layer 0, as a lower input resolution would). Budgets are given either as a count (``keep``) or as
a fraction of the sample's own image tokens (``ratio``, the share *kept*, in (0, 1]); a ratio follows the
sample, so it also fits models whose image-token count varies (LLaVA-NeXT).

Every check that can be made without the model is made on construction; the checks against the model's
depth are made by :meth:`PruningConfig.check_num_layers` when the config is bound to a model. Errors are
``ValueError`` naming the argument as the user spelled it in ``model_args``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from himap_lmms.values import parse_float, parse_int

Score = Literal["instruction", "visual", "last_token", "random", "uniform"]
ATTENTION_SCORES = ("instruction", "visual", "last_token")
METHODS = ("none", "fastv", "himap", "random", "input")

# The model_args each method accepts, with their defaults (docs/method.md: FastV K=2, R=50 %; HiMAP 2/50 %, 8/12.5 %).
_METHOD_ARGS: dict[str, dict[str, Any]] = {
    "none": {},
    "fastv": {"k": 2, "keep": None, "ratio": None},
    "himap": {"k1": 2, "keep1": None, "ratio1": None, "k2": 8, "keep2": None, "ratio2": None},
    "random": {"k1": 2, "keep1": None, "ratio1": None, "k2": 8, "keep2": None, "ratio2": None, "seed": 0},
    "input": {"keep": None, "ratio": None},
}
_DEFAULT_RATIO = {"fastv": {"": 0.5}, "himap": {"1": 0.5, "2": 0.125}, "input": {"": 0.25}}


@dataclass(frozen=True)
class PruneStep:
    """Prune image tokens before decoder layer ``layer``, ranked by ``score`` (from layer ``layer - 1``'s
    attention for the attention scores; ``random`` draws with ``seed``, ``uniform`` spreads the kept tokens).

    ``suffix`` is how the step's arguments are spelled in model_args (``k1``/``keep1``/``ratio1`` for the
    first HiMAP step, ``k``/``keep``/``ratio`` for FastV), so that errors name what the user typed.
    """

    layer: int
    score: Score
    keep: int | None = None
    ratio: float | None = None
    suffix: str = ""
    seed: int = 0

    def __post_init__(self) -> None:
        k, keep, ratio = (f"{name}{self.suffix}" for name in ("k", "keep", "ratio"))
        if (self.keep is None) == (self.ratio is None):
            raise ValueError(f"give exactly one of {keep} (a count) or {ratio} (a fraction kept)")
        lowest = 1 if self.score in ATTENTION_SCORES else 0  # an attention score reads the layer before
        if isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < lowest:
            raise ValueError(f"{k}={self.layer!r} is out of range: it must be an integer >= {lowest}")
        if self.keep is not None and (isinstance(self.keep, bool) or not isinstance(self.keep, int) or self.keep < 1):
            raise ValueError(f"{keep}={self.keep!r} is out of range: it must be an integer >= 1")
        if self.ratio is not None and not (
            isinstance(self.ratio, (int, float)) and not isinstance(self.ratio, bool) and 0 < self.ratio <= 1
        ):
            raise ValueError(f"{ratio}={self.ratio!r} is out of range: it must be in (0, 1]")

    def budget(self, num_image_tokens: int) -> int:
        """Image tokens this step keeps for a sample that came in with ``num_image_tokens``.

        A count larger than the sample's image tokens keeps them all (the sample is then not pruned
        by this step); a ratio rounds to the nearest count but keeps at least one token.
        """
        if self.keep is not None:
            return min(self.keep, num_image_tokens)
        return min(num_image_tokens, max(1, round(self.ratio * num_image_tokens)))


@dataclass(frozen=True)
class PruningConfig:
    """A named pruning schedule. Build it with :meth:`none`, :meth:`fastv`, :meth:`himap` or :meth:`from_args`."""

    method: str = "none"
    steps: tuple[PruneStep, ...] = ()

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} is not known: choose one of {', '.join(METHODS)}")
        for first, second in zip(self.steps, self.steps[1:]):
            k1, k2 = f"k{first.suffix}", f"k{second.suffix}"
            if not first.layer < second.layer:
                raise ValueError(f"{k2}={second.layer} must be greater than {k1}={first.layer}")
            if first.keep is not None and second.keep is not None and second.keep > first.keep:
                raise ValueError(
                    f"keep{second.suffix}={second.keep} is out of range: it must be <= keep{first.suffix}={first.keep}"
                )
            if first.ratio is not None and second.ratio is not None and second.ratio > first.ratio:
                raise ValueError(
                    f"ratio{second.suffix}={second.ratio} is out of range: it must be <= ratio{first.suffix}"
                    f"={first.ratio}"
                )

    @classmethod
    def none(cls) -> PruningConfig:
        return cls("none")

    @classmethod
    def fastv(cls, k: int = 2, keep: int | None = None, ratio: float | None = None) -> PruningConfig:
        """FastV: one step at layer ``k``, ranked by the attention of the last prompt token."""
        ratio = _DEFAULT_RATIO["fastv"][""] if keep is None and ratio is None else ratio
        return cls("fastv", (PruneStep(k, "last_token", keep, ratio),))

    @classmethod
    def himap(
        cls,
        k1: int = 2,
        keep1: int | None = None,
        ratio1: float | None = None,
        k2: int = 8,
        keep2: int | None = None,
        ratio2: float | None = None,
    ) -> PruningConfig:
        """HiMAP: instruction-guided step at ``k1``, then an intra-visual step at ``k2`` on the survivors."""
        ratio1 = _DEFAULT_RATIO["himap"]["1"] if keep1 is None and ratio1 is None else ratio1
        ratio2 = _DEFAULT_RATIO["himap"]["2"] if keep2 is None and ratio2 is None else ratio2
        return cls(
            "himap",
            (
                PruneStep(k1, "instruction", keep1, ratio1, suffix="1"),
                PruneStep(k2, "visual", keep2, ratio2, suffix="2"),
            ),
        )

    @classmethod
    def random(
        cls,
        k1: int = 2,
        keep1: int | None = None,
        ratio1: float | None = None,
        k2: int = 8,
        keep2: int | None = None,
        ratio2: float | None = None,
        seed: int = 0,
    ) -> PruningConfig:
        """HiMAP's schedule and budgets with seeded random ranking: what the scores add over chance."""
        steps = cls.himap(k1, keep1, ratio1, k2, keep2, ratio2).steps
        return cls("random", tuple(replace(step, score="random", seed=seed) for step in steps))

    @classmethod
    def input(cls, keep: int | None = None, ratio: float | None = None) -> PruningConfig:
        """Keep evenly spaced image tokens before the first layer (like a lower input resolution)."""
        ratio = _DEFAULT_RATIO["input"][""] if keep is None and ratio is None else ratio
        return cls("input", (PruneStep(0, "uniform", keep, ratio),))

    @classmethod
    def from_args(cls, method: str = "none", **args: Any) -> PruningConfig:
        """Build from model_args-style values (strings such as ``"288"`` are converted).

        An argument that belongs to another method (``k1`` with ``method=fastv``) is an error rather than
        silently ignored, since it almost always means the run is not the one the user wanted.
        """
        if method not in _METHOD_ARGS:
            raise ValueError(f"method={method!r} is not known: choose one of {', '.join(METHODS)}")
        allowed = _METHOD_ARGS[method]
        unknown = sorted(set(args) - set(allowed))
        if unknown:
            takes = ", ".join(allowed) if allowed else "no pruning arguments"
            raise ValueError(f"{unknown[0]} is not an argument of method={method} (it takes {takes})")
        values = {name: _coerce(name, value) for name, value in args.items()}
        return getattr(cls, method)(**values)

    def check_num_layers(self, num_layers: int) -> None:
        """Every pruning layer must exist in a model with ``num_layers`` decoder layers."""
        for step in self.steps:
            if step.layer >= num_layers:
                raise ValueError(
                    f"k{step.suffix}={step.layer} is out of range: the model has {num_layers} decoder layers, "
                    f"so it must be < {num_layers}"
                )

    def budgets_keeping_all(self, num_image_tokens: int) -> list[str]:
        """The counts (as ``keep1=600``) that keep all of a sample's ``num_image_tokens``: those steps prune
        nothing for it, which a run labelled with the method should say."""
        return [
            f"keep{step.suffix}={step.keep}"
            for step in self.steps
            if step.keep is not None and step.keep >= num_image_tokens
        ]

    def describe(self) -> str:
        """Short label for tables and logs, e.g. ``himap(k1=2,keep1=288,k2=8,keep2=72)``."""
        if not self.steps:
            return self.method
        parts = []
        for step in self.steps:
            budget = f"keep{step.suffix}={step.keep}" if step.keep is not None else f"ratio{step.suffix}={step.ratio}"
            parts.append(f"k{step.suffix}={step.layer},{budget}")
        if self.method == "random":
            parts.append(f"seed={self.steps[0].seed}")
        return f"{self.method}({','.join(parts)})"


def _coerce(name: str, value: Any) -> Any:
    """Turn a model_args value into the int (k*, keep*, seed) or float (ratio*) it stands for."""
    if value is None:
        return None
    return parse_float(name, value) if name.startswith("ratio") else parse_int(name, value)


# Every model_arg that says how to prune: ``method`` and each method's knobs. The leaderboard compares a pruned
# run with the vanilla run whose other model_args are the same, so it reads this list too.
PRUNING_ARGUMENTS = frozenset({"method"} | {name for method_args in _METHOD_ARGS.values() for name in method_args})


def split_pruning_args(args: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate pruning arguments (method and every method's knobs) from the rest of model_args."""
    pruning = {k: v for k, v in args.items() if k in PRUNING_ARGUMENTS}
    rest = {k: v for k, v in args.items() if k not in PRUNING_ARGUMENTS}
    return pruning, rest
