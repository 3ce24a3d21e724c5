"""The cost benchmark's machinery on a tiny shape: its counts agree with the formula, its files are written.

The timings of a 64-wide model say nothing, so nothing here asserts a speed-up; what is checked is what the
benchmark's numbers rest on: the FLOP counter against the formula, the token schedules, the memory tracker and
the report files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import bench_cost  # noqa: E402

from himap_lmms.shapes import PREFIX_TOKENS, SHAPES, TEXT_TOKENS  # noqa: E402

BATCHES = (1, 2)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    settings = bench_cost.BenchSettings(
        shape="tiny",
        batch_sizes=BATCHES,
        repeats=1,
        warmup=0,
        new_tokens=2,
        reference_style=True,
        reference_repeats=1,
        threads=1,
        progress=False,
    )
    results = bench_cost.run_benchmark(settings)
    out = tmp_path_factory.mktemp("bench")
    bench_cost.write_outputs(results, out)
    return results, out


def test_results_have_every_method_and_batch(bench) -> None:
    results, _ = bench
    assert list(results["batches"]) == [str(b) for b in BATCHES]
    for rows in results["batches"].values():
        assert list(rows) == list(bench_cost.METHODS)
        vanilla = rows["vanilla"]["raw"]
        for row in rows.values():
            # A speed-up is vanilla's time over the method's, taken from the raw times of the same round.
            assert len(row["raw"]) == len(vanilla) == 1
            expected = vanilla[0]["prefill"] / row["raw"][0]["prefill"]
            assert row["prefill_speedup"]["median"] == pytest.approx(expected)
            assert row["total_speedup"]["median"] == pytest.approx(vanilla[0]["total"] / row["raw"][0]["total"])
        assert rows["vanilla"]["prefill_speedup"]["median"] == 1.0
        assert rows["vanilla"]["overhead_share"]["median"] == 0.0
        assert rows[bench_cost.REFERENCE]["overhead_s"]["median"] > 0
    assert results["reference_style"]["speedup_total"]["median"] > 0
    assert len(results["goals"]) == 5 * len(BATCHES)


def test_counted_flops_agree_with_the_formula(bench) -> None:
    results, _ = bench
    for batch, rows in results["batches"].items():
        for name in ("vanilla", "himap_ref", "himap_25", "fastv_75"):
            row = rows[name]
            assert abs(row["counted_vs_formula"]) < 0.05, (batch, name)
            # Stronger: the counter's absolute count is 2 FLOPs per multiply-accumulate of the formula, per sample.
            assert row["counted_vs_formula_absolute"] == pytest.approx(0.0, abs=1e-9), (batch, name)
            assert row["flops_ratio_formula_fastv"] <= row["flops_ratio_formula_swiglu"] <= 1.0
            assert "aten._scaled_dot_product_flash_attention_for_cpu" in row["attention_ops_counted"]
        # The whole prefill also has the unpruned vision tower, so its ratio is above the decoder's.
        assert rows["himap_ref"]["flops_ratio_whole_prefill_counted"] > rows["himap_ref"]["flops_ratio_counted"]


def test_schedules_show_in_the_token_counts(bench) -> None:
    results, _ = bench
    rows = results["batches"]["1"]
    text = PREFIX_TOKENS + TEXT_TOKENS
    assert rows["himap_ref"]["tokens_per_layer"] == [text + 576] * 2 + [text + 288] * 6 + [text + 72] * 4
    assert rows["fastv_75"]["tokens_per_layer"] == [text + 576] * 2 + [text + 144] * 10


def test_memory_is_measured(bench) -> None:
    results, _ = bench
    shape = SHAPES["tiny"]
    for batch, rows in results["batches"].items():
        for row in rows.values():
            # bf16 keys and values of every layer, for the tokens that layer kept
            expected = int(batch) * sum(row["tokens_per_layer"]) * 2 * shape.hidden * 2
            assert row["kv_cache_bytes"] == expected
            assert row["peak_live_tensor_bytes"] > row["kv_cache_bytes"]
        assert rows["himap_ref"]["kv_cache_bytes"] < rows["vanilla"]["kv_cache_bytes"]


def test_live_tensor_memory_counts_new_storages_only() -> None:
    existing = torch.zeros(1000)  # 4000 bytes made before: not counted, nor its views
    with bench_cost.LiveTensorMemory() as memory:
        view = existing.view(10, 100)
        first = torch.ones(1000)  # 4000
        del first
        second = torch.ones(500)  # 2000, after the first was freed
        third = second + view.flatten()[:500]  # 2000 more
    assert memory.peak == 4000
    assert memory.current == 4000
    assert third.shape == (500,)


def test_outputs_are_written(bench) -> None:
    results, out = bench
    assert json.loads((out / "bench.json").read_text())["batches"] == json.loads(json.dumps(results["batches"]))
    table = (out / "bench.md").read_text()
    assert table.count("PASS ") + table.count("MISS ") == len(results["goals"])
    assert "Reference style" in table and "HiMAP 2/288 8/72" in table
    image = np.asarray(Image.open(out / "bench.png").convert("L"))
    assert image.shape[0] > 300 and image.shape[1] > 300
    assert image.std() > 10  # not blank: axes, points and lines on white
