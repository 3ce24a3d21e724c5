"""The paper's two probes (saliency and attention disruption) on bare transformers LLaVA models.

Nothing here imports lmms-eval: the adapter calls :func:`run_probe_request`, scripts and tests call the
probes directly.
"""

from himap_lmms.probes.disruption import FLOWS, Disruption, ProbeGeneration, disrupted_generate, top5_jaccard
from himap_lmms.probes.layout import GROUPS, SequenceLayout, sequence_layout
from himap_lmms.probes.requests import PROBES, run_probe_request
from himap_lmms.probes.saliency import FLOW_KEYS, SaliencyResult, answer_token_id, saliency_probe

__all__ = [
    "FLOWS",
    "FLOW_KEYS",
    "GROUPS",
    "PROBES",
    "Disruption",
    "ProbeGeneration",
    "SaliencyResult",
    "SequenceLayout",
    "answer_token_id",
    "disrupted_generate",
    "run_probe_request",
    "saliency_probe",
    "sequence_layout",
    "top5_jaccard",
]
