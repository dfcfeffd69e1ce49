"""A kill at any moment loses at most the edit in progress: SIGKILL a writer subprocess at random
moments, reopen, and find a sound database holding every edit it reported as done. The store drill
is bench/drill.py (20 kills here; `python -m bench.drill` runs 100)."""
from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest

from app.project.store import PROJECT_DB, Store, decode_mask
from bench.drill import KEYS, check, drill, make_project, run_and_kill

WRITER = Path(__file__).with_name("kill_writer.py")
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")


def test_store_edits_survive_20_sigkills(tmp_path):
    res = drill(20, tmp_path, seed=1234, max_delay=0.3)
    assert res.kills == 20 and res.writes >= 20 * 5
    assert res.ok, res.problems
    assert (res.lost, res.corrupt) == (0, 0)


def test_drill_check_sees_a_lost_edit_and_a_corrupt_database(tmp_path):
    """The drill's check is not vacuous: an edit reported but not in the database is counted as
    lost, a damaged database file as corrupt."""
    project = make_project(tmp_path)
    done = run_and_kill(project, 0.05)
    assert check(project, done) == (True, [])
    # Claim KEYS more edits than were reported: all but the one in flight (which may have been
    # committed) cannot be there.
    claimed = done + list(range(done[-1] + 1, done[-1] + 1 + KEYS))
    sound, missing = check(project, claimed)
    assert sound and len(missing) >= KEYS - 1
    db = project / PROJECT_DB
    raw = bytearray(db.read_bytes())
    raw[200:4096] = b"\xff" * (4096 - 200)         # smash the first page's b-tree
    db.write_bytes(bytes(raw))
    sound, _ = check(project, done)
    assert not sound


def test_window_strokes_survive_sigkill(tmp_path):
    h = 200
    project = make_project_of_height(tmp_path, h)
    done = run_and_kill(project, random.Random(7).uniform(0.1, 0.5), 3,
                        command=[sys.executable, str(WRITER), "window", str(project)])
    assert done == list(range(len(done)))
    with Store.open(project) as s:
        assert s.integrity_check() == "ok"
        first = s.images()[0].id
        rec = s.label_record(first)
    mask = decode_mask(rec.mask_png) if rec.mask_png else np.zeros((h, 64), np.uint8)
    # Stroke k paints row k % h (even passes) or erases it (odd passes). Each row must show its
    # last reported stroke, except the row of the one stroke that may have been in progress.
    last = {}
    for k in done:
        last[k % h] = k
    in_progress = (done[-1] + 1) % h
    for row, k in last.items():
        if row != in_progress:
            assert bool(mask[row, 2:21].all()) == ((k // h) % 2 == 0), (row, k)
            assert not mask[row, 22:].any()


def make_project_of_height(tmp_path: Path, h: int) -> Path:
    from app.project.importer import import_folder
    from gen_images import make_folder
    make_folder(tmp_path / "src", 3, 64, h)
    with Store.create(tmp_path / "proj") as s:
        import_folder(s, tmp_path / "src", copy=False, split="train")
    return tmp_path / "proj"


def test_bench_drill_entry_point(tmp_path, capsys):
    from bench.drill import main
    assert main(["--kills", "2", "--max-delay", "0.1", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("2 SIGKILLs, ") and ", 0 lost, 0 corrupt, " in out[-1]
    assert not list(tmp_path.iterdir())             # its temporary project is removed
