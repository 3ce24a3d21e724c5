"""Which pruning methods exist: the built-in ones and any that an installed package declares.

A method is a :class:`MethodSpec`: its name (the ``method`` model_arg), its other model_args with their defaults,
a ``build`` that checks them and returns the :class:`~himap_lmms.pruning.config.PruningConfig` (the schedule of
:class:`~himap_lmms.pruning.config.PruneStep`), the scoring rules its steps name, its label, and, for methods that
act before the language model (VisionZip, pooling), the ``embed`` that replaces LLaVA's input merge. Each built-in
method is one module of :mod:`himap_lmms.pruning` declaring its spec (listed in :mod:`himap_lmms.pruning.builtin`);
config parsing, the engine, the lmms-eval adapter, the leaderboard, the sweep and the cost benchmark all look
methods up here, so a user's method is added exactly like a built-in one: a package declares its spec under the
entry-point group ``himap_lmms.methods`` (``name = module:SPEC``) and ``method=name`` works everywhere, with no
edit to this repository (docs/adding_a_method.md).
"""

from __future__ import annotations

import functools
import importlib.metadata
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the registry itself imports no torch: reading configs and tables stays light
    import torch
    from torch import nn
    from transformers import DynamicCache, PreTrainedModel

    from himap_lmms.pruning.config import PruneStep, PruningConfig

ENTRY_POINT_GROUP = "himap_lmms.methods"


@dataclass(frozen=True)
class ScoreContext:
    """What a scoring rule may read before decoder layer ``layer`` runs, for a left-padded batch of ``n`` columns.

    ``hidden`` is what layer ``layer`` is about to read (layer ``layer - 1``'s output, or the input embeddings
    before layer 0), ``layer_input`` what layer ``layer - 1`` read, ``cache`` the keys and values of the layers
    that ran; ``valid``, ``is_image`` and ``is_text`` (the tokens after the last image token) are ``(batch, n)``
    bools, ``budget`` the image tokens each sample keeps (``step.budget`` of its own image tokens).
    """

    step: PruneStep
    layer: int
    language_model: nn.Module
    cache: DynamicCache
    hidden: torch.Tensor
    layer_input: torch.Tensor
    position_ids: torch.Tensor
    position_embeddings: tuple[torch.Tensor, torch.Tensor]
    valid: torch.Tensor
    is_image: torch.Tensor
    is_text: torch.Tensor
    budget: torch.Tensor

    def keys(self, layer: int) -> torch.Tensor:
        """``(batch, kv_heads, n, head_dim)`` keys that decoder layer ``layer`` (one that ran) cached, after the
        rotary embedding, whatever cache layout the installed transformers uses."""
        from himap_lmms.compat import cached_keys_values

        return cached_keys_values(self.cache)[layer][0]


ScoreRule = Callable[[ScoreContext], "torch.Tensor"]
"""``(batch, n)`` scores (each sample keeps its ``budget`` best image tokens) or a bool mask of those kept."""

Embed = Callable[
    ["PreTrainedModel", "torch.Tensor", "torch.Tensor | None", "torch.Tensor | None", "PruneStep"],
    "tuple[torch.Tensor, torch.Tensor]",
]
"""A pre-LM method's input merge: ``(model, input_ids, pixel_values, image_sizes, first step) -> (embeds, chosen
slots)``; ``image_sizes`` is LLaVA-NeXT's (None for LLaVA-1.5)."""


@dataclass(frozen=True)
class MethodSpec:
    """One pruning method.

    ``args``: its model_args (besides ``method``) and their defaults; strings from model_args are converted by
    ``coerce(name, value)``, by default to the type of the default (int, float; ``None`` defaults are handed over
    as given, for ``build`` to parse; :func:`~himap_lmms.pruning.config.coerce_model_arg` is the built-ins'
    convention). ``build(**args)`` checks them (``ValueError`` naming the argument) and returns the schedule.
    ``scores``: the rule of every score name its steps use (the engine ranks by these and nothing else);
    ``previous_layer_scores``: those whose rule reads what layer ``layer - 1`` wrote (its attention, keys or
    output), so that a step scored by one cannot sit before layer 1. ``label(config)``: the settings its
    leaderboard label spells out (default: each step's layer and budget as typed); labels are run identities, so
    two schedules that differ must differ here. ``embed`` and ``check`` (``(model) -> None``, raising
    ``ValueError`` for a model it cannot run on) are for methods that choose before layer 0: their first step
    keeps the slots ``embed`` chose. ``title`` names it in the cost benchmark's tables.
    """

    name: str
    args: Mapping[str, Any]
    build: Callable[..., PruningConfig]
    title: str = ""
    scores: Mapping[str, ScoreRule] = field(default_factory=dict)
    previous_layer_scores: Collection[str] = ()
    label: Callable[[PruningConfig], Sequence[str]] | None = None
    embed: Embed | None = None
    check: Callable[[PreTrainedModel], None] | None = None
    coerce: Callable[[str, Any], Any] | None = None

    def parse(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """``args`` (model_args strings or values) converted for :attr:`build`; an unknown one is an error."""
        unknown = sorted(set(args) - set(self.args))
        if unknown:
            takes = ", ".join(self.args) if self.args else "no pruning arguments"
            raise ValueError(f"{unknown[0]} is not an argument of method={self.name} (it takes {takes})")
        return {name: (self.coerce or _like_default(self.args[name]))(name, value) for name, value in args.items()}


def _like_default(default: Any) -> Callable[[str, Any], Any]:
    """A converter to the type of ``default``: model_args arrive as strings."""
    from himap_lmms.values import parse_float, parse_int

    if isinstance(default, bool) or default is None or isinstance(default, str):
        return lambda name, value: value
    return parse_int if isinstance(default, int) else parse_float


def lazy(module: str, name: str) -> Callable[..., Any]:
    """``module.name``, imported at its first call: a spec names its torch code this way, so that reading
    configs (the leaderboard, the sweep's checks) imports no torch."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(import_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


_BUILTIN: dict[str, MethodSpec] = {}


def register_builtin(spec: MethodSpec) -> MethodSpec:
    """Add a method shipped with this package (:mod:`himap_lmms.pruning.builtin` lists them)."""
    _BUILTIN[spec.name] = spec
    return spec


@functools.cache
def _installed(path: tuple[str, ...]) -> dict[str, MethodSpec]:
    """The methods packages on ``path`` (``sys.path``, which keys the cache) declare under the entry-point group."""
    found = {}
    for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        spec = point.load()
        if not isinstance(spec, MethodSpec) or spec.name != point.name:
            raise ValueError(
                f"entry point {point.name} = {point.value} of group {ENTRY_POINT_GROUP} must be a MethodSpec "
                f"named {point.name!r}"
            )
        if spec.name in _BUILTIN:
            raise ValueError(f"entry point {point.value} redefines the built-in method={spec.name}")
        found[spec.name] = spec
    return found


def all_methods() -> dict[str, MethodSpec]:
    """Built-in methods first (in their order), then installed ones."""
    return {**_BUILTIN, **_installed(tuple(sys.path))}


def method_spec(name: str) -> MethodSpec:
    """The method called ``name``; an unknown name is a ``ValueError`` listing the known ones."""
    spec = _BUILTIN.get(name) or all_methods().get(name)
    if spec is None:
        raise ValueError(f"method={name!r} is not known: choose one of {', '.join(all_methods())}")
    return spec


def pruning_arguments() -> frozenset[str]:
    """Every model_arg that says how to prune: ``method`` and each known method's knobs. The leaderboard compares
    a pruned run with the vanilla run whose other model_args are the same, so it reads this too."""
    return frozenset({"method"} | {name for spec in all_methods().values() for name in spec.args})
