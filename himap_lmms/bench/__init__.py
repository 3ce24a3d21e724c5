"""What pruning buys in time, FLOPs and memory: the method presets side by side, one process, same inputs.

``scripts/bench_cost.py`` is its command line; docs/cost-benchmark.md has the method and the results.
Random-weight LLaVA shapes (:mod:`himap_lmms.model_shapes`) run through :meth:`PrunedLlava.generate`; the pruning's
own cost is read from the engine's ``torch.profiler`` labels.
"""

from himap_lmms.bench.measure import LiveTensorMemory
from himap_lmms.bench.report import markdown, write_outputs
from himap_lmms.bench.run import reassess, run_benchmark
from himap_lmms.bench.settings import DEFAULT_METHODS, REFERENCE, BenchSettings, bench_methods, check_device

__all__ = [
    "DEFAULT_METHODS",
    "REFERENCE",
    "BenchSettings",
    "LiveTensorMemory",
    "bench_methods",
    "check_device",
    "markdown",
    "reassess",
    "run_benchmark",
    "write_outputs",
]
