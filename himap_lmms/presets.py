"""The presets of ``configs/``, read in one place: models (``models.yaml``) and pruning methods (``methods.yaml``).

The sweep, the cost benchmark, the GPU check and the lmms-eval config files all name presets; reading them
here means a preset is the same dict wherever it is used. Imports no torch: argument checks stay fast.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"
MODEL_PRESETS = CONFIGS / "models.yaml"
METHOD_PRESETS = CONFIGS / "methods.yaml"
# The lmms-eval model that runs a checkpoint, by its config's model_type; a model preset may name it as `model`.
BACKENDS = {"llava": "himap_llava", "llava_next": "himap_llava", "qwen2_5_vl": "himap_qwen2_5_vl"}
DEFAULT_BACKEND = "himap_llava"
BACKEND_KEY = "model"


def load_presets(path: Path, kind: str, names: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """The presets ``names`` of ``path`` (every preset, in the file's order, when ``names`` is None); an unknown
    name is a ``ValueError`` naming it, the file and the choices."""
    presets = yaml.safe_load(path.read_text())
    if names is None:
        return dict(presets)
    names = tuple(names)
    unknown = [name for name in names if name not in presets]
    if unknown:
        raise ValueError(f"unknown {kind} preset {unknown[0]!r} in {path}: choose from {', '.join(presets)}")
    return {name: presets[name] for name in names}


def method_presets(names: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """model_args of the method presets ``names`` (all of them by default)."""
    return load_presets(METHOD_PRESETS, "method", names)


def resolve_model(model: str) -> tuple[str, dict[str, Any]]:
    """(display name, model_args) of a model preset or a checkpoint directory; preset paths are repo-relative,
    so a sweep started from any directory finds the bundled checkpoint."""
    if Path(model).is_dir():
        return Path(model).name, {"pretrained": str(Path(model).resolve())}
    ((name, preset),) = load_presets(MODEL_PRESETS, "model", (model,)).items()
    local = REPO / str(preset["pretrained"])
    arguments = {key: value for key, value in preset.items() if key != BACKEND_KEY}
    return name, {**arguments, "pretrained": str(local) if local.is_dir() else preset["pretrained"]}


def model_backend(model: str) -> str:
    """The lmms-eval model (``himap_llava``, ``himap_qwen2_5_vl``) that runs a model preset (its ``model``, else
    ``himap_llava``) or a checkpoint directory (by its config's ``model_type``)."""
    if Path(model).is_dir():
        model_type = json.loads((Path(model) / "config.json").read_text()).get("model_type")
        return BACKENDS.get(model_type, DEFAULT_BACKEND)
    ((_, preset),) = load_presets(MODEL_PRESETS, "model", (model,)).items()
    return preset.get(BACKEND_KEY, DEFAULT_BACKEND)
