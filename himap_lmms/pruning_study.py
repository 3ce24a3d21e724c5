"""Scores of every pruning method at several budgets on each benchmark, against the unpruned model and a
blank-image control.

``scripts/pruning_study.py`` runs it on the testbed and its three held-out splits (ScienceQA, POPE, TextVQA;
:mod:`himap_lmms.synthetic`); :func:`run_study` is the whole study.

Budgets are the share of image tokens kept after the last pruning step (50 %, 25 %, 12.5 %, 6.25 %), the way
the paper names its settings: FastV keeps it from K=2; HiMAP keeps 4x that at K1=2 and the budget from K2=8 (the
paper's 50 % / 12.5 % shape); ``random`` is HiMAP's schedule with random ranking; ``input`` keeps evenly spaced
tokens from the first layer. The later methods run at the same budgets: ``dart`` from K=2 like FastV,
``pyramiddrop`` at ``stages=3`` (layers 3/6/9 of 12: its authors' 8/16/24 do not exist there) with the
per-stage ratio whose cube is the budget, ``visionzip`` before layer 0 like ``input``; DART and PyramidDrop keep
what their authors' rounding gives (DART: 4 image pivots plus 8 quotas of ``budget * 144 // 8``). The schedules
then cost differently, so each method but ``random`` also runs at HiMAP's *cost* (``fastv=cost``,
``input=cost``, ``dart=cost``, ``pyramiddrop=cost``, ``visionzip=cost``): with the ratio that gives it HiMAP's
mean share of image tokens over the layers (what the prefill FLOPs follow). A schedule that cannot come down
to that share gets a row saying so, not a run at another cost. The tables give every run's layer-mean share
and FLOPs ratio, and the plot shows each benchmark's score against both the final budget and the layer-mean
share.
``pool`` (each image's feature grid average-pooled before layer 0: the downsampling baseline) runs at the
square grid nearest each budget and, as ``pool=cost``, nearest HiMAP's share.
Questions are asked with each task's own prompt and scored with its own rule and headline metric
(:mod:`himap_lmms.benchmark_scoring`): exact match, POPE's F1, VQA accuracy.

Every run keeps its per-question replies (``pruning_study_answers.json``), so :mod:`himap_lmms.comparison`
reports, against vanilla on the same questions: the share of replies the scorer could parse (a headline
resting on fewer than half of them is flagged and left out of the plots and the comparisons with HiMAP),
agreement and flips, the difference with a paired bootstrap interval, and each row's accuracy on the budget's
hard subset (vanilla right, ``pool`` wrong). The rows at HiMAP's cost are also compared with HiMAP itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from tqdm import tqdm
from transformers import PreTrainedModel

from himap_lmms.benchmark_scoring import headline, reply_score
from himap_lmms.comparison import (
    Answer,
    Comparison,
    Difference,
    compare,
    format_difference,
    hard_subset,
    mean_difference,
    parsed,
    rests_on_minority,
    subset_accuracy,
)
from himap_lmms.compat import image_token_id
from himap_lmms.cost import prefill_cost
from himap_lmms.pareto_plot import Point, plot_pareto
from himap_lmms.probes import answer_token_id, saliency_probe
from himap_lmms.probes.report import write_saliency_report
from himap_lmms.prompting import chat_prompt
from himap_lmms.pruning import PrunedLlava, PruningConfig
from himap_lmms.synthetic import BENCHMARKS
from himap_lmms.synthetic.scenes import BACKGROUND

BUDGETS = (0.5, 0.25, 0.125, 0.0625)
STUDY_ROWS = (
    "himap",
    "random",
    "fastv",
    "fastv=cost",
    "input",
    "input=cost",
    "dart",
    "dart=cost",
    "pyramiddrop",
    "pyramiddrop=cost",
    "visionzip",
    "visionzip=cost",
    "pool",
    "pool=cost",
)
PYRAMID_STAGES = 3


@dataclass(frozen=True)
class Unreachable:
    """An equal-cost row that a method's schedule cannot give: the study reports ``reason`` instead of a run at
    another cost under the row's name."""

    reason: str


def layer_mean_share(config: PruningConfig, num_layers: int) -> float:
    """Mean over the decoder layers of the share of image tokens a ratio-only schedule lets into each layer."""
    shares = [1.0] * num_layers
    for step in config.for_depth(num_layers).steps:
        shares[step.layer :] = [step.ratio] * (num_layers - step.layer)
    return sum(shares) / num_layers


def pyramid_ratio_for_share(share: float, num_layers: int) -> float | Unreachable:
    """PyramidDrop's per-stage ratio (default stages) whose layer-mean share of image tokens is ``share``.

    The share grows with the ratio, from the first stage's layer over the depth (the layers before it see every
    image token, whatever the ratio) to 1, so bisection finds it when it exists. Rounded to four decimals: the
    engine rounds each stage to a whole count of the 144 tokens anyway, and the table reports the share run.
    """

    def share_at(ratio: float) -> float:
        return layer_mean_share(PruningConfig.from_args("pyramiddrop", stages=PYRAMID_STAGES, ratio=ratio), num_layers)

    floor = (
        PruningConfig.from_args("pyramiddrop", stages=PYRAMID_STAGES).for_depth(num_layers).steps[0].layer / num_layers
    )
    if share <= floor:
        return Unreachable(
            f"not run: its layers before the first stage alone hold {100 * floor:.1f} % of the image tokens, "
            f"above HiMAP's {100 * share:.1f} %"
        )
    low, high = 0.0, 1.0
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if share_at(middle) < share else (low, middle)
    return round(high, 4)


def methods_at(budget: float, num_layers: int) -> dict[str, PruningConfig | Unreachable]:
    """The configs of one budget; the ``=cost`` ones match HiMAP's layer-mean share of image tokens."""
    schedule = {"k1": 2, "ratio1": min(1.0, 4 * budget), "k2": 8, "ratio2": budget}
    himap = PruningConfig.from_args("himap", **schedule)
    share = layer_mean_share(himap, num_layers)
    # Layers 0 and 1 see every image token under both schedules, so this ratio lies in (0, 1]. DART prunes once
    # before the same layer, so the same ratio gives it about the same share (its authors' per-pivot quotas round
    # down and its 4 image pivots come on top); input and VisionZip prune before layer 0, so their ratio is the
    # share itself (VisionZip's rounded once, then split 54 : 10).
    fastv_ratio = (share * num_layers - 2) / (num_layers - 2)
    pyramid_cost = pyramid_ratio_for_share(share, num_layers)
    return {
        "himap": himap,
        "random": PruningConfig.from_args("random", **schedule, seed=0),
        "fastv": PruningConfig.from_args("fastv", k=2, ratio=budget),
        "fastv=cost": PruningConfig.from_args("fastv", k=2, ratio=fastv_ratio),
        "input": PruningConfig.from_args("input", ratio=budget),
        "input=cost": PruningConfig.from_args("input", ratio=share),
        "dart": PruningConfig.from_args("dart", k=2, ratio=budget),
        "dart=cost": PruningConfig.from_args("dart", k=2, ratio=fastv_ratio),
        # the last stage keeps ratio ** stages of the image tokens: the budget
        "pyramiddrop": PruningConfig.from_args(
            "pyramiddrop", stages=PYRAMID_STAGES, ratio=round(budget ** (1 / PYRAMID_STAGES), 4)
        ),
        "pyramiddrop=cost": (
            pyramid_cost
            if isinstance(pyramid_cost, Unreachable)
            else PruningConfig.from_args("pyramiddrop", stages=PYRAMID_STAGES, ratio=pyramid_cost)
        ),
        "visionzip": PruningConfig.from_args("visionzip", ratio=budget),
        "visionzip=cost": PruningConfig.from_args("visionzip", ratio=share),
        # pooling keeps a square grid: the one nearest the budget, or HiMAP's share
        "pool": PruningConfig.from_args("pool", ratio=budget),
        "pool=cost": PruningConfig.from_args("pool", ratio=share),
    }


def encode(processor: Any, docs: Sequence[dict], benchmark: str = "scienceqa", blank: bool = False) -> dict:
    """A batch of docs in their task's prompt, left-padded; ``blank`` swaps every image for a plain canvas."""
    ask = BENCHMARKS[benchmark].prompt
    prompts = [chat_prompt(processor.tokenizer, ask(doc), 1) for doc in docs]
    images = [Image.new("RGB", d["image"].size, BACKGROUND) if blank else d["image"] for d in docs]
    return dict(processor(images=images, text=prompts, return_tensors="pt", padding=True, add_special_tokens=False))


# Enough for every answer of the three benchmarks ("bottom middle" is two tokens) and its end of sequence.
MAX_NEW_TOKENS = 4


def evaluate(
    model: PreTrainedModel,
    processor: Any,
    docs: Sequence[dict],
    config: PruningConfig,
    batch_size: int,
    blank: bool = False,
    benchmark: str = "scienceqa",
) -> dict:
    """One config on ``docs`` of ``benchmark``: its headline ``score``, the share of docs answered right
    (``accuracy``, overall and per question category), the share of replies the scorer could parse, the mean
    FLOPs ratio and the mean share of image tokens per layer; and, for the comparisons, every doc's ``replies``
    and ``doc_scores``."""
    engine = PrunedLlava(model, config)
    category_of = BENCHMARKS[benchmark].category
    text_config = model.config.get_text_config()
    replies, scores, ratios, image_share = [], [], [], []
    by_category: dict[str, list[float]] = {}
    for start in range(0, len(docs), batch_size):
        chunk = docs[start : start + batch_size]
        inputs = encode(processor, chunk, benchmark, blank)
        out = engine.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, eos_token_id=processor.tokenizer.eos_token_id)
        texts = processor.tokenizer.batch_decode(out.sequences, skip_special_tokens=True)
        image_tokens = (inputs["input_ids"] == image_token_id(model.config)).sum(dim=1)
        text_tokens = inputs["attention_mask"].sum(dim=1) - image_tokens
        for doc, text, tokens, prompt, images, other in zip(
            chunk, texts, out.stats.tokens_per_layer, out.stats.prompt_tokens, image_tokens, text_tokens
        ):
            replies.append(text)
            scores.append(reply_score(benchmark, doc, text))
            by_category.setdefault(category_of(doc), []).append(scores[-1])
            cost = prefill_cost(
                tokens.tolist(), text_config.hidden_size, text_config.intermediate_size, prompt_tokens=int(prompt)
            )
            ratios.append(cost.flops_ratio)
            image_share.append(float((tokens - other).float().mean() / images))
    n = len(docs)
    return {
        "score": headline(benchmark, docs, replies),
        "accuracy": sum(scores) / n,
        "parse_rate": sum(parsed(benchmark, reply) for reply in replies) / n,
        "by_category": {category: sum(hits) / len(hits) for category, hits in sorted(by_category.items())},
        "flops_ratio": sum(ratios) / n,
        "image_tokens_kept": sum(image_share) / n,
        "replies": replies,
        "doc_scores": scores,
    }


MEAN = "mean"
# Rows compared with HiMAP at its cost, budget by budget (the study's "does HiMAP beat X at equal cost").
AGAINST_HIMAP = (
    "random",
    "fastv=cost",
    "dart=cost",
    "pyramiddrop=cost",
    "input=cost",
    "visionzip=cost",
    "pool=cost",
)
VANILLA = "vanilla"
HARD_SUBSET_METHOD = "pool"  # the hard subset of a budget: vanilla right, pooling at that budget wrong


def answers_of(name: str, docs: Sequence[dict], run: dict) -> list[Answer]:
    """A run's per-doc answers (doc keys are positions in the split), with POPE's gold answer for its F1."""
    truths = [doc["answer"] if name == "pope" else "" for doc in docs]
    return [
        Answer(str(index), reply, score, truth)
        for index, (reply, score, truth) in enumerate(zip(run["replies"], run["doc_scores"], truths))
    ]


def run_key(row: dict) -> str:
    """Where a row's answers are stored: ``<method>@<budget>``."""
    return f"{row['method']}@{row['budget']:g}"


def compare_benchmark(name: str, docs: Sequence[dict], result: dict) -> dict[str, Comparison]:
    """Every run of one benchmark against vanilla on the same docs: its parse rate and whether its headline
    rests on a minority of parsed replies (``flagged``), agreement, flips, the paired interval of the
    difference, and its accuracy on the budget's hard subset (``hard_subsets`` gives each subset's size).
    Fills the rows in place; returns the comparisons by run key, for the mean over benchmarks."""
    vanilla = answers_of(name, docs, result[VANILLA])
    result[VANILLA]["flagged"] = rests_on_minority(result[VANILLA]["parse_rate"])
    runs = {run_key(row): answers_of(name, docs, row) for row in result["rows"] if "replies" in row}
    hard = {
        row["budget"]: hard_subset(vanilla, runs[run_key(row)])
        for row in result["rows"]
        if row["method"] == HARD_SUBSET_METHOD and "replies" in row
    }
    result["hard_subsets"] = {f"{budget:g}": len(subset) for budget, subset in hard.items()}
    comparisons = {}
    for row in result["rows"]:
        if "replies" not in row:
            continue
        key = run_key(row)
        comparison = compare(name, runs[key], vanilla)
        comparisons[key] = comparison
        row["flagged"] = rests_on_minority(row["parse_rate"])
        row["vs_vanilla"] = comparison_record(comparison)
        if row["budget"] in hard:
            row["hard_accuracy"] = subset_accuracy(runs[key], hard[row["budget"]])
    return comparisons


def comparison_record(comparison: Comparison) -> dict:
    """A comparison as the JSON stores it (the difference and its bounds in the metric's units)."""
    difference = comparison.difference
    return {
        "agreement": comparison.agreement,
        "right_to_wrong": comparison.right_to_wrong,
        "wrong_to_right": comparison.wrong_to_right,
        "difference": difference.value,
        "low": difference.low,
        "high": difference.high,
        "outside_noise": difference.outside_noise,
    }


def mean_rows(rows_by_benchmark: dict[str, list[dict]]) -> list[dict]:
    """Per method and budget, the unweighted mean over the benchmarks of the score and of the costs (a row that
    could not run on one benchmark cannot run on any: the configs are the same); flagged when any benchmark's
    headline is."""
    names = list(rows_by_benchmark)
    merged = []
    for rows in zip(*rows_by_benchmark.values()):
        first = rows[0]
        if "unreachable" in first:
            merged.append(dict(first))
            continue
        merged.append(
            {
                "budget": first["budget"],
                "method": first["method"],
                **{
                    key: sum(row[key] for row in rows) / len(names)
                    for key in ("score", "flops_ratio", "image_tokens_kept")
                },
                "flagged": any(row.get("flagged", False) for row in rows),
            }
        )
    return merged


def plot(rows_by_benchmark: dict[str, list[dict]], vanilla: dict[str, float], path: Path) -> None:
    """One line of panels per benchmark and their mean: score against the final budget (left) and against the
    layer-mean share of image tokens (right). Flagged rows (a headline on a minority of parsed replies) are
    left out.

    Drawn on an Agg canvas with matplotlib's object API, as the probes' figures are: no global backend switch.
    """
    panels = {**rows_by_benchmark, MEAN: mean_rows(rows_by_benchmark)}
    figure = Figure(figsize=(13, 3.6 * len(panels)), dpi=100)
    FigureCanvasAgg(figure)
    grid = figure.subplots(len(panels), 2, sharey="row", squeeze=False)
    # One colour per method, its =cost row dashed in the same colour.
    bases = list(dict.fromkeys(method.removesuffix("=cost") for method in STUDY_ROWS))
    colours = {base: f"C{index}" for index, base in enumerate(bases)}
    for axes, (name, rows) in zip(grid, panels.items()):
        for method in STUDY_ROWS:
            points = sorted(
                (r["budget"], r["image_tokens_kept"], r["score"])
                for r in rows
                if r["method"] == method and "score" in r and not r.get("flagged", False)
            )
            base = method.removesuffix("=cost")
            style = {
                "marker": "o",
                "linestyle": "-" if base == method else "--",
                "color": colours[base],
                "label": method,
            }
            axes[0].plot([100 * b for b, _, _ in points], [100 * a for _, _, a in points], **style)
            axes[1].plot([100 * k for _, k, _ in points], [100 * a for _, _, a in points], **style)
        for axis in axes:
            axis.axhline(100 * vanilla[name], color="black", linestyle=":", label="vanilla")
            axis.set_xscale("log", base=2)
        axes[0].set_xticks([100 * b for b in BUDGETS], [f"{100 * b:g}" for b in BUDGETS])
        axes[0].set_ylabel(f"{name}: {'mean score' if name == MEAN else BENCHMARKS[name].headline} (%)")
    grid[-1][0].set_xlabel("image tokens kept after the last step (%)")
    grid[-1][1].set_xlabel("image tokens kept, mean over layers (%) ~ cost")
    grid[0][1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))  # beside the plot: 14 methods
    figure.suptitle("Testbed LLaVA: held-out scores under pruning (rows on a minority of parsed replies left out)")
    figure.tight_layout()
    figure.savefig(path)


def pareto_points(rows: Sequence[dict]) -> list[Point]:
    """The mean rows as points of the pareto plot: score and the paired interval of its difference to vanilla
    drawn around it, flagged rows left out."""
    return [
        Point(
            row["method"],
            f"{row['method']} {100 * row['budget']:g} %",
            row["flops_ratio"],
            row["score"],
            row["score"] + row["vs_vanilla"]["low"] - row["vs_vanilla"]["difference"],
            row["score"] + row["vs_vanilla"]["high"] - row["vs_vanilla"]["difference"],
        )
        for row in rows
        if "score" in row and not row["flagged"]
    ]


def _hard_cell(row: dict, hard_sizes: dict[str, int]) -> str:
    size = hard_sizes.get(f"{row['budget']:g}")
    if row.get("hard_accuracy") is None:
        return "" if size is None else f"– ({size})"
    return f"{100 * row['hard_accuracy']:.1f} % ({size})"


def table(
    name: str, num_docs: int, vanilla: dict, blank: dict, rows: Sequence[dict], hard_sizes: dict[str, int] | None = None
) -> str:
    """One benchmark as Markdown: vanilla and blank-image score, vanilla by category, one table row per run with
    its parse rate, accuracy, difference to vanilla with its paired 95 % interval (``*``: the interval excludes
    zero), agreement with vanilla, flips, and its accuracy on the budget's hard subset (its size in brackets).
    A row whose headline rests on a minority of parsed replies says so in its score cell."""
    metric = BENCHMARKS[name].headline
    hard_sizes = hard_sizes or {}
    lines = [
        f"{name} ({num_docs} questions, {metric}): vanilla {100 * vanilla['score']:.1f} %"
        + (f" ({100 * vanilla['parse_rate']:.1f} % of replies parsed)" if "parse_rate" in vanilla else "")
        + f"; with a blank image {100 * blank['score']:.1f} % (accuracy {100 * blank['accuracy']:.1f} %).",
        "",
        "Vanilla by category (share answered right): "
        + "; ".join(f"{category} {100 * acc:.1f} %" for category, acc in vanilla["by_category"].items())
        + ".",
        "",
        f"| kept after last step | method | {metric} | parsed | accuracy | Δ vs vanilla [95 % CI] | agreement | "
        "right→wrong / wrong→right | hard subset (n) | image tokens kept (layer mean) | FLOPs ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "unreachable" in row:
            lines.append(f"| {100 * row['budget']:g} % | {row['method']} | {row['unreachable']} | | | | | | | | |")
            continue
        score = f"{100 * row['score']:.1f} %" + (" (flagged: minority parsed)" if row.get("flagged") else "")
        versus = row.get("vs_vanilla")
        if versus is None:
            difference, agreement, flips = f"{100 * (row['score'] - vanilla['score']):+.1f}", "", ""
        else:
            difference = format_difference(_difference(versus))
            agreement = f"{100 * versus['agreement']:.1f} %"
            flips = f"{versus['right_to_wrong']} / {versus['wrong_to_right']}"
        parse = f"{100 * row['parse_rate']:.1f} %" if "parse_rate" in row else ""
        lines.append(
            f"| {100 * row['budget']:g} % | {row['method']} | {score} | {parse} | {100 * row['accuracy']:.1f} % | "
            f"{difference} | {agreement} | {flips} | {_hard_cell(row, hard_sizes)} | "
            f"{100 * row['image_tokens_kept']:.1f} % | {100 * row['flops_ratio']:.1f} % |"
        )
    return "\n".join(lines) + "\n"


def _difference(record: dict) -> Difference:
    return Difference(record["difference"], record["low"], record["high"])


def score_cell(row: dict) -> str:
    """``score (FLOPs ratio)``; ``flagged`` after a score resting on a minority of parsed replies."""
    flag = " flagged" if row.get("flagged") else ""
    return f"{100 * row['score']:.1f} % ({100 * row['flops_ratio']:.1f} %){flag}"


def difference_cell(row: dict) -> str:
    """The difference to vanilla with its paired interval; ``flagged`` rows show none (they rank nowhere)."""
    if row.get("flagged"):
        return "flagged"
    return format_difference(_difference(row["vs_vanilla"])) if "vs_vanilla" in row else ""


def table_by_budget(rows: Sequence[dict], cell: Callable[[dict], str] = score_cell) -> str:
    """The runs of one benchmark (or their mean), one line per method and one column per budget: ``cell`` of
    each run, by default the score and the FLOPs ratio in brackets (a row that could not run at its cost shows
    a dash; the long table says why)."""
    budgets = list(dict.fromkeys(row["budget"] for row in rows))
    cells = {(row["method"], row["budget"]): "–" if "unreachable" in row else cell(row) for row in rows}
    methods = list(dict.fromkeys(row["method"] for row in rows))
    lines = [
        "| method | " + " | ".join(f"{100 * b:g} % kept" for b in budgets) + " |",
        "|---|" + "---|" * len(budgets),
    ]
    lines += [f"| {m} | " + " | ".join(cells[m, b] for b in budgets) + " |" for m in methods]
    return "\n".join(lines) + "\n"


def study_benchmark(model: PreTrainedModel, processor: Any, name: str, docs: Sequence[dict], batch_size: int) -> dict:
    """Vanilla, the blank-image control and every method at every budget on one benchmark's ``docs``."""
    vanilla = evaluate(model, processor, docs, PruningConfig(), batch_size, benchmark=name)
    blank = evaluate(model, processor, docs, PruningConfig(), batch_size, blank=True, benchmark=name)
    rows = []
    layers = model.config.get_text_config().num_hidden_layers
    runs = [(b, method, config) for b in BUDGETS for method, config in methods_at(b, layers).items()]
    for budget, method, config in tqdm(runs, desc=f"{name}: methods x budgets"):
        row = {"budget": budget, "method": method}
        if isinstance(config, Unreachable):
            rows.append(row | {"config": None, "unreachable": config.reason})
            continue
        scores = evaluate(model, processor, docs, config, batch_size, benchmark=name)
        rows.append(row | {"config": config.describe(), **scores})
    return {"n": len(docs), VANILLA: vanilla, "blank_image": blank, "rows": rows}


def compare_study(splits: dict[str, Sequence[dict]], results: dict[str, dict]) -> list[dict]:
    """Every benchmark's comparisons (:func:`compare_benchmark`), then the mean rows with the difference of the
    mean to vanilla and its interval (the benchmarks' resamples combined)."""
    comparisons = {name: compare_benchmark(name, splits[name], results[name]) for name in results}
    means = mean_rows({name: result["rows"] for name, result in results.items()})
    for row in means:
        if "score" in row:
            difference = mean_difference([by_run[run_key(row)] for by_run in comparisons.values()])
            row["vs_vanilla"] = {"difference": difference.value, "low": difference.low, "high": difference.high}
    return means


def against_himap(splits: dict[str, Sequence[dict]], results: dict[str, dict]) -> dict[tuple[str, float], Difference]:
    """Each row of :data:`AGAINST_HIMAP` minus HiMAP at the same budget, mean over benchmarks, with its paired
    interval (the same docs, resampled alike for both rows). Rows that did not run, and flagged rows, get none."""
    differences = {}
    for budget in BUDGETS:
        for method in AGAINST_HIMAP:
            pairs = []
            for name, result in results.items():
                rows = {row["method"]: row for row in result["rows"] if row["budget"] == budget}
                pairs.append((name, rows[method], rows["himap"]))
            if any("replies" not in row or row["flagged"] for _, mine, himap in pairs for row in (mine, himap)):
                continue
            differences[method, budget] = mean_difference(
                [
                    compare(name, answers_of(name, splits[name], mine), answers_of(name, splits[name], himap))
                    for name, mine, himap in pairs
                ]
            )
    return differences


def against_himap_table(differences: dict[tuple[str, float], Difference]) -> str:
    """Markdown: one line per row compared with HiMAP, one column per budget."""
    lines = [
        "| method − himap | " + " | ".join(f"{100 * b:g} % kept" for b in BUDGETS) + " |",
        "|---|" + "---|" * len(BUDGETS),
    ]
    for method in AGAINST_HIMAP:
        cells = [format_difference(differences.get((method, budget))) or "–" for budget in BUDGETS]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def saliency_target(processor: Any, benchmark: str, doc: dict) -> int:
    """The token the saliency loss targets: the gold answer's first word ("A", "yes", "top")."""
    return answer_token_id(processor.tokenizer, BENCHMARKS[benchmark].answer(doc).split()[0])


def split_answers(results: dict[str, dict]) -> dict[str, dict]:
    """Move every run's per-doc replies and scores out of ``results`` (in place) into their own record, stored
    apart from the summary: ``{benchmark: {run key: {"replies": [...], "doc_scores": [...]}}}``."""
    answers = {}
    for name, result in results.items():
        runs = {VANILLA: result[VANILLA], "blank_image": result["blank_image"]}
        runs |= {run_key(row): row for row in result["rows"] if "replies" in row}
        answers[name] = {
            key: {field: run.pop(field) for field in ("replies", "doc_scores")} for key, run in runs.items()
        }
    return answers


def write_report(splits: dict[str, Sequence[dict]], results: dict[str, dict], out: Path) -> str:
    """The comparisons, tables, JSON and plots of a study whose runs hold their replies; returns the Markdown.
    Writes ``pruning_study.{md,json,png}``, ``pruning_study_pareto.png`` and the per-doc answers
    ``pruning_study_answers.json`` (doc keys are positions in the split)."""
    means = compare_study(splits, results)
    differences = against_himap(splits, results)
    vanilla = {name: result[VANILLA]["score"] for name, result in results.items()}
    vanilla[MEAN] = sum(vanilla.values()) / len(vanilla)
    markdown = (
        "Differences are paired: the same questions, resampled alike for both runs (2000 seeded bootstrap "
        "resamples, 95 % intervals; `*`: the interval excludes zero, the difference is outside noise). "
        "`flagged`: a headline resting on fewer than half of the replies parsed, left out of the mean's "
        "comparisons and the plots.\n\n"
    )
    if len(splits) > 1:
        markdown += (
            f"Mean over {', '.join(splits)} of the headline scores (FLOPs ratio), by budget:\n\n"
            + table_by_budget(means)
            + "\nThe mean's difference to vanilla, in points [95 % CI]:\n\n"
            + table_by_budget(means, difference_cell)
            + "\n"
        )
    markdown += (
        f"At HiMAP's cost: each row minus HiMAP at the same budget{', mean over the benchmarks' * (len(splits) > 1)}, "
        "in points [95 % CI]:\n\n" + against_himap_table(differences) + "\n"
    )
    for name, result in results.items():
        markdown += f"## {name}\n\nScore (FLOPs ratio) by budget:\n\n{table_by_budget(result['rows'])}\n"
        markdown += (
            table(name, result["n"], result[VANILLA], result["blank_image"], result["rows"], result["hard_subsets"])
            + "\n"
        )
    rows = {name: result["rows"] for name, result in results.items()}
    plot(rows, vanilla, out / "pruning_study.png")
    title = f"Testbed LLaVA: {'mean of ' * (len(splits) > 1)}{', '.join(splits)} against cost"
    plot_pareto(pareto_points(means), out / "pruning_study_pareto.png", title, vanilla[MEAN])
    answers = split_answers(results)
    (out / "pruning_study.md").write_text(markdown)
    (out / "pruning_study.json").write_text(json.dumps({"benchmarks": results, "mean": means}, indent=1))
    (out / "pruning_study_answers.json").write_text(json.dumps(answers))
    return markdown


def run_study(
    model: PreTrainedModel,
    processor: Any,
    splits: dict[str, Sequence[dict]],
    out: Path,
    batch_size: int,
    saliency_examples: int,
) -> str:
    """:func:`study_benchmark` on every split of ``splits`` (benchmark name -> docs), :func:`write_report`, then
    the saliency probe on the first ``saliency_examples`` of each (one report per benchmark,
    ``saliency_<name>/``, in ``out``). Returns the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    results = {name: study_benchmark(model, processor, name, docs, batch_size) for name, docs in splits.items()}
    markdown = write_report(splits, results, out)
    for name, docs in splits.items():
        records = []
        for doc in tqdm(docs[:saliency_examples], desc=f"{name}: saliency"):
            target = saliency_target(processor, name, doc)
            records.append(saliency_probe(model, encode(processor, [doc], name), target).to_dict())
        if records:
            write_saliency_report(records, out / f"saliency_{name}")
    return markdown
