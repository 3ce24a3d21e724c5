"""Values as users type them.

Numbers: ``model_args`` and ``--gen_kwargs`` hand over strings, task YAMLs ints, and lmms-eval's own parsing
sometimes floats (``"4"`` may arrive as ``4.0``). One parser for all of them, so every argument accepts the same
spellings and every error names the argument. Checkpoint names: one rule for telling a local path from a hub id,
shared by the adapter (which refuses a missing local path) and the leaderboard (which shortens paths).
"""

from __future__ import annotations

import math
from typing import Any


def parse_int(name: str, value: Any, minimum: int | None = None) -> int:
    """``value`` as an int (``4``, ``"4"``, ``4.0``, ``"4.0"``); ``ValueError`` naming ``name`` otherwise."""
    number = _as_number(name, value, "an integer")
    if math.isinf(number) or not float(number).is_integer():
        raise ValueError(f"{name}={value!r} is not an integer")
    number = int(number)
    if minimum is not None and number < minimum:
        raise ValueError(f"{name}={value!r} must be >= {minimum}")
    return number


def parse_float(name: str, value: Any) -> float:
    """``value`` as a finite float (``0.5``, ``"0.5"``, ``1``); ``ValueError`` naming ``name`` otherwise."""
    number = float(_as_number(name, value, "a number"))
    if not math.isfinite(number):
        raise ValueError(f"{name}={value!r} is not a finite number")
    return number


def _as_number(name: str, value: Any, what: str) -> int | float:
    if isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is not {what}")
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text, 10)
        except ValueError:
            pass
        try:
            return float(text)
        except ValueError:
            pass
    raise ValueError(f"{name}={value!r} is not {what}")


def is_local_path(name: str) -> bool:
    """Whether a ``pretrained`` value names a local path rather than a hub id (``name`` or ``org/name``)."""
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1
