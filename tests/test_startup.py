"""The leaderboard and the sweep's command line read tables and check arguments without importing torch (or the
rest of the model stack): ``--help`` and a table answer at once. Measured by what a fresh interpreter imported,
not by the clock."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Run an entry point as ``__main__`` and print which heavy modules it imported, whatever its exit status.
PROBE = """\
import json, runpy, sys
target, argv = sys.argv[1], sys.argv[2:]
sys.argv = [target, *argv]
try:
    if target.endswith(".py"):
        runpy.run_path(target, run_name="__main__")
    else:
        runpy.run_module(target, run_name="__main__")
except SystemExit:
    pass
print(json.dumps(sorted(name for name in ("torch", "transformers", "lmms_eval") if name in sys.modules)))
"""


def heavy_imports(target: str, *argv: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, target, *argv], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--presets", "no_such_preset"],  # refused by the argument checks
        ["--presets", "himap_ref", "--lmms-eval-config"],
    ],
)
def test_the_sweep_checks_arguments_without_torch(argv: list[str]) -> None:
    assert heavy_imports(str(REPO / "scripts" / "sweep.py"), *argv) == []


def test_the_leaderboard_reads_tables_without_torch(tmp_path: Path) -> None:
    assert heavy_imports("himap_lmms.leaderboard", "--help") == []
    payload = {
        "results": {"pope_synth": {"pope_f1_score,none": 0.8}},
        "config": {"model": "himap_llava", "model_args": "pretrained=/m/x,method=himap,k1=2", "limit": 4.0},
    }
    (tmp_path / "run_results.json").write_text(json.dumps(payload))
    assert heavy_imports("himap_lmms.leaderboard", str(tmp_path), "--out", str(tmp_path / "board")) == []
    assert "himap(k1=2,ratio1=0.5,k2=8,ratio2=0.125)" in (tmp_path / "board" / "leaderboard.md").read_text()
