"""What a cost-benchmark run compares and measures, checked before any model is built."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from himap_lmms.pruning import PruningConfig
from himap_lmms.shapes import SHAPES


class Method(NamedTuple):
    config: PruningConfig
    label: str


# FastV's R is the share pruned; the engine's ratio is the share kept.
METHODS: dict[str, Method] = {
    "vanilla": Method(PruningConfig.none(), "vanilla"),
    "fastv_50": Method(PruningConfig.fastv(k=2, ratio=0.5), "FastV K=2 R=50%"),
    "fastv_75": Method(PruningConfig.fastv(k=2, ratio=0.25), "FastV K=2 R=75%"),
    "himap_ref": Method(PruningConfig.himap(k1=2, keep1=288, k2=8, keep2=72), "HiMAP 2/288 8/72 (reference)"),
    "himap_25": Method(PruningConfig.himap(k1=2, keep1=144, k2=8, keep2=36), "HiMAP 2/144 8/36"),
}
REFERENCE = "himap_ref"  # the setting the goals are checked at
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
    repeats: int = 5
    warmup: int = 1
    new_tokens: int = 8
    reference_style: bool = False
    reference_repeats: int = 3
    threads: int | None = None
    methods: tuple[str, ...] = tuple(METHODS)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"shape={self.shape!r} is not one of {', '.join(SHAPES)}")
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
        unknown = [name for name in self.methods if name not in METHODS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}: choose from {', '.join(METHODS)}")
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
