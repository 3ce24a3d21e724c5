"""A sweep's manifest (``sweep.json``): what its runs share and what became of each, read and written in one place.

The sweep (:mod:`himap_lmms.sweep`) writes it; the leaderboard (:mod:`himap_lmms.leaderboard`) reads it. It is
written at the start of a sweep, with every preset ``not run``, and again whenever a run changes state, always
atomically (a temporary file in the same folder, then a rename): a sweep killed, or a disk that fills, mid-write
leaves the previous manifest whole rather than a truncated one.

A run's status is one of :data:`OK`, :data:`RUNNING` (its process is under way, or the sweep was killed while it
was: nothing could record its end), :data:`INTERRUPTED` (stopped by a signal before it finished),
:data:`NOT_RUN` (the sweep stopped before it) or ``failed: <why>``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

SWEEP_MANIFEST = "sweep.json"

OK = "ok"
RUNNING = "running"
INTERRUPTED = "interrupted"
NOT_RUN = "not run"
FAILED = "failed"


def failed(reason: str) -> str:
    """The status of a run that failed, with the reason shown in the manifest and the leaderboard."""
    return f"{FAILED}: {reason}"


@dataclass
class RunEntry:
    """One preset of a sweep: its model_args, the command that ran it, its status and its results file (relative
    to the sweep folder, set only when the status is :data:`OK`)."""

    preset: str
    model_args: str
    status: str = NOT_RUN
    results: str | None = None
    command: str = ""


@dataclass
class SweepManifest:
    """The manifest of one sweep. The fields after ``backend`` repeat the sweep's plan (the options it was started
    with) and the conditions it pinned (``device``, ``torch_threads``); ``outcome`` says how the sweep itself ended
    (``running`` until it does)."""

    sweep_id: str
    started: str
    backend: str
    batch_size: int
    limit: int | None
    device: str
    torch_threads: int
    model: str = ""
    presets: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    num_processes: int = 1
    cpu: bool = False
    threads: int | None = None
    model_args: str = ""
    preset_files: list[str] = field(default_factory=list)
    outcome: str = RUNNING
    runs: list[RunEntry] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: Any) -> SweepManifest:
        """The manifest of parsed JSON; ``ValueError`` naming what is missing or malformed."""
        if not isinstance(data, Mapping):
            raise ValueError("not a JSON object")
        known = {item.name for item in fields(cls)}
        missing = [item.name for item in fields(cls) if item.name not in data and _required(item)]
        if missing:
            raise ValueError(f"missing field(s) {', '.join(missing)}")
        runs = data.get("runs")
        if not isinstance(runs, list) or not all(isinstance(run, Mapping) for run in runs):
            raise ValueError("'runs' is not a list of objects")
        run_fields = {item.name for item in fields(RunEntry)}
        try:
            entries = [RunEntry(**{k: v for k, v in run.items() if k in run_fields}) for run in runs]
        except TypeError as error:
            raise ValueError(f"a run entry lacks a field: {error}") from None
        return cls(**{k: v for k, v in data.items() if k in known and k != "runs"}, runs=entries)

    @classmethod
    def read(cls, path: Path) -> SweepManifest:
        """Read ``path``; ``ValueError`` (unreadable, not JSON, not a manifest) naming the file."""
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise ValueError(f"{path} is not a readable sweep manifest: {error}") from error

    def write(self, folder: Path) -> Path:
        """Write the manifest into ``folder`` atomically; returns its path."""
        path = folder / SWEEP_MANIFEST
        write_atomic(path, json.dumps(asdict(self), indent=2) + "\n")
        return path

    def run(self, preset: str) -> RunEntry:
        return next(entry for entry in self.runs if entry.preset == preset)


def _required(item: Any) -> bool:
    return item.default is MISSING and item.default_factory is MISSING


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename: readers see the old file or the new one, never a part.

    The temporary file lives in the same folder (a rename is atomic only within one file system) and is removed
    when writing it fails, so a full disk leaves no stray half-file behind; the ``OSError`` goes on to the caller.
    """
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise naming(error, path) from error
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def naming(error: OSError, path: Path) -> OSError:
    """``error`` with ``path`` as its file name when it has none (a failed ``write`` on an open file names no
    file), so that the message says where the disk was full or the permission missing."""
    if error.filename is not None:
        return error
    return type(error)(error.errno, error.strerror or str(error), str(path))
