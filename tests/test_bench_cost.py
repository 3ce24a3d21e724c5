"""The cost benchmark (:mod:`himap_lmms.bench`) on a tiny shape: its methods are the presets, its counts agree with
the formula, each method's FastV partner has its FLOPs ratio, the pruning overhead comes from the engine's profiler
labels, its files are written, and bad arguments fail at once.

The timings of a 64-wide model say nothing, so nothing here asserts a speed-up; what is checked is what the
benchmark's numbers rest on: the FLOP counter against the formula, the token schedules, the memory tracker, the
profiler labels and the report files.
"""

from __future__ import annotations

import json
import runpy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from himap_lmms.bench import (
    DEFAULT_METHODS,
    REFERENCE,
    BenchSettings,
    LiveTensorMemory,
    bench_methods,
    reassess,
    run_benchmark,
    write_outputs,
)
from himap_lmms.bench.measure import count_prefill, pruning_overhead
from himap_lmms.bench.settings import PAIR_PREFIX, equal_flops_fastv, formula_flops_ratio, method_configs
from himap_lmms.cost import prefill_cost
from himap_lmms.model_shapes import LLAVA_SHAPES, PREFIX_TOKENS, TEXT_TOKENS, build_random_llava, prompt_inputs
from himap_lmms.pruning import PRUNING_LABELS, PruningConfig

REPO = Path(__file__).resolve().parent.parent
BATCHES = (1, 2)
TINY = LLAVA_SHAPES["tiny"]
BENCH_METHODS = bench_methods(DEFAULT_METHODS, TINY, fastv_pairs=True)
# The presets that are pruned and not FastV: each has an equal-FLOPs FastV partner, but VisionZip's and pooling's
# (144 and 64 of 576 tokens from layer 0) cost less on the tiny shape's 12 layers than FastV keeping one token from K=2.
BEFORE_LAYER_0 = ("visionzip_25", "visionzip_11", "pool_25", "pool_11")
PAIRED = ("himap_ref", "himap_25", "dart_20", "dart_10", "pdrop", "pdrop_25", "pdrop_25_prior", *BEFORE_LAYER_0)
PAIRED_AT_TINY = PAIRED[: -len(BEFORE_LAYER_0)]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    settings = BenchSettings(
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
    results = run_benchmark(settings)
    out = tmp_path_factory.mktemp("bench")
    write_outputs(results, out)
    return results, out


def test_results_have_every_method_and_batch(bench) -> None:
    results, _ = bench
    assert list(results["batches"]) == [str(b) for b in BATCHES]
    for rows in results["batches"].values():
        assert list(rows) == list(BENCH_METHODS)
        vanilla = rows["vanilla"]["raw"]
        for row in rows.values():
            # A speed-up is vanilla's time over the method's, taken from the raw times of the same round.
            assert len(row["raw"]) == len(vanilla) == 1
            expected = vanilla[0]["prefill"] / row["raw"][0]["prefill"]
            assert row["prefill_speedup"]["median"] == pytest.approx(expected)
            assert row["total_speedup"]["median"] == pytest.approx(vanilla[0]["total"] / row["raw"][0]["total"])
        assert rows["vanilla"]["prefill_speedup"]["median"] == 1.0
    assert results["reference_style"]["speedup_total"]["median"] > 0
    assert len(results["goals"]) == (5 + len(PAIRED_AT_TINY)) * len(BATCHES)
    assert results["unpaired"] == list(BEFORE_LAYER_0)


def test_methods_are_the_presets_with_their_fastv_partners() -> None:
    presets = yaml.safe_load((REPO / "configs" / "methods.yaml").read_text())
    assert list(BENCH_METHODS) == [
        n for name in DEFAULT_METHODS for n in (name, PAIR_PREFIX + name) if n in BENCH_METHODS
    ]
    assert [name for name in BENCH_METHODS if name.startswith(PAIR_PREFIX)] == [PAIR_PREFIX + n for n in PAIRED_AT_TINY]
    for name in DEFAULT_METHODS:
        assert BENCH_METHODS[name].config == PruningConfig.from_args(**presets[name]), name
    labels = {name: BENCH_METHODS[name].label for name in ("himap_ref", "pdrop", "visionzip_25", "dart_20")}
    assert labels == {  # the tiny shape has 576 image tokens and 12 layers
        "himap_ref": "HiMAP 2/288 8/72 (himap_ref)",
        "pdrop": "PyramidDrop 3/288 6/144 9/72 (pdrop)",
        "visionzip_25": "VisionZip 144 of 576 (visionzip_25)",
        "dart_20": "DART 2/116 (dart_20)",  # 4 image pivots + 8 pivots x 14
    }
    assert BENCH_METHODS[PAIR_PREFIX + "dart_20"].label.endswith("(= dart_20's FLOPs)")
    assert list(bench_methods(DEFAULT_METHODS, TINY, fastv_pairs=False)) == list(DEFAULT_METHODS)


@pytest.mark.parametrize(("shape", "paired"), [("tiny", PAIRED_AT_TINY), ("scaled", PAIRED), ("7b", PAIRED)])
def test_fastv_partners_have_their_methods_flops_ratio(shape: str, paired: tuple[str, ...]) -> None:
    """Each partner is FastV from K=2 at the count whose formula FLOPs ratio is closest to its method's: within
    half a token's worth of FastV's ratio, and no count is closer; a method cheaper than FastV can be has none."""
    shape = LLAVA_SHAPES[shape]
    presets = method_configs()
    for name in paired:
        fastv = equal_flops_fastv(presets[name], shape)
        (step,) = fastv.steps
        assert (fastv.method, step.layer) == ("fastv", 2)
        target = formula_flops_ratio(presets[name], shape)
        gaps = [
            abs(formula_flops_ratio(PruningConfig.from_args("fastv", k=2, keep=keep), shape) - target)
            for keep in (step.keep - 1, step.keep, step.keep + 1)
        ]
        assert gaps[1] <= min(gaps), name
        assert gaps[1] < 1e-3, (name, gaps[1])
    for name in set(PAIRED) - set(paired):
        assert equal_flops_fastv(presets[name], shape) is None
        assert formula_flops_ratio(presets[name], shape) < formula_flops_ratio(
            PruningConfig.from_args("fastv", k=2, keep=1), shape
        )


def test_equal_flops_rows_pair_the_rounds(bench) -> None:
    results, _ = bench
    for batch, rows in results["batches"].items():
        for name in PAIRED_AT_TINY:
            pair = rows[name]["vs_equal_flops_fastv"]
            partner = rows[pair["partner"]]
            assert pair["partner"] == PAIR_PREFIX + name
            # the partner's FLOPs ratio as measured by the engine's token counts, not only as solved for
            assert partner["flops_ratio_formula_swiglu"] == pytest.approx(
                rows[name]["flops_ratio_formula_swiglu"], abs=1e-3
            )
            assert partner["flops_ratio_counted"] == pytest.approx(rows[name]["flops_ratio_counted"], abs=1e-3)
            expected = rows[name]["raw"][0]["prefill"] / partner["raw"][0]["prefill"]
            assert pair["prefill_ratio"]["median"] == pytest.approx(expected)
            # one round is too few for a 95 % interval of the median: the goal stays undecided, never passes
            assert (pair["prefill_ratio"]["low"], pair["prefill_ratio"]["rounds"]) == (None, 1)
            assert pair["overhead_share"] == rows[name]["overhead_share"]["median"] > 0
        goals = [g for g in results["goals"] if g["goal"].startswith(f"batch {batch}: ")]
        pair_goals = [g for g in goals if "slower than FastV's at the same FLOPs" in g["goal"]]
        assert len(pair_goals) == len(PAIRED_AT_TINY)
        assert all(g["passed"] is None and "too few rounds" in g["value"] for g in pair_goals)


def test_overhead_is_read_from_the_engine_labels(bench) -> None:
    results, _ = bench
    for rows in results["batches"].values():
        assert rows["vanilla"]["overhead_share"]["median"] == 0.0  # no pruning step, no labelled time
        for name in BENCH_METHODS.keys() - {"vanilla"}:  # VisionZip's selection in the tower is under the score label
            row = rows[name]
            by_label = row["overhead_s_by_label"]
            assert list(by_label) == list(PRUNING_LABELS)
            assert all(seconds > 0 for seconds in by_label.values()), (name, by_label)
            profiled = row["raw_profiled"][0]
            assert row["overhead_share"]["median"] == pytest.approx(sum(by_label.values()) / profiled["prefill"])
            assert 0 < row["overhead_share"]["median"] < 1


def test_missing_labels_are_an_error(monkeypatch) -> None:
    shape = LLAVA_SHAPES["tiny"]
    model = build_random_llava(shape)
    inputs = prompt_inputs(shape, 1)
    # The engine's labels under other names: the bench must not report a zero overhead for a pruned method.
    monkeypatch.setattr("himap_lmms.bench.measure.PRUNING_LABELS", ("not.an.engine.label",))
    with pytest.raises(RuntimeError, match="no time under"):
        pruning_overhead(model, inputs, BENCH_METHODS[REFERENCE].config)


def test_counted_flops_agree_with_the_formula(bench) -> None:
    results, _ = bench
    for batch, rows in results["batches"].items():
        for name in BENCH_METHODS:
            row = rows[name]
            assert abs(row["counted_vs_formula"]) < 0.05, (batch, name)
            # Stronger: the counter's absolute count is 2 FLOPs per multiply-accumulate of the formula, per sample.
            assert row["counted_vs_formula_absolute"] == pytest.approx(0.0, abs=1e-9), (batch, name)
            assert row["flops_ratio_formula_fastv"] <= row["flops_ratio_formula_swiglu"] <= 1.0
            assert "aten._scaled_dot_product_flash_attention_for_cpu" in row["attention_ops_counted"]
        # The whole prefill also has the unpruned vision tower, so its ratio is above the decoder's.
        assert rows["himap_ref"]["flops_ratio_whole_prefill_counted"] > rows["himap_ref"]["flops_ratio_counted"]


def test_qwen2_5_vl_7b_shape_is_its_decoders() -> None:
    shape = LLAVA_SHAPES["qwen2.5-vl-7b"]
    assert (shape.layers, shape.hidden, shape.heads, shape.kv_heads, shape.intermediate) == (28, 3584, 28, 4, 18944)
    assert shape.kv_hidden == 512 and "4 key-value heads" in shape.describe()
    # the narrower key-value projections make the same schedule a smaller share of the prefill than without GQA
    mha = replace(shape, kv_heads=None)
    himap = PruningConfig.from_args("himap")
    assert formula_flops_ratio(himap, shape) < formula_flops_ratio(himap, mha)


def test_counted_flops_of_a_grouped_query_decoder_are_the_formulas() -> None:
    """The tiny shape with 4 query heads sharing 2 key-value heads (as Qwen2.5-VL-7B's 28 share 4): the counter's
    decoder FLOPs are 2 per multiply-accumulate of the formula with the narrower key-value width, pruned or not."""
    shape = replace(LLAVA_SHAPES["tiny"], kv_heads=2)
    assert shape.kv_hidden == shape.hidden // 2
    model = build_random_llava(shape)
    for config in (PruningConfig(), PruningConfig.from_args("himap")):
        counted = count_prefill(model, shape, prompt_inputs(shape, 1), config)
        prompt = PREFIX_TOKENS + shape.num_image_tokens + TEXT_TOKENS
        formula = prefill_cost(counted["tokens_per_layer"], shape.hidden, shape.intermediate, "swiglu", prompt, 32)
        assert counted["flops_decoder_layers"] == 2 * formula.flops


def test_schedules_show_in_the_token_counts(bench) -> None:
    results, _ = bench
    rows = results["batches"]["1"]
    text = PREFIX_TOKENS + TEXT_TOKENS
    assert rows["himap_ref"]["tokens_per_layer"] == [text + 576] * 2 + [text + 288] * 6 + [text + 72] * 4
    assert rows["fastv_75"]["tokens_per_layer"] == [text + 576] * 2 + [text + 144] * 10
    assert rows["pdrop"]["tokens_per_layer"] == [text + n for n in [576] * 3 + [288] * 3 + [144] * 3 + [72] * 3]
    assert rows["dart_20"]["tokens_per_layer"] == [text + 576] * 2 + [text + 116] * 10
    assert rows["visionzip_25"]["tokens_per_layer"] == [text + 144] * 12
    for name, method in BENCH_METHODS.items():  # what the engine ran is what the config's schedule says
        assert rows[name]["tokens_per_layer"] == [text + n for n in method.config.image_tokens_per_layer(576, 12)]


def test_memory_is_measured(bench) -> None:
    results, _ = bench
    shape = LLAVA_SHAPES["tiny"]
    for batch, rows in results["batches"].items():
        for row in rows.values():
            # bf16 keys and values of every layer, for the tokens that layer kept
            expected = int(batch) * sum(row["tokens_per_layer"]) * 2 * shape.hidden * 2
            assert row["kv_cache_bytes"] == expected
            assert row["peak_live_tensor_bytes"] > row["kv_cache_bytes"]
        assert rows["himap_ref"]["kv_cache_bytes"] < rows["vanilla"]["kv_cache_bytes"]


def test_live_tensor_memory_counts_new_storages_only() -> None:
    existing = torch.zeros(1000)  # 4000 bytes made before: not counted, nor its views
    with LiveTensorMemory() as memory:
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
    assert sum(table.count(f"{word} ") for word in ("PASS", "MISS", "UNSURE")) == len(results["goals"])
    assert "Reference style" in table and "HiMAP 2/288 8/72" in table
    image = np.asarray(Image.open(out / "bench.png").convert("L"))
    assert image.shape[0] > 300 and image.shape[1] > 300
    assert image.std() > 10  # not blank: axes, points and lines on white


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("repeats", 0, "repeats=0 must be >= 1"),
        ("warmup", -1, "warmup=-1 must be >= 0"),
        ("new_tokens", 0, "new_tokens=0 must be >= 1"),
        ("threads", 0, "threads=0 must be >= 1"),
        ("batch_sizes", (1, 0), r"batch_sizes=\[1, 0\] must be one or more integers >= 1"),
        ("batch_sizes", (), r"batch_sizes=\[\] must be"),
        ("methods", ("vanilla", "fastv_9"), r"unknown methods \['fastv_9'\]: choose from vanilla, fastv_50"),
        ("methods", ("himap_ref",), "must include vanilla"),
        ("shape", "huge", "shape='huge' is not one of tiny, scaled, 7b, 13b"),
        ("dtype", "float8", "dtype='float8' is not one of bfloat16, float16, float32"),
        ("device", "gpu", "device='gpu' is not a device: use cpu, cuda or cuda:N"),
        ("device", "meta", "device='meta': the benchmark runs on cpu, cuda or cuda:N"),
        ("device", f"cuda:{torch.cuda.device_count()}", "torch sees"),
    ],
)
def test_bad_settings_name_the_value(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BenchSettings(**{field: value})


def test_reference_style_needs_the_reference_setting() -> None:
    with pytest.raises(ValueError, match="must include himap_ref for the reference-style runs"):
        BenchSettings(methods=("vanilla", "fastv_50"), reference_style=True)


@pytest.fixture(scope="module")
def cli() -> dict:
    """The command line's functions, loaded from the script as a module (it is not importable by name)."""
    return runpy.run_path(str(REPO / "scripts" / "bench_cost.py"), run_name="bench_cost_cli")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--repeats", "0"], "repeats=0 must be >= 1"),
        (["--methods", "vanilla,fastv_9"], "unknown methods ['fastv_9']: choose from vanilla, fastv_50"),
        (["--batch-sizes", "0,x"], "argument --batch-sizes: '0,x' is not a comma-separated list of integers"),
        (["--batch-sizes", "0,8"], "batch_sizes=[0, 8] must be one or more integers >= 1"),
        (["--device", "gpu"], "device='gpu' is not a device: use cpu, cuda or cuda:N"),
        (["--shape", "huge"], "argument --shape: invalid choice: 'huge'"),
    ],
)
def test_bad_arguments_fail_before_any_work(cli, capsys, monkeypatch, argv: list[str], message: str) -> None:
    def no_work(settings):
        raise AssertionError("the benchmark started despite a bad argument")

    monkeypatch.setitem(cli["main"].__globals__, "run_benchmark", no_work)
    with pytest.raises(SystemExit) as exit_info:
        cli["main"](argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_arguments_fill_the_settings(cli, tmp_path) -> None:
    settings, out = cli["parse_args"](["--shape", "tiny", "--batch-sizes", "1,8", "--out", str(tmp_path)])
    assert (settings.shape, settings.batch_sizes, settings.threads, out) == ("tiny", (1, 8), 1, tmp_path)
    assert cli["parse_args"]([])[1] == REPO / "results" / "bench" / "scaled-cpu"
    assert cli["parse_args"]([])[0].fastv_pairs
    assert not cli["parse_args"](["--no-fastv-pairs"])[0].fastv_pairs
    mine = tmp_path / "mine.yaml"
    mine.write_text("fastv_90: {method: fastv, k: 2, ratio: 0.9}\n")
    settings, _ = cli["parse_args"](["--methods", "vanilla,fastv_90", "--presets-file", str(mine)])
    assert settings.preset_files == (str(mine.resolve()),) and settings.methods == ("vanilla", "fastv_90")


def test_reassess_recomputes_the_pairs_and_goals_from_the_recorded_rounds(bench) -> None:
    results, _ = bench
    recorded = json.loads(json.dumps(results))
    for rows in recorded["batches"].values():  # as a file written before the interval existed would read
        for row in rows.values():
            if "vs_equal_flops_fastv" in row:
                row["vs_equal_flops_fastv"]["prefill_ratio"] = {"median": 0.0}
    recorded["goals"] = []
    reassessed = reassess(recorded)
    assert reassessed["batches"] == json.loads(json.dumps(results["batches"]))
    assert reassessed["goals"] == results["goals"]
    # computed from the rounds, not copied: a method twice as slow in its round is twice its partner's time
    name = PAIRED_AT_TINY[0]
    rows = recorded["batches"][str(BATCHES[0])]
    rows[name]["raw"] = [run | {"prefill": 2 * run["prefill"]} for run in rows[name]["raw"]]
    before = results["batches"][str(BATCHES[0])][name]["vs_equal_flops_fastv"]["prefill_ratio"]["median"]
    after = reassess(recorded)["batches"][str(BATCHES[0])][name]["vs_equal_flops_fastv"]["prefill_ratio"]["median"]
    assert after == pytest.approx(2 * before)


def test_report_rewrites_a_recorded_run_without_running(bench, cli, monkeypatch, tmp_path) -> None:
    results, out = bench
    monkeypatch.setitem(cli["main"].__globals__, "run_benchmark", lambda settings: pytest.fail("it ran"))
    cli["main"](["--report", str(out / "bench.json"), "--out", str(tmp_path)])
    assert (tmp_path / "bench.md").read_text() == (out / "bench.md").read_text()
    assert json.loads((tmp_path / "bench.json").read_text())["goals"] == results["goals"]


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read it as JSON"), ("{", "cannot read it as JSON"), ('{"a": 1}', "not a bench.json")],
)
def test_report_of_a_bad_file_names_it(cli, capsys, tmp_path, content: str | None, message: str) -> None:
    path = tmp_path / "bench.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit):
        cli["main"](["--report", str(path)])
    assert f"--report {path}: {message}" in capsys.readouterr().err
