"""core/fileio.py: atomic writes keep a readable mode (mkstemp alone makes every file 0600)."""
from __future__ import annotations

import os
import stat

import pytest

from core.fileio import atomic_write_bytes, atomic_write_text


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_new_files_get_the_umask_mode_and_rewrites_keep_theirs(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "scores.csv", "a,b\n")
        assert stat.S_IMODE((tmp_path / "scores.csv").stat().st_mode) == 0o644
        os.chmod(tmp_path / "scores.csv", 0o600)          # the user made it private: a rewrite keeps that
        atomic_write_text(tmp_path / "scores.csv", "a,b\n1,2\n")
        assert stat.S_IMODE((tmp_path / "scores.csv").stat().st_mode) == 0o600
        os.umask(0o027)
        atomic_write_bytes(tmp_path / "map.png", b"x")
        assert stat.S_IMODE((tmp_path / "map.png").stat().st_mode) == 0o640
        assert (tmp_path / "scores.csv").read_text() == "a,b\n1,2\n"
    finally:
        os.umask(old)
