"""What to prune, where, and how many image tokens to keep: the schedule every method builds.

A pruning method is a schedule of :class:`PruneStep`: before decoder layer ``layer`` runs, image tokens are
ranked by the scoring rule its method declares under ``score`` and only the top ones go on. ``none`` has no
step, FastV one, HiMAP two; a method that chooses before the language model (VisionZip, pooling) has one step
at layer 0 that keeps what its input merge chose. Each method is one module of this package declaring a
:class:`~himap_lmms.pruning.registry.MethodSpec` (its model_args, defaults, checks, schedule, scoring rules and
label); this module holds only what they share. Budgets are given either as a count (``keep``) or as a fraction
of the sample's own image tokens (``ratio``, the share *kept*, in (0, 1]); a ratio follows the sample, so it also
fits models whose image-token count varies (LLaVA-NeXT).

The spelling of model_args is shared too, so that every method's errors name what the user typed: a step's
layer is ``k`` (``k1``, ``k2``, ... when there are several steps, each with its ``keep1``/``ratio1``...), a list
of layers is ``layers=8/16/24``, and steps spread over the model's depth are ``stages``. Every check that can be
made without the model is made on construction; the checks against the model's depth are made by
:meth:`PruningConfig.for_depth` when the config is bound to a model, which also places steps given as fractions
of the depth (PyramidDrop's ``stages``) on any model's layers. Errors are ``ValueError`` naming the argument as
the user spelled it in ``model_args``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from himap_lmms.pruning.registry import method_spec, pruning_arguments
from himap_lmms.values import parse_float, parse_int

Positions = Literal["original", "renumber"]


@dataclass(frozen=True)
class PruneStep:
    """Prune image tokens before decoder layer ``layer``, ranked by the rule its method declares as ``score``.

    ``positions`` says what the kept tokens' position ids become: ``original`` keeps those of the unpruned
    prompt, ``renumber`` numbers them 0..n'-1 again (and decoding continues from there). ``floor`` rounds a
    ``ratio`` budget down, as ``int(...)``, instead of to the nearest count. ``listed``: the step's layer was
    typed in one list with the other steps' (``layers=8/16/24``), so an error about it names the list.

    ``suffix`` is how the step's arguments are spelled in model_args (``k1``/``keep1``/``ratio1`` for the
    first HiMAP step, ``k``/``keep``/``ratio`` for FastV), so that errors name what the user typed. A method
    whose steps need more than this (DART's pivots, VisionZip's merged tokens) subclasses it in its module.
    """

    layer: int
    score: str
    keep: int | None = None
    ratio: float | None = None
    suffix: str = ""
    positions: Positions = "original"
    floor: bool = False
    listed: bool = False

    def __post_init__(self) -> None:
        k, keep, ratio = (f"{name}{self.suffix}" for name in ("k", "keep", "ratio"))
        if (self.keep is None) == (self.ratio is None):
            raise ValueError(f"give exactly one of {keep} (a count) or {ratio} (a fraction kept)")
        if isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 0:
            raise ValueError(f"{k}={self.layer!r} is out of range: it must be an integer >= 0")
        if self.keep is not None and (isinstance(self.keep, bool) or not isinstance(self.keep, int) or self.keep < 1):
            raise ValueError(f"{keep}={self.keep!r} is out of range: it must be an integer >= 1")
        if self.ratio is not None and not is_share(self.ratio):
            raise ValueError(f"{ratio}={self.ratio!r} is out of range: it must be in (0, 1]")

    def budget(self, num_image_tokens: int) -> int:
        """Image tokens this step keeps for a sample that came in with ``num_image_tokens``.

        A count larger than the sample's image tokens keeps them all (the sample is then not pruned
        by this step); a ratio rounds to the nearest count but keeps at least one token, or with ``floor``
        rounds down as PyramidDrop's ``int(...)`` does.
        """
        if self.keep is not None:
            return min(self.keep, num_image_tokens)
        if self.floor:
            return min(num_image_tokens, int(num_image_tokens * self.ratio))
        return min(num_image_tokens, max(1, round(self.ratio * num_image_tokens)))

    def budget_as_typed(self) -> str:
        """The budget as spelled in model_args: ``keep1=288`` or ``ratio1=0.5``."""
        return f"keep{self.suffix}={self.keep}" if self.keep is not None else f"ratio{self.suffix}={self.ratio}"

    def as_typed(self) -> str:
        """The step as spelled in model_args: ``k1=2,keep1=288``."""
        return f"k{self.suffix}={self.layer},{self.budget_as_typed()}"


@dataclass(frozen=True)
class PruningConfig:
    """A named pruning schedule; build it with :meth:`from_args` (``PruningConfig()`` is the unpruned model).

    ``depth`` is set when the steps' layers are fractions of the model's depth rather than layer indices:
    step layers are then numerators over ``depth`` and :meth:`for_depth` turns them into layers of the model
    (PyramidDrop's default stages, which sit at 1/4, 2/4, 3/4 of any decoder as they sit at 8/16/24 in 7B's 32).
    """

    method: str = "none"
    steps: tuple[PruneStep, ...] = ()
    depth: int | None = None

    def __post_init__(self) -> None:
        spec = method_spec(self.method)  # a known method, built in or installed
        for step in self.steps:
            if step.score in spec.previous_layer_scores and step.layer < 1:
                raise ValueError(f"k{step.suffix}={step.layer!r} is out of range: it must be an integer >= 1")
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
    def from_args(cls, method: str = "none", *, num_layers: int | None = None, **args: Any) -> PruningConfig:
        """Build ``method`` from model_args-style values (strings such as ``"288"`` are converted) with its spec's
        ``build``, built-in and installed methods alike; with ``num_layers``, the schedule bound to a model of
        that depth (:meth:`for_depth`).

        An argument that belongs to another method (``k1`` with ``method=fastv``) is an error rather than
        silently ignored, since it almost always means the run is not the one the user wanted. With
        ``num_layers``, a layer the user typed (``k*``, ``layers``) is checked against the depth before the steps
        are compared with each other: ``k1=20`` on a 12-layer model is named as out of range, not blamed on the
        default ``k2=8``.
        """
        spec = method_spec(method)
        values = spec.parse(args)
        if num_layers is not None:
            for name, value in values.items():
                layers = value if name == "layers" else (value,) if re.fullmatch(r"k\d*", name) else ()
                if any(isinstance(layer, int) and layer >= num_layers for layer in layers):
                    given = f"layers={layer_list(value)}" if name == "layers" else f"{name}={value}"
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
                    f"spread over its depth the stages fall on layers {layer_list(layers)}"
                )
            steps = tuple(replace(step, layer=layer) for step, layer in zip(self.steps, layers))
            return replace(self, steps=steps, depth=None)
        for step in self.steps:
            if step.layer >= num_layers:
                given = f"k{step.suffix}={step.layer}"
                if step.listed:
                    given = f"layers={layer_list([s.layer for s in self.steps if s.listed])}"
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
        """Short label for tables and logs, e.g. ``himap(k1=2,keep1=288,k2=8,keep2=72)``: the method's own
        :attr:`~himap_lmms.pruning.registry.MethodSpec.label` of its settings, by default each step as typed."""
        if not self.steps:
            return self.method
        label = method_spec(self.method).label
        parts = label(self) if label is not None else [step.as_typed() for step in self.steps]
        return f"{self.method}({','.join(parts)})"


def _beyond_depth(given: str, num_layers: int) -> ValueError:
    return ValueError(
        f"{given} is out of range: the model has {num_layers} decoder layers, so it must be < {num_layers}"
    )


def is_share(value: Any) -> bool:
    """Whether ``value`` is a number in (0, 1], as every ``ratio`` must be."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1


def count(name: str, value: Any, lowest: int) -> int:
    """``value`` as an int >= ``lowest`` (a float such as 10.0, from a model_arg shared with a share, is one)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        raise ValueError(f"{name}={value!r} is out of range: it must be an integer >= {lowest}")
    return value


def layer_list(layers: Any) -> str:
    """Layers as spelled in model_args, where a comma would end the value: ``8/16/24``."""
    return "/".join(str(layer) for layer in layers) if isinstance(layers, (list, tuple)) else repr(layers)


def coerce_model_arg(name: str, value: Any) -> Any:
    """A model_args value as the built-in methods spell them: ``layers`` (``8/16/24``, since model_args are
    comma-separated) a tuple of layers, ``ratio*`` a float, ``variant`` the name as typed, anything else an int
    (``k*``, ``keep*``, ``seed``, counts). ``None`` (not given) stays None for the method's build to default."""
    if value is None or name == "variant":
        return value
    if name == "layers":
        parts = value.split("/") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else [value]
        try:
            return tuple(parse_int(name, part) for part in parts)
        except ValueError:
            raise ValueError(f"layers={value!r} is not a list of layers such as 8/16/24") from None
    return parse_float(name, value) if name.startswith("ratio") else parse_int(name, value)


def split_pruning_args(args: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate pruning arguments (method and every method's knobs) from the rest of model_args."""
    known = pruning_arguments()
    pruning = {k: v for k, v in args.items() if k in known}
    rest = {k: v for k, v in args.items() if k not in known}
    return pruning, rest
