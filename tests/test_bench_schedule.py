"""``scripts/bench_schedule.py``: a preset's token schedule timed against its equal-FLOPs FastV's, decoder only."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
import torch

from himap_lmms.bench.settings import PAIR_PREFIX, formula_flops_ratio, method_configs
from himap_lmms.compat import language_model_of
from himap_lmms.cost import prefill_cost
from himap_lmms.model_shapes import LLAVA_SHAPES, PREFIX_TOKENS, TEXT_TOKENS, build_random_llava

REPO = Path(__file__).resolve().parent.parent
TINY = LLAVA_SHAPES["tiny"]
PROMPT = PREFIX_TOKENS + TEXT_TOKENS + TINY.num_image_tokens


@pytest.fixture(scope="module")
def cli() -> dict:
    return runpy.run_path(str(REPO / "scripts" / "bench_schedule.py"), run_name="bench_schedule_cli")


def test_schedules_are_the_presets_and_its_partners_at_equal_flops(cli) -> None:
    counts = cli["schedules"]("pdrop_25", TINY)
    method, partner = counts["pdrop_25"], counts[PAIR_PREFIX + "pdrop_25"]
    text = PREFIX_TOKENS + TEXT_TOKENS
    assert method == [
        text + n for n in method_configs()["pdrop_25"].image_tokens_per_layer(TINY.num_image_tokens, TINY.layers)
    ]
    assert len(set(method)) == 4 and partner[:2] == [PROMPT, PROMPT] and len(set(partner[2:])) == 1

    def ratio(tokens: list[int]) -> float:
        return prefill_cost(tokens, TINY.hidden, TINY.intermediate, "swiglu", PROMPT, TINY.kv_hidden).flops_ratio

    assert ratio(method) == pytest.approx(formula_flops_ratio(method_configs()["pdrop_25"], TINY))
    assert ratio(partner) == pytest.approx(ratio(method), abs=0.01)


def test_each_layer_runs_its_scheduled_count(cli) -> None:
    model = build_random_llava(TINY, torch.bfloat16, torch.device("cpu"), "sdpa")
    language_model = language_model_of(model)
    seen: list[int] = []
    for layer in language_model.layers:
        layer.register_forward_pre_hook(lambda module, args, kwargs: seen.append(args[0].shape[1]), with_kwargs=True)
    tokens = cli["schedules"]("pdrop_25", TINY)["pdrop_25"]
    hidden = torch.randn(1, PROMPT, TINY.hidden, dtype=torch.bfloat16)
    assert cli["decoder_seconds"](language_model, hidden, tokens) > 0
    assert seen == tokens


def test_main_reports_the_median_ratio_with_its_interval(cli, capsys) -> None:
    result = cli["main"](["--preset", "pdrop_25", "--shape", "tiny", "--rounds", "6"])
    ratio = result["decoder_time_ratio"]
    assert ratio["rounds"] == 6 and ratio["low"] <= ratio["median"] <= ratio["high"]
    assert f"{ratio['median']:.3f} (95 % interval" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--preset", "pdrop_99"], "--preset 'pdrop_99' is not a preset"),
        (["--preset", "pdrop_25", "--rounds", "5"], "--rounds 5: a 95 % interval of the median needs 6 rounds"),
        (["--preset", "fastv_50", "--shape", "tiny"], "preset 'fastv_50' has no equal-FLOPs FastV partner"),
    ],
)
def test_bad_arguments_name_the_value(cli, capsys, argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit):
        cli["main"](argv)
    assert message in capsys.readouterr().err
