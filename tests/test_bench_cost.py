"""The cost benchmark's machinery on a tiny shape: its FLOPs counts agree, its files are written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import bench_cost  # noqa: E402


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench")
    return bench_cost.main(["--shape", "tiny", "--repeats", "1", "--new-tokens", "2", "--out", str(out)]), out


def test_measured_flops_equal_the_formula(bench) -> None:
    results, _ = bench
    assert {row["method"] for row in results["rows"]} == set(bench_cost.METHODS)
    for row in results["rows"]:
        # torch's count of the decoder layers against the formula with LLaMA's three FFN matrices
        assert row["flops_ratio_measured"] == pytest.approx(row["flops_ratio_swiglu"], rel=1e-6)
        assert row["flops_ratio_fastv"] <= row["flops_ratio_swiglu"] <= 1.0
    vanilla = next(row for row in results["rows"] if row["method"] == "vanilla")
    assert vanilla["prefill_speedup"] == 1.0 and vanilla["overhead_share"]["median"] == 0.0


def test_schedules_show_in_the_token_counts(bench) -> None:
    results, _ = bench
    rows = {row["method"]: row for row in results["rows"]}
    text = bench_cost.PREFIX + bench_cost.TEXT
    assert rows["himap_ref"]["tokens_per_layer"] == [text + 576] * 2 + [text + 288] * 6 + [text + 72] * 4
    assert rows["fastv_75"]["tokens_per_layer"] == [text + 576] * 2 + [text + 144] * 10


def test_outputs_are_written(bench) -> None:
    results, out = bench
    assert json.loads((out / "bench.json").read_text())["rows"] == json.loads(json.dumps(results["rows"]))
    table = (out / "bench.md").read_text()
    assert table.count("| 1 | ") == len(bench_cost.METHODS)
    assert table.count("PASS ") + table.count("MISS ") == 4
    image = np.asarray(Image.open(out / "bench.png").convert("L"))
    assert image.shape[0] > 300 and image.shape[1] > 300 and image.std() > 10
