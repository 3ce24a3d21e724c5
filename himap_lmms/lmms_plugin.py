"""Registration of ``himap_llava``, ``himap_llava_onevision`` and ``himap_qwen2_5_vl`` with stock lmms-eval through
the ``lmms_eval.models`` entry-point group.

lmms-eval calls a manifest function while it builds its model registry, so this module stays light: it names
each class by path and lmms-eval imports the class's module only when the model is used.
"""

import sys

from lmms_eval.models.registry_v2 import ModelManifest


def _manifest(model_id: str, class_path: str) -> ModelManifest:
    # lmms-eval 0.7.3 resolves entry-point manifests for `--model`, but `lmms-eval models` prints only its
    # AVAILABLE_SIMPLE_MODELS table. lmms-eval's own plugin path (LMMS_EVAL_PLUGINS) records plugins there,
    # so do the same to be listed. The module is mid-import when entry points load, hence sys.modules.
    models = sys.modules.get("lmms_eval.models")
    if models is not None and hasattr(models, "AVAILABLE_SIMPLE_MODELS"):
        models.AVAILABLE_SIMPLE_MODELS.setdefault(model_id, class_path)
    return ModelManifest(model_id=model_id, simple_class_path=class_path)


def himap_llava_manifest() -> ModelManifest:
    return _manifest("himap_llava", "himap_lmms.lmms_model.HimapLlava")


def himap_qwen2_5_vl_manifest() -> ModelManifest:
    return _manifest("himap_qwen2_5_vl", "himap_lmms.lmms_qwen2_5_vl.HimapQwen2_5_VL")


def himap_llava_onevision_manifest() -> ModelManifest:
    return _manifest("himap_llava_onevision", "himap_lmms.lmms_llava_onevision.HimapLlavaOnevision")
