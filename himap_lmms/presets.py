"""The presets of ``configs/``, read in one place: models (``models.yaml``) and pruning methods (``methods.yaml``).

The sweep, the cost benchmark, the GPU check and the lmms-eval config files all name presets; reading them
here means a preset is the same dict wherever it is used. The sweep and the cost benchmark also read a user's
method presets files (``--presets-file``), for methods this repository does not ship. Imports no torch: argument
checks stay fast.
"""

from __future__ import annotations

import argparse
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
BACKENDS = {
    "llava": "himap_llava",
    "llava_next": "himap_llava",
    "llava_onevision": "himap_llava_onevision",
    "qwen2_5_vl": "himap_qwen2_5_vl",
}
DEFAULT_BACKEND = "himap_llava"
BACKEND_KEY = "model"


def load_presets(path: Path, kind: str, names: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """The presets ``names`` of ``path`` (every preset, in the file's order, when ``names`` is None); an unknown
    name is a ``ValueError`` naming it, the file and the choices."""
    return _select(_read(path, kind), names, kind, str(path))


def method_presets(names: Iterable[str] | None = None, files: Iterable[str | Path] = ()) -> dict[str, dict[str, Any]]:
    """model_args of the method presets ``names`` (all of them by default, in order): those of
    ``configs/methods.yaml``, then those of each of ``files``, a user's presets in the same format. That is how a
    method installed from another package (docs/adding_a_method.md) is swept and benchmarked without editing this
    repository, as lmms-eval's ``--include_path`` adds a user's tasks to its own.

    A name two files define is an error naming both (a user's file adds presets, it never changes one silently);
    each preset returned is checked by building its schedule, so an unknown method or a bad argument is an error
    naming the preset and its file before anything runs.
    """
    paths = (METHOD_PRESETS, *map(Path, files))
    presets: dict[str, dict[str, Any]] = {}
    source: dict[str, Path] = {}
    for path in paths:
        for name, args in _read(path, "method").items():
            if name in source:
                raise ValueError(f"method preset {name!r} of {path} is already defined in {source[name]}")
            presets[name], source[name] = args, path
    chosen = _select(presets, names, "method", ", ".join(map(str, paths)))
    for name, args in chosen.items():
        _check_method_preset(name, args, source[name])
    return chosen


def _read(path: Path, kind: str) -> dict[str, Any]:
    """Every preset of ``path``; a file that cannot be read as a mapping of names to presets is a ``ValueError``
    naming it."""
    try:
        presets = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"cannot read the {kind} presets file {path}: {error}") from None
    if not isinstance(presets, dict):
        raise ValueError(f"{kind} presets file {path} is not a mapping of preset names to model_args")
    return presets


def _select(presets: dict[str, Any], names: Iterable[str] | None, kind: str, where: str) -> dict[str, Any]:
    if names is None:
        return dict(presets)
    names = tuple(names)
    unknown = [name for name in names if name not in presets]
    if unknown:
        raise ValueError(f"unknown {kind} preset {unknown[0]!r} in {where}: choose from {', '.join(presets)}")
    return {name: presets[name] for name in names}


def _check_method_preset(name: str, args: Any, path: Path) -> None:
    """A method preset is pruning model_args (``method`` and its knobs; other model_args go with the model) that
    the method's build accepts. Imports no torch."""
    from himap_lmms.pruning import PruningConfig

    if not isinstance(args, dict) or "method" not in args:
        raise ValueError(f"method preset {name!r} of {path} must be a mapping with a method, got {args!r}")
    try:
        PruningConfig.from_args(**args)
    except ValueError as error:
        raise ValueError(f"method preset {name!r} of {path}: {error}") from None


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


def add_presets_file_option(parser: argparse.ArgumentParser) -> None:
    """``--presets-file FILE`` (repeatable): a user's method presets besides ``configs/methods.yaml``, as the sweep
    and the cost benchmark both take them (:func:`method_presets` reads them)."""
    parser.add_argument(
        "--presets-file",
        action="append",
        default=[],
        type=Path,
        help="a YAML file of more method presets (e.g. for a method from another package); repeatable",
    )
