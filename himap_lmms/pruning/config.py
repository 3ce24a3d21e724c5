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

from himap_lmms.pruning.registry import MethodSpec, method_spec, pruning_arguments
from himap_lmms.values import parse_float, parse_int

Score = Literal[
    "instruction",
    "visual",
    "last_token",
    "next_layer_last_token",
    "pivot_quota",
    "duplication",
    "random",
    "uniform",
    "visionzip",
    "class_token",
    "pooled",
]
ATTENTION_SCORES = ("instruction", "visual", "last_token")
# Scores read from layer ``layer - 1``'s output (its attention, its keys or the hidden states it wrote), so their
# step cannot sit before layer 1.
_PREVIOUS_LAYER_SCORES = (*ATTENTION_SCORES, "next_layer_last_token", "pivot_quota", "duplication")
METHODS = ("none", "fastv", "himap", "random", "input", "dart", "pyramiddrop", "visionzip", "pool")
# DART, PyramidDrop and VisionZip follow their authors' code by default; ``variant=prior`` is this repo's earlier
# reading of their papers (docs/later_methods.md lists every difference), kept for comparison with old runs.
VARIANTS = ("authors", "prior")
_VARIANT_METHODS = ("dart", "pyramiddrop", "visionzip")
Positions = Literal["original", "renumber"]

# The model_args each method accepts, with their defaults (FastV K=2, R=50 %; HiMAP 2/50 %, 8/12.5 %, the
# papers' reference settings). DART, PyramidDrop and VisionZip take the defaults of their authors' LLaVA-1.5
# scripts (docs/later_methods.md); ``None`` there means "set by the variant" (see each factory).
_METHOD_ARGS: dict[str, dict[str, Any]] = {
    "none": {},
    "fastv": {"k": 2, "keep": None, "ratio": None},
    "himap": {"k1": 2, "keep1": None, "ratio1": None, "k2": 8, "keep2": None, "ratio2": None},
    "random": {"k1": 2, "keep1": None, "ratio1": None, "k2": 8, "keep2": None, "ratio2": None, "seed": 0},
    "input": {"keep": None, "ratio": None},
    "dart": {
        "k": 2,
        "keep": None,
        "ratio": None,
        "image_pivots": None,
        "text_pivots": None,
        "pivots": None,
        "variant": "authors",
    },
    "pyramiddrop": {"layers": None, "stages": None, "ratio": 0.5, "variant": "authors"},
    "visionzip": {"dominant": None, "contextual": None, "keep": None, "ratio": None, "variant": "authors"},
    "pool": {"ratio": None},
}
# Which of a method's model_args each variant takes (the others are an error naming the variant).
_VARIANT_ARGS: dict[str, dict[str, tuple[str, ...]]] = {
    "dart": {
        "authors": ("k", "keep", "ratio", "image_pivots", "text_pivots", "variant"),
        "prior": ("k", "keep", "ratio", "pivots", "variant"),
    },
    "visionzip": {
        "authors": ("dominant", "contextual", "ratio", "variant"),
        "prior": ("keep", "ratio", "contextual", "variant"),
    },
}
# The authors' LLaVA-1.5 settings: DART's scripts/v1_5/eval/*.sh (--max_num_trunction 128, --pivot_image_token 4,
# --pivot_text_token 4), PyramidDrop's scripts/v1_5/pdrop_eval/*.sh (--layer_list [8,16,24], ratios halving) and
# VisionZip's README (visionzip(model, dominant=54, contextual=10)).
DART_KEEP, DART_IMAGE_PIVOTS, DART_TEXT_PIVOTS = 128, 4, 4
PYRAMIDDROP_LAYERS = (8, 16, 24)
VISIONZIP_DOMINANT, VISIONZIP_CONTEXTUAL = 54, 10
_TITLES = {
    "none": "vanilla",
    "fastv": "FastV",
    "himap": "HiMAP",
    "random": "random",
    "input": "input",
    "dart": "DART",
    "pyramiddrop": "PyramidDrop",
    "visionzip": "VisionZip",
    "pool": "pool",
}
_DEFAULT_RATIO = {
    "fastv": {"": 0.5},
    "himap": {"1": 0.5, "2": 0.125},
    "input": {"": 0.25},
    "dart": {"": 0.25},  # variant=prior
    "visionzip": {"": 0.25},  # variant=prior
    "pool": {"": 0.25},
}
_DEFAULT_STAGES = 3


@dataclass(frozen=True)
class PruneStep:
    """Prune image tokens before decoder layer ``layer``, ranked by ``score``.

    The attention scores read layer ``layer - 1``'s attention; ``next_layer_last_token`` (PyramidDrop) the
    attention of the last prompt position computed with layer ``layer``'s own projections; ``pivot_quota`` (DART)
    gives each of ``pivots`` image and ``text_pivots`` text pivots its quota of the tokens least similar to it;
    ``duplication`` (DART, ``variant=prior``) ranks by the nearest of ``pivots`` image pivots; ``random`` draws
    with ``seed``, ``uniform`` spreads the kept tokens; ``visionzip`` and ``class_token`` are chosen in the
    vision tower (``merged`` contextual tokens, or the share ``contextual`` of the kept ones for ``class_token``).

    ``positions`` says what the kept tokens' position ids become: ``original`` keeps those of the unpruned
    prompt, ``renumber`` numbers them 0..n'-1 again (and decoding continues from there). ``floor`` rounds a
    ``ratio`` budget down, as ``int(...)``, instead of to the nearest count.

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
    text_pivots: int = 0
    merged: int = 0
    positions: Positions = "original"
    floor: bool = False

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
        by this step); a ratio rounds to the nearest count but keeps at least one token, or with ``floor``
        rounds down as PyramidDrop's ``int(...)`` does. DART's (``pivot_quota``) is its image pivots plus one
        quota per pivot, ``floor(keep / pivots)`` each (assuming the prompt has its text pivots). Pooling keeps a
        square of :func:`pooled_side` per grid, which is what this gives for one square grid.
        """
        if self.score == "pivot_quota":
            image_pivots = min(self.pivots, num_image_tokens)
            return image_pivots + min(
                num_image_tokens - image_pivots, self.pivot_quota(num_image_tokens) * (self.pivots + self.text_pivots)
            )
        if self.keep is not None:
            return min(self.keep, num_image_tokens)
        side = math.isqrt(num_image_tokens)
        if self.score == "pooled" and side * side == num_image_tokens:  # one square grid: a square kept
            return pooled_side(side, self.ratio) ** 2
        if self.floor:
            return min(num_image_tokens, int(num_image_tokens * self.ratio))
        return min(num_image_tokens, max(1, round(self.ratio * num_image_tokens)))

    def visionzip_counts(self, num_patches: int) -> tuple[int, int]:
        """VisionZip's (dominant, contextual) for an image of ``num_patches``: the counts given, or the budget
        split at the share ``contextual`` (rounded; the class token is always one dominant token)."""
        if self.keep is not None:
            return self.keep - self.merged, self.merged
        total = self.budget(num_patches)
        contextual = round(self.contextual * total)
        return total - contextual, contextual

    def pivot_quota(self, num_image_tokens: int) -> int:
        """DART's tokens per pivot: ``math.ceil(budget // pivots)`` in its ``get_retained_image_token``, the
        budget being ``keep`` (its ``max_num_trunction``) or ``ratio`` of the image (its ``1 - reduction_ratio``)."""
        allowance = self.keep if self.keep is not None else num_image_tokens * self.ratio
        return int(allowance // (self.pivots + self.text_pivots))


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
        method_spec(self.method)  # a known method, built in or installed
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
    def dart(
        cls,
        k: int = 2,
        keep: int | None = None,
        ratio: float | None = None,
        image_pivots: int | None = None,
        text_pivots: int | None = None,
        pivots: int | None = None,
        variant: str = "authors",
    ) -> PruningConfig:
        """DART, as its authors' ``get_retained_image_token`` runs it (``variant=authors``): before layer ``k``,
        the ``image_pivots`` image and ``text_pivots`` text tokens with the largest L1 key norm in layer ``k - 1``
        are pivots, and each pivot in turn keeps its quota (``keep`` split evenly between the pivots) of the image
        tokens least similar to it; the image pivots are kept too. ``variant=prior``: ``pivots`` image pivots
        (largest L2 key norm), the rest ranked once by their nearest pivot, ``keep`` or ``ratio`` in all."""
        variant = _check_variant("dart", variant, image_pivots=image_pivots, text_pivots=text_pivots, pivots=pivots)
        if variant == "prior":
            pivots = _count("pivots", 8 if pivots is None else pivots, lowest=1)
            ratio = _DEFAULT_RATIO["dart"][""] if keep is None and ratio is None else ratio
            return cls("dart", (PruneStep(k, "duplication", keep, ratio, pivots=pivots),))
        image_pivots = _count("image_pivots", DART_IMAGE_PIVOTS if image_pivots is None else image_pivots, lowest=0)
        text_pivots = _count("text_pivots", DART_TEXT_PIVOTS if text_pivots is None else text_pivots, lowest=0)
        if image_pivots + text_pivots == 0:
            raise ValueError("image_pivots=0 and text_pivots=0: DART needs at least one pivot")
        keep = DART_KEEP if keep is None and ratio is None else keep
        step = PruneStep(
            k, "pivot_quota", keep, ratio, pivots=image_pivots, text_pivots=text_pivots, positions="original"
        )
        return cls("dart", (step,))

    @classmethod
    def pyramiddrop(
        cls,
        layers: tuple[int, ...] | None = None,
        stages: int | None = None,
        ratio: float = 0.5,
        variant: str = "authors",
    ) -> PruningConfig:
        """PyramidDrop: before each of ``layers``, keep ``int(n * ratio ** s)`` of the sample's ``n`` image tokens
        at stage ``s``, ranked by the attention of the last prompt position.

        ``variant=authors`` (its ``pdrop_rank_drop``): that attention is computed with the projections of the
        layer about to run, and the kept sequence is renumbered 0..n'-1. ``variant=prior``: the previous layer's
        attention (FastV's score), original position ids, budgets rounded to the nearest count.

        Without ``layers`` and ``stages`` the authors' 8/16/24 are used; ``stages=n`` instead splits the model's
        depth evenly: 8/16/24 in LLaVA-1.5-7B's 32, 10/20/30 in 13B's 40, 3/6/9 in the testbed's 12 (resolved
        by :meth:`for_depth`). Budgets count from the sample's image tokens, not stage by stage.
        """
        variant = _check_variant("pyramiddrop", variant)
        if layers is not None and stages is not None:
            raise ValueError("give either layers (the pruning layers) or stages (spread over the depth), not both")
        if stages is not None and (isinstance(stages, bool) or not isinstance(stages, int) or stages < 1):
            raise ValueError(f"stages={stages!r} is out of range: it must be an integer >= 1")
        if not (isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and 0 < ratio <= 1):
            raise ValueError(f"ratio={ratio!r} is out of range: it must be in (0, 1]")
        depth = None
        if layers is None and (stages is not None or variant == "prior"):
            stages = _DEFAULT_STAGES if stages is None else stages
            layers, depth = tuple(range(1, stages + 1)), stages + 1
        elif layers is None:
            layers = PYRAMIDDROP_LAYERS
        elif not layers or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in layers):
            raise ValueError(f"layers={_layer_list(layers)} is out of range: each must be an integer >= 1")
        elif any(a >= b for a, b in zip(layers, layers[1:])):
            raise ValueError(f"layers={_layer_list(layers)} must be strictly increasing")
        if variant == "authors":
            rule = {"score": "next_layer_last_token", "positions": "renumber", "floor": True}
        else:
            rule = {"score": "last_token"}
        steps = tuple(PruneStep(layer, ratio=ratio**s, **rule) for s, layer in enumerate(layers, 1))
        return cls("pyramiddrop", steps, depth)

    @classmethod
    def visionzip(
        cls,
        dominant: int | None = None,
        contextual: float | None = None,
        keep: int | None = None,
        ratio: float | None = None,
        variant: str = "authors",
    ) -> PruningConfig:
        """VisionZip, per image, chosen in the vision tower (:mod:`himap_lmms.pruning.visionzip`).

        ``variant=authors`` (its ``visionzip(model, dominant, contextual)``): ``dominant`` tokens (the class
        token and the ``dominant - 1`` patches it attends to most) and ``contextual`` merged ones go into the
        language model in a row, numbered on from the text before them. Instead of the counts, ``ratio`` keeps
        ``round(ratio * P)`` tokens of an image of ``P`` patches, split as the authors' 54 + 10 (so that one
        preset fits images of any size; 0.1111 of 576 is their 54 + 10). ``variant=prior``: ``keep`` (or ``ratio``
        of the image's) tokens, the share ``contextual`` of them merged, at their own slots and positions.
        """
        variant = _check_variant("visionzip", variant, dominant=dominant, keep=keep, ratio=ratio)
        if variant == "prior":
            contextual = 10 / 64 if contextual is None else contextual
            if not (isinstance(contextual, (int, float)) and not isinstance(contextual, bool) and 0 <= contextual < 1):
                raise ValueError(f"contextual={contextual!r} is out of range: it must be in [0, 1)")
            ratio = _DEFAULT_RATIO["visionzip"][""] if keep is None and ratio is None else ratio
            return cls("visionzip", (PruneStep(0, "class_token", keep, ratio, contextual=contextual),))
        if ratio is not None:
            if dominant is not None or contextual is not None:
                raise ValueError("give either ratio or the counts dominant and contextual, not both")
            share = VISIONZIP_CONTEXTUAL / (VISIONZIP_DOMINANT + VISIONZIP_CONTEXTUAL)
            return cls("visionzip", (PruneStep(0, "visionzip", ratio=ratio, contextual=share, positions="renumber"),))
        dominant = _count("dominant", VISIONZIP_DOMINANT if dominant is None else dominant, lowest=1)
        contextual = _count("contextual", VISIONZIP_CONTEXTUAL if contextual is None else contextual, lowest=0)
        step = PruneStep(0, "visionzip", keep=dominant + contextual, merged=contextual, positions="renumber")
        return cls("visionzip", (step,))

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
        spec = method_spec(method)
        values = spec.parse(args)
        if num_layers is not None:
            for name, value in values.items():
                layers = value if name == "layers" else (value,) if name in ("k", "k1", "k2") else ()
                if any(isinstance(layer, int) and layer >= num_layers for layer in layers):
                    given = f"layers={_layer_list(value)}" if name == "layers" else f"{name}={value}"
                    raise _beyond_depth(given, num_layers)
        config = spec.build(**values)
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
        elif first.score == "visionzip" and first.keep is not None:
            parts = [f"dominant={first.keep - first.merged}", f"contextual={first.merged}"]
        elif first.score == "visionzip":  # a ratio, split as the authors' 54 + 10
            parts = [_budget(first)]
        elif self.method in ("input", "visionzip", "pool"):  # before layer 0: no layer to name
            parts = [_budget(first), *([f"contextual={first.contextual}"] if self.method == "visionzip" else [])]
        else:
            parts = [f"k{step.suffix}={step.layer},{_budget(step)}" for step in self.steps]
        if first.score == "pivot_quota":
            parts += [f"image_pivots={first.pivots}", f"text_pivots={first.text_pivots}"]
        elif self.method == "dart":
            parts += [f"pivots={first.pivots}"]
        parts += [f"seed={first.seed}"] if self.method == "random" else []
        parts += ["variant=prior"] if self.variant == "prior" else []
        return f"{self.method}({','.join(parts)})"

    @property
    def variant(self) -> str | None:
        """``authors`` or ``prior`` for DART, PyramidDrop and VisionZip (read off the steps' scores), else None."""
        if self.method not in _VARIANT_METHODS or not self.steps:
            return None
        return "prior" if self.steps[0].score in ("duplication", "last_token", "class_token") else "authors"


def _beyond_depth(given: str, num_layers: int) -> ValueError:
    return ValueError(
        f"{given} is out of range: the model has {num_layers} decoder layers, so it must be < {num_layers}"
    )


def pooled_side(side: int, ratio: float) -> int:
    """Side of the grid that ``method=pool`` averages a ``side x side`` grid down to for the share ``ratio``
    kept: the nearest whole side, at least 1 (12 of 24 at 0.25, 8 at 1/9)."""
    return max(1, min(side, round(side * math.sqrt(ratio))))


def _check_variant(method: str, variant: str, **given: Any) -> str:
    """``variant`` itself, once known and once every argument given (not None) belongs to it."""
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r} is not known: choose one of {', '.join(VARIANTS)}")
    takes = _VARIANT_ARGS.get(method, {}).get(variant)
    for name, value in given.items():
        if value is not None and takes is not None and name not in takes:
            raise ValueError(
                f"{name} is not an argument of method={method},variant={variant} (it takes {', '.join(takes)})"
            )
    return variant


def _count(name: str, value: Any, lowest: int) -> int:
    """``value`` as an int >= ``lowest`` (a float such as 10.0, from a model_arg shared with a share, is one)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        raise ValueError(f"{name}={value!r} is out of range: it must be an integer >= {lowest}")
    return value


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
    if name == "variant":
        return value
    return parse_float(name, value) if name.startswith("ratio") or name == "contextual" else parse_int(name, value)


def builtin_specs() -> list[MethodSpec]:
    """The methods this module builds, as :class:`MethodSpec` (VisionZip's input merge is added where it lives,
    :mod:`himap_lmms.pruning.builtin`)."""
    return [
        MethodSpec(name, _METHOD_ARGS[name], getattr(PruningConfig, name), _TITLES[name], coerce=_coerce)
        for name in METHODS
    ]


def split_pruning_args(args: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate pruning arguments (method and every method's knobs) from the rest of model_args."""
    known = pruning_arguments()
    pruning = {k: v for k, v in args.items() if k in known}
    rest = {k: v for k, v in args.items() if k not in known}
    return pruning, rest
