"""The CLI's stderr holds what the user needs: faiss's loader chatter (its failed AVX512/AVX2 tries,
logged at INFO with a ModuleNotFoundError) only with --verbose."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _stderr(*args: str) -> str:
    # `info` on a missing file loads the model-file module, which imports faiss, then fails fast.
    proc = subprocess.run([sys.executable, "-m", "core.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 2, proc.stderr
    return proc.stderr


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_shows_the_faiss_loader(tmp_path, where):
    args = ["info", "--model", str(tmp_path / "none.pt")]
    err = _stderr(*(["--verbose", *args] if where == "before" else [*args, "--verbose"]))
    # Proves faiss is imported on this path, so the quiet test below is not quiet by accident.
    assert "Loading faiss" in err and "loaded faiss" in err


def test_faiss_loader_is_quiet_by_default(tmp_path):
    missing = tmp_path / "none.pt"
    err = _stderr("info", "--model", str(missing))
    assert "Loading faiss" not in err and "Could not load library" not in err
    assert "ModuleNotFoundError" not in err
    assert err.strip().splitlines() == [f"error: {missing}: no such model file"]
