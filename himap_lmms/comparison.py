"""Which differences between two runs are real: parse rates, agreement, paired intervals and the hard subset.

A table of bare accuracies invites ranking methods on noise, and a headline metric can hide that the model
stopped answering: lmms-eval's POPE F1 (``lmms_eval/tasks/pope/utils.py``, ``pope_aggregate_precision`` and
``pope_aggregate_recall``) counts only replies that are exactly "yes" or "no", so a run that answers almost
nothing parseable can score a perfect F1. This module works on per-document answers (the samples lmms-eval
logs with ``--log_samples``, or the pruning study's replies) and reports, for a row against a reference run on
the same documents:

- its **parse rate**: the share of replies the benchmark's scorer can read (:func:`parsed`); a headline
  resting on fewer than half of the replies is flagged (:func:`rests_on_minority`) and left out of rankings;
- **agreement**: the share of documents whose scored answer (:func:`answer_key`) equals the reference's, and
  the flips right-to-wrong and wrong-to-right (a document is right when it earns full credit);
- the **difference** of the benchmark's own metric (F1 included) with a **paired 95 % bootstrap interval**:
  the same resampled documents for both runs, seeded, so the interval is reproducible and a difference whose
  interval excludes zero is marked;
- the **hard subset**: the documents the reference answers right and a downsampling row answers wrong, where
  the pruned detail matters; a row's accuracy there is reported with the subset's size.

It imports neither torch nor lmms-eval, so the leaderboard can use it without the evaluation stack.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

KINDS = ("scienceqa", "pope", "textvqa", "vqav2", "gqa", "mme")
# Benchmarks whose headline is a sum of points rather than a share in [0, 1] (MME's perception score runs to
# 2000): a mean across benchmarks, or of their differences, leaves them out rather than let them swamp the rest.
POINTS_KINDS = ("mme",)
MINORITY = 0.5  # a headline resting on a parse rate below this is flagged
RESAMPLES = 2000
LEVEL = 0.95
SEED = 0

_OPTION = re.compile(r"[A-Z][.)]?")  # the ScienceQA scorer's accepted forms (himap_lmms/scienceqa.py)


def benchmark_kind(task: str) -> str | None:
    """The scoring rule a task uses, from its name (``pope_synth`` -> ``pope``); None for tasks this module
    has no parse rule for (their rows get no parse rate, the other comparisons still apply)."""
    for kind in KINDS:
        if task == kind or task.startswith(f"{kind}_"):
            return kind
    return None


def parsed(kind: str | None, reply: str) -> bool:
    """Whether the benchmark's scorer can read ``reply`` at all: POPE a bare yes or no, ScienceQA an option
    letter (``A``, ``A.``, ``A)``), MME a yes or no by its scorer's looser rule (:func:`mme_label`), TextVQA,
    VQAv2 and GQA anything non-empty."""
    if kind == "pope":
        return reply.lower().strip() in ("yes", "no")
    if kind == "scienceqa":
        return _OPTION.fullmatch(reply.strip()) is not None
    if kind == "mme":
        return mme_label(reply) != "other"
    if kind in ("textvqa", "vqav2", "gqa"):
        return bool(reply.strip())
    raise ValueError(f"no parse rule for benchmark kind {kind!r}: expected one of {', '.join(KINDS)}")


def answer_key(kind: str | None, reply: str) -> str:
    """The answer as the scorer reads it, so that two runs agree when they give the same answer in any
    spelling the scorer accepts (``"A."`` and ``"A"``; ``"Yes"`` and ``"yes"``; MME's ``"Yes, it is"``
    and ``"y"``)."""
    text = reply.strip()
    if kind == "scienceqa":
        return text[:1] if _OPTION.fullmatch(text) else text
    if kind == "mme":
        label = mme_label(text)
        return label if label != "other" else text.lower()
    return text.lower().rstrip(".")


def mme_label(reply: str) -> str:
    """``yes``, ``no`` or ``other``: how lmms-eval's MME scorer (``parse_pred_ans`` in
    ``lmms_eval/tasks/mme/utils.py``) reads a reply. Lower-cased, stripped and without full stops, the reply
    is a yes or no itself, a lone ``y`` or ``n``, or has ``yes`` (else ``no``) within its first four
    characters; anything else is neither."""
    text = reply.lower().strip().replace(".", "")
    if text in ("yes", "no"):
        return text
    if len(text) == 1:
        return {"y": "yes", "n": "no"}.get(text, "other")
    head = text[:4]
    return "yes" if "yes" in head else "no" if "no" in head else "other"


def on_share_scale(kind: str | None) -> bool:
    """Whether the benchmark's headline is a share in [0, 1] that a mean across benchmarks may include."""
    return kind not in POINTS_KINDS


@dataclass(frozen=True)
class Answer:
    """One document's reply and its score under the benchmark's own rule (1/0, or VQA accuracy in [0, 1]);
    ``truth`` is POPE's gold "yes"/"no", which its F1 needs; ``group`` and ``category`` are MME's image (its
    two questions score together) and category (its score sums the categories)."""

    doc: str
    reply: str
    score: float
    truth: str = ""
    group: str = ""
    category: str = ""

    @property
    def right(self) -> bool:
        return self.score >= 1.0


def parse_rate(kind: str | None, answers: Sequence[Answer]) -> float | None:
    """Share of replies the scorer can read; None without answers or without a parse rule for ``kind``."""
    if not answers or kind not in KINDS:
        return None
    return sum(parsed(kind, answer.reply) for answer in answers) / len(answers)


def rests_on_minority(rate: float | None) -> bool:
    """A headline computed from fewer than half of the replies describes the replies the scorer happened to
    read, not the run: such a row is flagged and left out of rankings, plots and "best" statements."""
    return rate is not None and rate < MINORITY


def metric_values(kind: str | None, answers: Sequence[Answer], weights: np.ndarray) -> np.ndarray:
    """The benchmark's headline over ``answers`` weighted by each row of ``weights`` ``(resamples, docs)``:
    POPE's F1 exactly as lmms-eval computes it (replies other than yes/no count nowhere), MME's score
    (:func:`mme_scores`), otherwise the mean score. One row of ones is the plain metric."""
    if kind == "mme":
        return mme_scores(answers, weights)
    if kind == "pope":
        predictions = [answer.reply.lower().strip() for answer in answers]
        truths = [answer.truth.lower().strip() for answer in answers]
        tp = weights @ np.array([t == "yes" and p == "yes" for p, t in zip(predictions, truths)], dtype=float)
        fp = weights @ np.array([t == "no" and p == "yes" for p, t in zip(predictions, truths)], dtype=float)
        fn = weights @ np.array([t == "yes" and p == "no" for p, t in zip(predictions, truths)], dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
            recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
            return np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    scores = np.array([answer.score for answer in answers], dtype=float)
    return (weights @ scores) / weights.sum(axis=1)


def mme_scores(answers: Sequence[Answer], weights: np.ndarray) -> np.ndarray:
    """MME's score as lmms-eval aggregates it (``mme_aggregate_results``): per category, the mean over its images
    of acc + acc+ (acc: the share of the image's two questions answered right, acc+: both right, each in
    points of 100), summed over the categories. ``weights`` count documents, the same for both questions of
    an image (:func:`resample_weights` with MME's units)."""
    pairs = defaultdict(list)
    for index, answer in enumerate(answers):
        pairs[answer.category, answer.group].append(index)
    scores = np.array([answer.score for answer in answers], dtype=float)
    # Each question carries half its image's acc + acc+, so a weighted sum over questions is one over images.
    contribution = np.zeros(len(answers))
    for (category, image), questions in pairs.items():
        if len(questions) != 2:
            raise ValueError(f"MME scores questions in pairs: image {image!r} of {category!r} has {len(questions)}")
        pair = scores[questions]
        contribution[questions] = (100.0 * pair.mean() + 100.0 * float((pair >= 1).all())) / 2
    categories = sorted({answer.category for answer in answers})
    member = np.array([[answer.category == category for category in categories] for answer in answers], dtype=float)
    images = weights @ member / 2
    return ((weights @ (contribution[:, None] * member)) / images).sum(axis=1)


def headline(kind: str | None, answers: Sequence[Answer]) -> float:
    """The benchmark's headline metric over every answer."""
    return float(metric_values(kind, answers, np.ones((1, len(answers))))[0])


def accuracy(answers: Sequence[Answer]) -> float | None:
    """Share of answers that earn full credit (POPE's accuracy next to its F1); None without answers."""
    return sum(answer.right for answer in answers) / len(answers) if answers else None


def resample_weights(
    n: int, seed: int = SEED, resamples: int = RESAMPLES, units: Sequence[tuple[str, str]] | None = None
) -> np.ndarray:
    """``(resamples, n)`` counts of each document in each bootstrap resample, drawn with ``seed``. Both runs of
    a comparison get the same counts: the interval is paired.

    ``units`` (MME's): each document's (stratum, unit). Units are drawn instead of documents, within each
    stratum, and a unit's documents share its count: MME's score is a sum of per-category means over images
    whose two questions score together, so its resamples keep every category's size and every pair whole.
    """
    rng = np.random.default_rng(seed)
    if units is None:
        return rng.multinomial(n, np.full(n, 1 / n), size=resamples).astype(float)
    weights = np.zeros((resamples, n))
    for stratum in sorted({s for s, _ in units}):
        members = sorted({u for s, u in units if s == stratum})
        counts = rng.multinomial(len(members), np.full(len(members), 1 / len(members)), size=resamples)
        column = {unit: i for i, unit in enumerate(members)}
        for doc, (s, unit) in enumerate(units):
            if s == stratum:
                weights[:, doc] = counts[:, column[unit]]
    return weights


@dataclass(frozen=True)
class Difference:
    """The row's metric minus the reference's, with the bounds of its paired bootstrap interval."""

    value: float
    low: float
    high: float

    @property
    def outside_noise(self) -> bool:
        """The interval excludes zero."""
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class Comparison:
    """A row against a reference on the same documents of one benchmark (``kind``)."""

    kind: str | None
    n: int
    agreement: float
    right_to_wrong: int
    wrong_to_right: int
    difference: Difference
    resampled: np.ndarray  # the difference in each resample, kept to combine benchmarks (:func:`mean_difference`)


def paired(row: Sequence[Answer], reference: Sequence[Answer]) -> tuple[list[Answer], list[Answer]]:
    """The two runs' answers in the same document order; ``ValueError`` unless they cover the same documents
    (a comparison over different documents would measure the documents, not the method)."""
    mine = {answer.doc: answer for answer in row}
    theirs = {answer.doc: answer for answer in reference}
    if len(mine) != len(row) or len(theirs) != len(reference):
        raise ValueError("a run lists the same document twice: its answers cannot be paired")
    if mine.keys() != theirs.keys():
        missing = sorted(theirs.keys() ^ mine.keys())
        raise ValueError(f"the runs answered different documents (e.g. {missing[0]!r}): no paired comparison")
    order = sorted(theirs)
    return [mine[doc] for doc in order], [theirs[doc] for doc in order]


def compare(
    kind: str | None,
    row: Sequence[Answer],
    reference: Sequence[Answer],
    seed: int = SEED,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
) -> Comparison:
    """``row`` against ``reference`` on one benchmark (see the module docstring); deterministic for a seed."""
    if not 0 < level < 1:
        raise ValueError(f"level={level!r} is out of range: it must be in (0, 1)")
    if resamples < 1:
        raise ValueError(f"resamples={resamples!r} is out of range: it must be >= 1")
    mine, theirs = paired(row, reference)
    if not mine:
        raise ValueError("no documents to compare")
    units = [(a.category, a.group) for a in theirs] if kind == "mme" else None
    weights = resample_weights(len(mine), seed, resamples, units)
    resampled = metric_values(kind, mine, weights) - metric_values(kind, theirs, weights)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(resampled, [tail, 100 - tail])
    return Comparison(
        kind=kind,
        n=len(mine),
        agreement=sum(answer_key(kind, a.reply) == answer_key(kind, b.reply) for a, b in zip(mine, theirs)) / len(mine),
        right_to_wrong=sum(b.right and not a.right for a, b in zip(mine, theirs)),
        wrong_to_right=sum(a.right and not b.right for a, b in zip(mine, theirs)),
        difference=Difference(headline(kind, mine) - headline(kind, theirs), float(low), float(high)),
        resampled=resampled,
    )


def mean_difference(comparisons: Sequence[Comparison], level: float = LEVEL) -> Difference | None:
    """The difference of the unweighted mean over benchmarks, with its interval: the benchmarks' documents are
    independent samples, so each resample's mean difference is the mean of the benchmarks' resampled ones.
    Benchmarks scored in points (MME) are left out, as the leaderboard's mean leaves them out; None when no
    benchmark is left."""
    if not comparisons:
        raise ValueError("no comparisons to average")
    comparisons = [c for c in comparisons if on_share_scale(c.kind)]
    if not comparisons:
        return None
    resampled = np.mean([c.resampled for c in comparisons], axis=0)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(resampled, [tail, 100 - tail])
    return Difference(sum(c.difference.value for c in comparisons) / len(comparisons), float(low), float(high))


def hard_subset(reference: Sequence[Answer], downsampled: Sequence[Answer]) -> frozenset[str]:
    """The documents ``reference`` (vanilla) answers right and ``downsampled`` (``pool``) answers wrong."""
    theirs, pooled = paired(reference, downsampled)
    return frozenset(a.doc for a, b in zip(theirs, pooled) if a.right and not b.right)


def subset_accuracy(answers: Sequence[Answer], docs: frozenset[str]) -> float | None:
    """Share of the documents ``docs`` that ``answers`` gets right; None for an empty subset."""
    chosen = [answer for answer in answers if answer.doc in docs]
    if docs and len(chosen) != len(docs):
        raise ValueError("the answers do not cover the hard subset's documents")
    return accuracy(chosen)


def format_difference(difference: Difference | None, scale: float = 100.0) -> str:
    """``-1.2 [-2.4, -0.2] *`` (points; ``*`` where the interval excludes zero), empty for no difference."""
    if difference is None or any(math.isnan(v) for v in (difference.value, difference.low, difference.high)):
        return ""
    mark = " *" if difference.outside_noise else ""
    return f"{scale * difference.value:+.1f} [{scale * difference.low:+.1f}, {scale * difference.high:+.1f}]{mark}"


def answers_from_samples(kind: str | None, metric: str, lines: Sequence[Mapping]) -> list[Answer]:
    """The answers of one lmms-eval samples file (``--log_samples``, one JSON object per line): the reply is
    the filtered response, the score the document's value of ``metric`` (a number, or a record with a
    ``score``), POPE's truth the logged target, MME's image and category those of its record. An MME question
    without ``metric`` belongs to its other score (perception or cognition) and is skipped."""
    answers = []
    for line in lines:
        reply = line.get("filtered_resps")
        while isinstance(reply, list):
            reply = reply[0] if reply else ""
        value = line.get(metric)
        if value is None and kind == "mme":
            continue
        record = value if isinstance(value, Mapping) else {}
        score = record.get("score") if isinstance(value, Mapping) else value
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise ValueError(f"document {line.get('doc_id')!r} has no numeric {metric!r} in its sample")
        answers.append(
            Answer(
                str(line.get("doc_id")),
                str(reply or ""),
                float(score),
                str(line.get("target", "")),
                group=str(record.get("question_id", "")),
                category=str(record.get("category", "")),
            )
        )
    return answers
