"""A kill at any moment loses at most the edit in progress: SIGKILL a writer subprocess at random
moments, reopen, and find a sound database holding every edit it reported as done."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from app.importer import import_folder
from app.store import Store, decode_mask

from gen_images import make_folder

WRITER = Path(__file__).with_name("kill_writer.py")
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")


def run_and_kill(project: Path, mode: str, delay: float, min_lines: int) -> list[int]:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, str(WRITER), mode, str(project)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True)
    done = []
    try:
        while len(done) < min_lines:              # wait until it is really writing
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"writer died: {proc.stderr.read()[-2000:]}")
            done.append(int(line))
        time.sleep(delay)                          # then kill at a random moment
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    done += [int(x) for x in proc.stdout.read().split()]
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return done


def make_project(tmp_path: Path, h: int = 48) -> Path:
    make_folder(tmp_path / "src", 3, 64, h)
    with Store.create(tmp_path / "proj") as s:
        import_folder(s, tmp_path / "src", copy=False, split="train")
    return tmp_path / "proj"


def test_store_edits_survive_sigkill(tmp_path):
    project = make_project(tmp_path)
    rng = random.Random(1234)
    for _ in range(3):
        done = run_and_kill(project, "store", rng.uniform(0.05, 0.6), 5)
        assert done == list(range(len(done)))
        with Store.open(project) as s:
            assert s.integrity_check() == "ok"
            ids = [r.id for r in s.images()]
            # Edit i goes to image (i // 2) % 3, boxes if i is even, else mask: each (image, kind)
            # comes round every 6 edits. The newest printed edit of each key must be in the
            # database, or the next one of that key (committed, killed before it was printed).
            pixels = 64 * 48 - 1
            for i in done[-6:]:
                rec = s.label_record(ids[(i // 2) % len(ids)])
                if i % 2 == 0:
                    assert rec.boxes[0].w - 1 in (i, i + 6)
                else:
                    n = int(decode_mask(rec.mask_png).sum())
                    assert n in ((i % pixels) + 1, ((i + 6) % pixels) + 1)
        # The writer restarts from edit 0 next round: older values are overwritten, by design.


def test_window_strokes_survive_sigkill(tmp_path):
    h = 200
    project = make_project(tmp_path, h=h)
    done = run_and_kill(project, "window", random.Random(7).uniform(0.1, 0.5), 3)
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
