"""Each synthetic benchmark scored as its lmms-eval task scores it, outside lmms-eval (the pruning study's loop).

ScienceQA uses this repository's task rule (:func:`himap_lmms.scienceqa.is_correct`); POPE and TextVQA call the
stock lmms-eval functions their tasks use (``pope_process_results`` and ``pope_aggregate_f1_score``,
``textvqa_process_results``), so a study number and a harness number are the same quantity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from himap_lmms.scienceqa import doc_to_target, is_correct


def reply_score(name: str, doc: dict[str, Any], reply: str) -> float:
    """One reply's score: 1 or 0 (ScienceQA, POPE), the VQA accuracy in [0, 1] (TextVQA)."""
    if name == "scienceqa":
        return float(is_correct(reply, doc_to_target(doc)))
    if name == "pope":
        from lmms_eval.tasks.pope.utils import pope_process_results

        return pope_process_results(doc, [reply])["pope_accuracy"]["score"]
    if name == "textvqa":
        from lmms_eval.tasks.textvqa.utils import textvqa_process_results

        # The stock function normalises doc["answers"] in place: give it a copy.
        return float(textvqa_process_results({**doc, "answers": list(doc["answers"])}, [reply])["exact_match"])
    raise ValueError(f"unknown benchmark {name!r}: expected scienceqa, pope or textvqa")


def headline(name: str, docs: Sequence[dict[str, Any]], replies: Sequence[str]) -> float:
    """The benchmark's headline metric over a split: exact match (ScienceQA), F1 (POPE), VQA accuracy (TextVQA)."""
    if name == "pope":
        from lmms_eval.tasks.pope.utils import pope_aggregate_f1_score, pope_process_results

        return pope_aggregate_f1_score([pope_process_results(d, [r])["pope_f1_score"] for d, r in zip(docs, replies)])
    return sum(reply_score(name, doc, reply) for doc, reply in zip(docs, replies)) / len(docs)
