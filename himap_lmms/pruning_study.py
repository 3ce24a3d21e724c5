"""Scores of every pruning method at several budgets on each benchmark, against the unpruned model and a
blank-image control.

``scripts/pruning_study.py`` runs it on the testbed and its three held-out splits (ScienceQA, POPE, TextVQA;
:mod:`himap_lmms.synthetic`); :func:`run_study` is the whole study.

Budgets are the share of image tokens kept after the last pruning step (50 %, 25 %, 12.5 %, 6.25 %), the way
the paper names its settings: FastV keeps it from K=2; HiMAP keeps 4x that at K1=2 and the budget from K2=8 (the
paper's 50 % / 12.5 % shape); ``random`` is HiMAP's schedule with random ranking; ``input`` keeps evenly spaced
tokens from the first layer. The later methods run at the same budgets: ``dart`` from K=2 like FastV,
``pyramiddrop`` at its three default stages (layers 3/6/9 of 12) with the per-stage ratio whose cube is the
budget, ``visionzip`` before layer 0 like ``input``. The schedules then cost differently, so each method but
``random`` also runs at HiMAP's *cost* (``fastv=cost``, ``input=cost``, ``dart=cost``, ``pyramiddrop=cost``,
``visionzip=cost``): with the ratio that gives it HiMAP's mean share of image tokens over the layers (what the
prefill FLOPs follow). A schedule that cannot come down to that share gets a row saying so, not a run at
another cost. The tables give every run's layer-mean share and FLOPs ratio, and the plot shows each benchmark's
score against both the final budget and the layer-mean share.
Questions are asked with each task's own prompt and scored with its own rule and headline metric
(:mod:`himap_lmms.benchmark_scoring`): exact match, POPE's F1, VQA accuracy.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from tqdm import tqdm
from transformers import PreTrainedModel

from himap_lmms.benchmark_scoring import headline, reply_score
from himap_lmms.compat import image_token_id
from himap_lmms.cost import prefill_cost
from himap_lmms.probes import answer_token_id, saliency_probe
from himap_lmms.probes.report import write_saliency_report
from himap_lmms.prompting import chat_prompt
from himap_lmms.pruning import PrunedLlava, PruningConfig
from himap_lmms.synthetic import BENCHMARKS
from himap_lmms.synthetic.scenes import BACKGROUND

BUDGETS = (0.5, 0.25, 0.125, 0.0625)
METHODS = (
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
        return layer_mean_share(PruningConfig.pyramiddrop(stages=PYRAMID_STAGES, ratio=ratio), num_layers)

    floor = PruningConfig.pyramiddrop(stages=PYRAMID_STAGES).for_depth(num_layers).steps[0].layer / num_layers
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
    himap = PruningConfig.himap(**schedule)
    share = layer_mean_share(himap, num_layers)
    # Layers 0 and 1 see every image token under both schedules, so this ratio lies in (0, 1]. DART prunes once
    # before the same layer, so the same ratio gives it the same share; input and VisionZip prune before layer 0,
    # so their ratio is the share itself.
    fastv_ratio = (share * num_layers - 2) / (num_layers - 2)
    pyramid_cost = pyramid_ratio_for_share(share, num_layers)
    return {
        "himap": himap,
        "random": PruningConfig.random(**schedule, seed=0),
        "fastv": PruningConfig.fastv(k=2, ratio=budget),
        "fastv=cost": PruningConfig.fastv(k=2, ratio=fastv_ratio),
        "input": PruningConfig.input(ratio=budget),
        "input=cost": PruningConfig.input(ratio=share),
        "dart": PruningConfig.dart(k=2, ratio=budget),
        "dart=cost": PruningConfig.dart(k=2, ratio=fastv_ratio),
        # the last stage keeps ratio ** stages of the image tokens: the budget
        "pyramiddrop": PruningConfig.pyramiddrop(stages=PYRAMID_STAGES, ratio=round(budget ** (1 / PYRAMID_STAGES), 4)),
        "pyramiddrop=cost": (
            pyramid_cost
            if isinstance(pyramid_cost, Unreachable)
            else PruningConfig.pyramiddrop(stages=PYRAMID_STAGES, ratio=pyramid_cost)
        ),
        "visionzip": PruningConfig.visionzip(ratio=budget),
        "visionzip=cost": PruningConfig.visionzip(ratio=share),
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
    (``accuracy``, overall and per question category), the mean FLOPs ratio and the mean share of image tokens
    per layer."""
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
        "by_category": {category: sum(hits) / len(hits) for category, hits in sorted(by_category.items())},
        "flops_ratio": sum(ratios) / n,
        "image_tokens_kept": sum(image_share) / n,
    }


MEAN = "mean"


def mean_rows(rows_by_benchmark: dict[str, list[dict]]) -> list[dict]:
    """Per method and budget, the unweighted mean over the benchmarks of the score and of the costs (a row that
    could not run on one benchmark cannot run on any: the configs are the same)."""
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
            }
        )
    return merged


def plot(rows_by_benchmark: dict[str, list[dict]], vanilla: dict[str, float], path: Path) -> None:
    """One line of panels per benchmark and their mean: score against the final budget (left) and against the
    layer-mean share of image tokens (right).

    Drawn on an Agg canvas with matplotlib's object API, as the probes' figures are: no global backend switch.
    """
    panels = {**rows_by_benchmark, MEAN: mean_rows(rows_by_benchmark)}
    figure = Figure(figsize=(13, 3.6 * len(panels)), dpi=100)
    FigureCanvasAgg(figure)
    grid = figure.subplots(len(panels), 2, sharey="row", squeeze=False)
    # One colour per method, its =cost row dashed in the same colour.
    bases = list(dict.fromkeys(method.removesuffix("=cost") for method in METHODS))
    colours = {base: f"C{index}" for index, base in enumerate(bases)}
    for axes, (name, rows) in zip(grid, panels.items()):
        for method in METHODS:
            points = sorted(
                (r["budget"], r["image_tokens_kept"], r["score"])
                for r in rows
                if r["method"] == method and "score" in r
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
    grid[0][1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))  # beside the plot: 12 methods
    figure.suptitle("Testbed LLaVA: held-out scores under pruning")
    figure.tight_layout()
    figure.savefig(path)


def table(name: str, num_docs: int, vanilla: dict, blank: dict, rows: Sequence[dict]) -> str:
    """One benchmark as Markdown: vanilla and blank-image score, vanilla by category, one table row per run."""
    metric = BENCHMARKS[name].headline
    lines = [
        f"{name} ({num_docs} questions, {metric}): vanilla {100 * vanilla['score']:.1f} %; "
        f"with a blank image {100 * blank['score']:.1f} % (accuracy {100 * blank['accuracy']:.1f} %).",
        "",
        "Vanilla by category (share answered right): "
        + "; ".join(f"{category} {100 * acc:.1f} %" for category, acc in vanilla["by_category"].items())
        + ".",
        "",
        f"| kept after last step | method | {metric} | Δ vs vanilla | image tokens kept (layer mean) | FLOPs ratio |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "unreachable" in row:
            lines.append(f"| {100 * row['budget']:g} % | {row['method']} | {row['unreachable']} | | | |")
            continue
        lines.append(
            f"| {100 * row['budget']:g} % | {row['method']} | {100 * row['score']:.1f} % | "
            f"{100 * (row['score'] - vanilla['score']):+.1f} | {100 * row['image_tokens_kept']:.1f} % | "
            f"{100 * row['flops_ratio']:.1f} % |"
        )
    return "\n".join(lines) + "\n"


def table_by_budget(rows: Sequence[dict]) -> str:
    """The runs of one benchmark (or their mean), one line per method and one column per budget: the score,
    then the FLOPs ratio in brackets (a row that could not run at its cost shows a dash; the long table says
    why)."""
    budgets = list(dict.fromkeys(row["budget"] for row in rows))
    cells = {
        (row["method"], row["budget"]): "–"
        if "unreachable" in row
        else f"{100 * row['score']:.1f} % ({100 * row['flops_ratio']:.1f} %)"
        for row in rows
    }
    methods = list(dict.fromkeys(row["method"] for row in rows))
    lines = [
        "| method | " + " | ".join(f"{100 * b:g} % kept" for b in budgets) + " |",
        "|---|" + "---|" * len(budgets),
    ]
    lines += [f"| {m} | " + " | ".join(cells[m, b] for b in budgets) + " |" for m in methods]
    return "\n".join(lines) + "\n"


def study_benchmark(model: PreTrainedModel, processor: Any, name: str, docs: Sequence[dict], batch_size: int) -> dict:
    """Vanilla, the blank-image control and every method at every budget on one benchmark's ``docs``."""
    vanilla = evaluate(model, processor, docs, PruningConfig.none(), batch_size, benchmark=name)
    blank = evaluate(model, processor, docs, PruningConfig.none(), batch_size, blank=True, benchmark=name)
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
    return {"n": len(docs), "vanilla": vanilla, "blank_image": blank, "rows": rows}


def saliency_target(processor: Any, benchmark: str, doc: dict) -> int:
    """The token the saliency loss targets: the gold answer's first word ("A", "yes", "top")."""
    return answer_token_id(processor.tokenizer, BENCHMARKS[benchmark].answer(doc).split()[0])


def run_study(
    model: PreTrainedModel,
    processor: Any,
    splits: dict[str, Sequence[dict]],
    out: Path,
    batch_size: int,
    saliency_examples: int,
) -> str:
    """:func:`study_benchmark` on every split of ``splits`` (benchmark name -> docs); then the saliency probe on
    the first ``saliency_examples`` of each. Writes ``pruning_study.{md,json,png}`` and one saliency report per
    benchmark (``saliency_<name>/``) to ``out`` and returns the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    results = {name: study_benchmark(model, processor, name, docs, batch_size) for name, docs in splits.items()}
    rows = {name: result["rows"] for name, result in results.items()}
    markdown = ""
    if len(splits) > 1:
        markdown += (
            f"Mean over {', '.join(splits)} of the headline scores (FLOPs ratio), by budget:\n\n"
            + table_by_budget(mean_rows(rows))
            + "\n"
        )
    for name, result in results.items():
        markdown += f"## {name}\n\nScore (FLOPs ratio) by budget:\n\n{table_by_budget(result['rows'])}\n"
        markdown += table(name, result["n"], result["vanilla"], result["blank_image"], result["rows"]) + "\n"
    (out / "pruning_study.md").write_text(markdown)
    (out / "pruning_study.json").write_text(json.dumps({"benchmarks": results}, indent=1))
    vanilla = {name: result["vanilla"]["score"] for name, result in results.items()}
    vanilla[MEAN] = sum(vanilla.values()) / len(vanilla)
    plot(rows, vanilla, out / "pruning_study.png")

    for name, docs in splits.items():
        records = []
        for doc in tqdm(docs[:saliency_examples], desc=f"{name}: saliency"):
            target = saliency_target(processor, name, doc)
            records.append(saliency_probe(model, encode(processor, [doc], name), target).to_dict())
        if records:
            write_saliency_report(records, out / f"saliency_{name}")
    return markdown
