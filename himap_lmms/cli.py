"""Argument types the scripts share, so a bad number is refused while parsing, before any model loads."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from himap_lmms.values import parse_int


def integer_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` accepting whole numbers >= ``minimum``; argparse's error names the option and value."""

    def parse(text: str) -> int:
        try:
            value = parse_int("value", text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (expected >= {minimum})") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is out of range: it must be >= {minimum}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def existing_directory(text: str) -> Path:
    """An argparse ``type`` for a directory that must already exist (a checkpoint or a dataset)."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not an existing directory")
    return path


def output_directory(text: str) -> Path:
    """An argparse ``type`` for a directory to write into: new, or existing, but not a file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file: it must be a directory (new or existing)")
    return path
