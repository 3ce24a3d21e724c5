"""What to prune, where, and how many image tokens to keep.

A pruning method is a schedule of :class:`PruneStep`: before decoder layer ``layer`` runs, image tokens are
ranked by a score read from the attention of layer ``layer - 1`` and only the top ones go on. ``none`` has no
step, FastV one, HiMAP two. Two baselines for ablations rank without attention: ``random`` (HiMAP's schedule
with seeded random ranking, to isolate what the scores are worth) and ``input`` (evenly spaced image tokens
kept before layer 0, as a lower input resolution would). Three later methods reuse the same steps with other
scores: ``dart`` (one step, keeping the image tokens least duplicated by a few pivot tokens), ``pyramiddrop``
(several steps, each keeping a fixed share of the image tokens still there, ranked like FastV) and
``visionzip`` (a step before layer 0 that keeps what the vision tower's class token attends to, plus a few
merged tokens; see :mod:`himap_lmms.pruning.visionzip`). ``pool`` is the downsampling baseline: each image's
feature grid average-pooled to the budget before layer 0 (:mod:`himap_lmms.pruning.pool`). Budgets are given
either as a count (``keep``) or as a fraction of the sample's own image tokens (``ratio``, the share *kept*,
in (0, 1]); a ratio follows the sample, so it also fits models whose image-token count varies (LLaVA-NeXT).

Every check that can be made without the model is made on construction; the checks against the model's
depth are made by :meth:`PruningConfig.for_depth` when the config is bound to a model, which also places
PyramidDrop's default stages at the same fractions of any model's depth. Errors are ``ValueError`` naming the
argument as the user spelled it in ``model_args``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from himap_lmms.values import parse_float, parse_int

Score = Literal["instruction", "visual", "last_token", "duplication", "random", "uniform", "class_token", "pooled"]
ATTENTION_SCORES = ("instruction", "visual", "last_token")
# Scores read from layer ``layer - 1`` (its attention or its keys), so their step cannot sit before layer 1.
_PREVIOUS_LAYER_SCORES = (*ATTENTION_SCORES, "duplication")
METHODS = ("none", "fastv", "himap", "random", "input", "dart", "pyramiddrop", "visionzip", "pool")
# Scores computed before the language model, per image: the step before layer 0 keeps the slots chosen there.
INPUT_SCORES = ("class_token", "pooled")

# The model_args each method accepts, with their defaults (FastV K=2, R=50 %; HiMAP 2/50 %, 8/12.5 %, the
# papers' reference settings; DART's K=2 and 8 pivots; PyramidDrop's three stages, each keeping half).
_METHOD_ARGS: dict[str, dict[str, Any]] = {
    "none": {},
    "fastv": {"k": 2, "keep": None, "ratio": None},
    "himap": {"k1": 2, "keep1": None, "ratio1": None, "k2": 8, "keep2": None, "ratio2": None},
    "random": {"k1": 2, "keep1": None, "ratio1": None, "k2": 8, "keep2": None, "ratio2": None, "seed": 0},
    "input": {"keep": None, "ratio": None},
    "dart": {"k": 2, "keep": None, "ratio": None, "pivots": 8},
    "pyramiddrop": {"layers": None, "stages": None, "ratio": 0.5},
    "visionzip": {"keep": None, "ratio": None, "contextual": 10 / 64},
    "pool": {"ratio": None},
}
_DEFAULT_RATIO = {
    "fastv": {"": 0.5},
    "himap": {"1": 0.5, "2": 0.125},
    "input": {"": 0.25},
    "dart": {"": 0.25},
    "visionzip": {"": 0.25},
    "pool": {"": 0.25},
}
_DEFAULT_STAGES = 3


@dataclass(frozen=True)
class PruneStep:
    """Prune image tokens before decoder layer ``layer``, ranked by ``score`` (from layer ``layer - 1``'s
    attention for the attention scores; ``random`` draws with ``seed``, ``uniform`` spreads the kept tokens;
    ``duplication`` measures against ``pivots`` pivot tokens; ``class_token`` is chosen in the vision tower,
    ``contextual`` being the share of the kept tokens that are merged ones).

    ``suffix`` is how the step's arguments are spelled in model_args (``k1``/``keep1``/``ratio1`` for the
    first HiMAP step, ``k``/``keep``/``ratio`` for FastV), so that errors name what the user typed.
    """

    layer: int
    score: Score
    keep: int | None = None
    ratio: float | None = None
    suffix: str = ""
    seed: int = 0
    pivots: int = 0
    contextual: float = 0.0

    def __post_init__(self) -> None:
        k, keep, ratio = (f"{name}{self.suffix}" for name in ("k", "keep", "ratio"))
        if (self.keep is None) == (self.ratio is None):
            raise ValueError(f"give exactly one of {keep} (a count) or {ratio} (a fraction kept)")
        lowest = 1 if self.score in _PREVIOUS_LAYER_SCORES else 0
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
        by this step); a ratio rounds to the nearest count but keeps at least one token. Pooling keeps a
        square of :func:`pooled_side` per grid, which is what this gives for one square grid.
        """
        if self.keep is not None:
            return min(self.keep, num_image_tokens)
        side = math.isqrt(num_image_tokens)
        if self.score == "pooled" and side * side == num_image_tokens:  # one square grid: a square kept
            return pooled_side(side, self.ratio) ** 2
        return min(num_image_tokens, max(1, round(self.ratio * num_image_tokens)))


@dataclass(frozen=True)
class PruningConfig:
    """A named pruning schedule. Build it with :meth:`none`, :meth:`fastv`, :meth:`himap`, ... or :meth:`from_args`.

    ``depth`` is set when the steps' layers are fractions of the model's depth rather than layer indices:
    step layers are then numerators over ``depth`` and :meth:`for_depth` turns them into layers of the model
    (PyramidDrop's default stages, which sit at 1/4, 2/4, 3/4 of any decoder as they sit at 8/16/24 in 7B's 32).
    """

    method: str = "none"
    steps: tuple[PruneStep, ...] = ()
    depth: int | None = None

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
    def dart(cls, k: int = 2, keep: int | None = None, ratio: float | None = None, pivots: int = 8) -> PruningConfig:
        """DART: before layer ``k``, keep the ``pivots`` image tokens with the largest keys in layer ``k - 1``
        and the image tokens least similar (cosine, hidden states) to their nearest pivot, up to the budget."""
        if isinstance(pivots, bool) or not isinstance(pivots, int) or pivots < 1:
            raise ValueError(f"pivots={pivots!r} is out of range: it must be an integer >= 1")
        ratio = _DEFAULT_RATIO["dart"][""] if keep is None and ratio is None else ratio
        return cls("dart", (PruneStep(k, "duplication", keep, ratio, pivots=pivots),))

    @classmethod
    def pyramiddrop(
        cls, layers: tuple[int, ...] | None = None, stages: int | None = None, ratio: float = 0.5
    ) -> PruningConfig:
        """PyramidDrop: before each of ``layers``, keep the share ``ratio`` of the image tokens still there,
        ranked by the attention of the last prompt token (FastV's score).

        Without ``layers``, ``stages`` stages (3 by default) split the model's depth evenly: layers 8/16/24 in
        LLaVA-1.5-7B's 32, 10/20/30 in 13B's 40, 3/6/9 in the testbed's 12 (resolved by :meth:`for_depth`).
        Stage ``s`` keeps ``ratio ** s`` of the sample's image tokens, rounded once, not stage by stage.
        """
        if layers is not None and stages is not None:
            raise ValueError("give either layers (the pruning layers) or stages (spread over the depth), not both")
        if stages is not None and (isinstance(stages, bool) or not isinstance(stages, int) or stages < 1):
            raise ValueError(f"stages={stages!r} is out of range: it must be an integer >= 1")
        if not (isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and 0 < ratio <= 1):
            raise ValueError(f"ratio={ratio!r} is out of range: it must be in (0, 1]")
        depth = None
        if layers is None:
            stages = _DEFAULT_STAGES if stages is None else stages
            layers, depth = tuple(range(1, stages + 1)), stages + 1
        elif not layers or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in layers):
            raise ValueError(f"layers={_layer_list(layers)} is out of range: each must be an integer >= 1")
        elif any(a >= b for a, b in zip(layers, layers[1:])):
            raise ValueError(f"layers={_layer_list(layers)} must be strictly increasing")
        steps = tuple(PruneStep(layer, "last_token", ratio=ratio**s) for s, layer in enumerate(layers, 1))
        return cls("pyramiddrop", steps, depth)

    @classmethod
    def visionzip(
        cls, keep: int | None = None, ratio: float | None = None, contextual: float = 10 / 64
    ) -> PruningConfig:
        """VisionZip-style: per image, keep ``keep`` (or ``ratio`` of its) tokens chosen in the vision tower,
        the share ``contextual`` of them merged from the tokens not chosen (the paper's 10 of 64)."""
        if not (isinstance(contextual, (int, float)) and not isinstance(contextual, bool) and 0 <= contextual < 1):
            raise ValueError(f"contextual={contextual!r} is out of range: it must be in [0, 1)")
        ratio = _DEFAULT_RATIO["visionzip"][""] if keep is None and ratio is None else ratio
        return cls("visionzip", (PruneStep(0, "class_token", keep, ratio, contextual=contextual),))

    @classmethod
    def pool(cls, ratio: float | None = None) -> PruningConfig:
        """Downsampling: average-pool each image's feature grid (each tile's, on LLaVA-NeXT) to the share
        ``ratio`` of its tokens, before the first layer; ``ratio`` sets the pooled grid's side, so the count kept
        is a square per tile (:func:`pooled_side`)."""
        ratio = _DEFAULT_RATIO["pool"][""] if ratio is None else ratio
        return cls("pool", (PruneStep(0, "pooled", ratio=ratio),))

    @classmethod
    def from_args(cls, method: str = "none", *, num_layers: int | None = None, **args: Any) -> PruningConfig:
        """Build from model_args-style values (strings such as ``"288"`` are converted); with ``num_layers``, the
        schedule bound to a model of that depth (:meth:`for_depth`).

        An argument that belongs to another method (``k1`` with ``method=fastv``) is an error rather than
        silently ignored, since it almost always means the run is not the one the user wanted. With
        ``num_layers``, a layer the user typed is checked against the depth before the steps are compared with
        each other: ``k1=20`` on a 12-layer model is named as out of range, not blamed on the default ``k2=8``.
        """
        if method not in _METHOD_ARGS:
            raise ValueError(f"method={method!r} is not known: choose one of {', '.join(METHODS)}")
        allowed = _METHOD_ARGS[method]
        unknown = sorted(set(args) - set(allowed))
        if unknown:
            takes = ", ".join(allowed) if allowed else "no pruning arguments"
            raise ValueError(f"{unknown[0]} is not an argument of method={method} (it takes {takes})")
        values = {name: _coerce(name, value) for name, value in args.items()}
        if num_layers is not None:
            for name, value in values.items():
                layers = value if name == "layers" else (value,) if name in ("k", "k1", "k2") else ()
                if any(isinstance(layer, int) and layer >= num_layers for layer in layers):
                    given = f"layers={_layer_list(value)}" if name == "layers" else f"{name}={value}"
                    raise _beyond_depth(given, num_layers)
        config = getattr(cls, method)(**values)
        return config if num_layers is None else config.for_depth(num_layers)

    def for_depth(self, num_layers: int) -> PruningConfig:
        """This schedule for a model with ``num_layers`` decoder layers: every pruning layer must exist.

        Layers given as fractions of the depth (``depth`` set) become ``round(layer * num_layers / depth)``
        (halves rounded up); they must still be distinct layers >= 1, which a very shallow model can deny.
        """
        if self.depth is not None:
            layers = [math.floor(step.layer * num_layers / self.depth + 0.5) for step in self.steps]
            if layers[0] < 1 or len(set(layers)) < len(layers) or layers[-1] >= num_layers:
                raise ValueError(
                    f"stages={len(layers)} does not fit a model with {num_layers} decoder layers: "
                    f"spread over its depth the stages fall on layers {_layer_list(layers)}"
                )
            steps = tuple(replace(step, layer=layer) for step, layer in zip(self.steps, layers))
            return replace(self, steps=steps, depth=None)
        for step in self.steps:
            if step.layer >= num_layers:
                given = f"k{step.suffix}={step.layer}"
                if self.method == "pyramiddrop":
                    given = f"layers={_layer_list([s.layer for s in self.steps])}"
                raise _beyond_depth(given, num_layers)
        return self

    def image_tokens_per_layer(self, num_image_tokens: int, num_layers: int) -> list[int]:
        """Image tokens each of ``num_layers`` decoder layers sees under this schedule, for a sample with one image
        of ``num_image_tokens``: what the engine's stats will record, known before a model runs, so that costs
        can be compared (and matched) from the configs alone. Every budget counts from the sample's own image
        tokens, as the engine's steps do."""
        steps = self.for_depth(num_layers).steps
        counts, kept = [], num_image_tokens
        for layer in range(num_layers):
            kept = min([kept] + [step.budget(num_image_tokens) for step in steps if step.layer == layer])
            counts.append(kept)
        return counts

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
        first = self.steps[0]
        if self.method == "pyramiddrop":
            where = (
                f"stages={len(self.steps)}" if self.depth else f"layers={_layer_list([s.layer for s in self.steps])}"
            )
            parts = [where, f"ratio={first.ratio}"]
        elif self.method in ("input", "visionzip", "pool"):  # before layer 0: no layer to name
            parts = [_budget(first)]
        else:
            parts = [f"k{step.suffix}={step.layer},{_budget(step)}" for step in self.steps]
        parts += {"random": [f"seed={first.seed}"], "dart": [f"pivots={first.pivots}"]}.get(self.method, [])
        parts += [f"contextual={first.contextual}"] if self.method == "visionzip" else []
        return f"{self.method}({','.join(parts)})"


def _beyond_depth(given: str, num_layers: int) -> ValueError:
    return ValueError(
        f"{given} is out of range: the model has {num_layers} decoder layers, so it must be < {num_layers}"
    )


def pooled_side(side: int, ratio: float) -> int:
    """Side of the grid that ``method=pool`` averages a ``side x side`` grid down to for the share ``ratio``
    kept: the nearest whole side, at least 1 (12 of 24 at 0.25, 8 at 1/9)."""
    return max(1, min(side, round(side * math.sqrt(ratio))))


def _budget(step: PruneStep) -> str:
    return f"keep{step.suffix}={step.keep}" if step.keep is not None else f"ratio{step.suffix}={step.ratio}"


def _layer_list(layers: Any) -> str:
    """Layers as spelled in model_args, where a comma would end the value: ``8/16/24``."""
    return "/".join(str(layer) for layer in layers) if isinstance(layers, (list, tuple)) else repr(layers)


def _coerce(name: str, value: Any) -> Any:
    """Turn a model_args value into the int (k*, keep*, seed, pivots, stages), float (ratio*, contextual) or
    layer tuple (``layers``, written ``8/16/24`` since model_args are comma-separated) it stands for."""
    if value is None:
        return None
    if name == "layers":
        parts = value.split("/") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else [value]
        try:
            return tuple(parse_int(name, part) for part in parts)
        except ValueError:
            raise ValueError(f"layers={value!r} is not a list of layers such as 8/16/24") from None
    return parse_float(name, value) if name.startswith("ratio") or name == "contextual" else parse_int(name, value)


# Every model_arg that says how to prune: ``method`` and each method's knobs. The leaderboard compares a pruned
# run with the vanilla run whose other model_args are the same, so it reads this list too.
PRUNING_ARGUMENTS = frozenset({"method"} | {name for method_args in _METHOD_ARGS.values() for name in method_args})


def split_pruning_args(args: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate pruning arguments (method and every method's knobs) from the rest of model_args."""
    pruning = {k: v for k, v in args.items() if k in PRUNING_ARGUMENTS}
    rest = {k: v for k, v in args.items() if k not in PRUNING_ARGUMENTS}
    return pruning, rest
