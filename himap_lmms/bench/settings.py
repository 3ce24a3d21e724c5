"""What a cost-benchmark run compares and measures, checked before any model is built.

The methods are the presets of ``configs/methods.yaml``, the file the sweeps read, so a preset means the same
schedule in both (plus those of a user's presets files, ``preset_files``, as the sweep's ``--presets-file``).
Each is labelled by what it keeps at the benchmark's shape (``HiMAP 2/288 8/72``: layer / image tokens from
there on). Every pruned method that is not FastV gets a FastV partner, ``fastv=<preset>``, that keeps the number
of image tokens from K=2 whose formula FLOPs ratio on the benchmark's prompt is closest to the method's: timed in
the same rounds, the pair says what the method's own scoring costs at equal FLOPs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from himap_lmms.cost import Convention, prefill_cost
from himap_lmms.model_shapes import LLAVA_SHAPES, PREFIX_TOKENS, TEXT_TOKENS, LlavaShape
from himap_lmms.presets import METHOD_PRESETS, method_presets
from himap_lmms.pruning import PruningConfig, method_spec

# What a run compares unless told otherwise: the paper's settings of FastV and HiMAP and the later methods' presets.
DEFAULT_METHODS = (
    "vanilla",
    "fastv_50",
    "fastv_75",
    "himap_ref",
    "himap_25",
    "dart_20",
    "dart_10",
    "pdrop",
    "pdrop_25",
    "pdrop_25_prior",  # the same counts ranked by the previous layer: what the authors' ranking costs
    "visionzip_25",
    "visionzip_11",
    "pool_25",
    "pool_11",
)
REFERENCE = "himap_ref"  # the setting the goals are checked at
PAIR_PREFIX = "fastv="
PAIR_LAYER = 2  # FastV's K in the pairs, as in its paper and the fastv presets
# Matched by the swiglu formula: it counts what a LLaMA layer computes (the FLOP counter agrees with it exactly).
PAIR_CONVENTION: Convention = "swiglu"


class Method(NamedTuple):
    """One method of a run: its schedule, its label in the tables and, for a FastV partner, whose FLOPs it has."""

    config: PruningConfig
    label: str
    paired_with: str | None = None  # a FastV partner: the preset whose FLOPs it matches


def method_configs(preset_files: Iterable[str] = ()) -> dict[str, PruningConfig]:
    """The schedule of every method preset of ``configs/methods.yaml`` and then of ``preset_files``, in order."""
    return {name: PruningConfig.from_args(**args) for name, args in method_presets(files=preset_files).items()}


def formula_flops_ratio(config: PruningConfig, shape: LlavaShape, convention: Convention = PAIR_CONVENTION) -> float:
    """The prefill FLOPs ratio of ``config`` on the benchmark's prompt at ``shape``, by the formula, from the
    schedule alone."""
    return prefill_cost(
        prompt_tokens_per_layer(config, shape),
        shape.hidden,
        shape.intermediate,
        convention,
        prompt_tokens=PREFIX_TOKENS + TEXT_TOKENS + shape.num_image_tokens,
        kv_hidden=shape.kv_hidden,
    ).flops_ratio


def prompt_tokens_per_layer(config: PruningConfig, shape: LlavaShape) -> list[int]:
    """Tokens each decoder layer of ``shape`` runs on the benchmark's prompt under ``config``'s schedule."""
    text = PREFIX_TOKENS + TEXT_TOKENS
    return [text + n for n in config.image_tokens_per_layer(shape.num_image_tokens, shape.layers)]


def wants_fastv_partner(config: PruningConfig) -> bool:
    """Whether a method is timed against FastV at its FLOPs: every pruned one but FastV itself."""
    return bool(config.steps) and config.method != "fastv"


def equal_flops_fastv(config: PruningConfig, shape: LlavaShape) -> PruningConfig | None:
    """FastV from K=2 keeping the count of image tokens whose formula FLOPs ratio is the closest to ``config``'s
    (FastV's ratio grows with the count, so this is its cost solved for the method's, to one token); None when
    even one image token from K=2 costs more than ``config`` (few tokens from layer 0 on a shallow decoder)."""
    target = formula_flops_ratio(config, shape)
    if formula_flops_ratio(PruningConfig.from_args("fastv", k=PAIR_LAYER, keep=1), shape) > target:
        return None
    candidates = (
        PruningConfig.from_args("fastv", k=PAIR_LAYER, keep=keep) for keep in range(1, shape.num_image_tokens + 1)
    )
    return min(candidates, key=lambda fastv: abs(formula_flops_ratio(fastv, shape) - target))


def label(config: PruningConfig, shape: LlavaShape) -> str:
    """``HiMAP 2/288 8/72``: the method and, per step, its layer and the image tokens kept from there on at
    ``shape``; a step before layer 0 reads ``144 of 576``."""
    counts = config.image_tokens_per_layer(shape.num_image_tokens, shape.layers)
    steps = [
        f"{counts[0]} of {shape.num_image_tokens}" if step.layer == 0 else f"{step.layer}/{counts[step.layer]}"
        for step in config.for_depth(shape.layers).steps
    ]
    return " ".join([method_spec(config.method).title or config.method, *steps])


def bench_methods(
    names: tuple[str, ...], shape: LlavaShape, fastv_pairs: bool, preset_files: tuple[str, ...] = ()
) -> dict[str, Method]:
    """The presets ``names`` (of ``configs/methods.yaml`` or ``preset_files``) labelled at ``shape`` (``HiMAP
    2/288 8/72 (himap_ref)``), each pruned one that is not FastV followed by its equal-FLOPs FastV partner when
    ``fastv_pairs`` and FastV can cost that little."""
    presets = method_configs(preset_files)
    methods = {}
    for name in names:
        config = presets[name]
        methods[name] = Method(config, f"{label(config, shape)} ({name})" if config.steps else name)
        fastv = equal_flops_fastv(config, shape) if fastv_pairs and wants_fastv_partner(config) else None
        if fastv is not None:
            methods[PAIR_PREFIX + name] = Method(fastv, f"{label(fastv, shape)} (= {name}'s FLOPs)", name)
    return methods


DTYPES = ("bfloat16", "float16", "float32")


@dataclass(frozen=True)
class BenchSettings:
    """One benchmark run. Every field is checked on construction, so a bad value fails before minutes of work.

    The defaults are the CPU's; ``threads`` None keeps torch's thread count.
    """

    shape: str = "scaled"
    device: str = "cpu"
    dtype: str = "bfloat16"
    batch_sizes: tuple[int, ...] = (1, 2)
    repeats: int = 9  # the fewest rounds whose median interval (95 %) drops the two extremes
    warmup: int = 1
    new_tokens: int = 8
    reference_style: bool = False
    reference_repeats: int = 3
    threads: int | None = None
    methods: tuple[str, ...] = DEFAULT_METHODS
    preset_files: tuple[str, ...] = ()  # a user's method presets, besides configs/methods.yaml
    fastv_pairs: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if self.shape not in LLAVA_SHAPES:
            raise ValueError(f"shape={self.shape!r} is not one of {', '.join(LLAVA_SHAPES)}")
        check_device(self.device)
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r} is not one of {', '.join(DTYPES)}")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError(f"batch_sizes={list(self.batch_sizes)} must be one or more integers >= 1")
        minimums = {"repeats": 1, "warmup": 0, "new_tokens": 1, "reference_repeats": 1, "threads": 1}
        for name, least in minimums.items():
            value = getattr(self, name)
            if value is not None and value < least:
                raise ValueError(f"{name}={value} must be >= {least}")
        presets = method_configs(self.preset_files)
        unknown = [name for name in self.methods if name not in presets]
        if unknown:
            files = ", ".join(Path(path).name for path in (METHOD_PRESETS, *self.preset_files))
            raise ValueError(f"unknown methods {unknown}: choose from {', '.join(presets)} ({files})")
        if self.reference_style and REFERENCE not in self.methods:
            raise ValueError(f"methods={list(self.methods)} must include {REFERENCE} for the reference-style runs")
        if "vanilla" not in self.methods:
            raise ValueError(f"methods={list(self.methods)} must include vanilla: every speed-up is taken against it")


def check_device(device: str) -> torch.device:
    """``device`` as a ``torch.device`` if the benchmark can run there: the CPU or a CUDA device torch sees."""
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device={device!r} is not a device: use cpu, cuda or cuda:N") from None
    if parsed.type not in ("cpu", "cuda"):
        raise ValueError(f"device={device!r}: the benchmark runs on cpu, cuda or cuda:N")
    if parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device={device!r}: torch sees {torch.cuda.device_count()} CUDA device(s)")
    return parsed
