"""Registration of ``himap_llava`` with stock lmms-eval through the ``lmms_eval.models`` entry-point group.

lmms-eval calls :func:`himap_llava_manifest` while it builds its model registry, so this module stays light:
it names the class by path and lmms-eval imports :mod:`himap_lmms.lmms_model` only when the model is used.
"""

import sys

from lmms_eval.models.registry_v2 import ModelManifest

MODEL_ID = "himap_llava"
CLASS_PATH = "himap_lmms.lmms_model.HimapLlava"


def himap_llava_manifest() -> ModelManifest:
    # lmms-eval 0.7.3 resolves entry-point manifests for `--model`, but `lmms-eval models` prints only its
    # AVAILABLE_SIMPLE_MODELS table. lmms-eval's own plugin path (LMMS_EVAL_PLUGINS) records plugins there,
    # so do the same to be listed. The module is mid-import when entry points load, hence sys.modules.
    models = sys.modules.get("lmms_eval.models")
    if models is not None and hasattr(models, "AVAILABLE_SIMPLE_MODELS"):
        models.AVAILABLE_SIMPLE_MODELS.setdefault(MODEL_ID, CLASS_PATH)
    return ModelManifest(model_id=MODEL_ID, simple_class_path=CLASS_PATH)
