"""lmms-eval hooks of ``scienceqa_img_himap``: the paper's prompt and exact-match scoring.

They live in :mod:`himap_lmms.scienceqa`, which the probe tasks and the scripts share; the YAML names them here.
"""

from himap_lmms.scienceqa import (
    aggregate_grade1_6,
    aggregate_grade7_12,
    aggregate_language_science,
    aggregate_natural_science,
    aggregate_social_science,
    doc_to_target,
    doc_to_text,
    doc_to_visual,
    process_docs,
    process_results,
)

__all__ = [
    "aggregate_grade1_6",
    "aggregate_grade7_12",
    "aggregate_language_science",
    "aggregate_natural_science",
    "aggregate_social_science",
    "doc_to_target",
    "doc_to_text",
    "doc_to_visual",
    "process_docs",
    "process_results",
]
