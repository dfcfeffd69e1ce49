"""The label store's kill drill: a writer process commits label edits to a project in a loop and
prints each edit's number once it is committed; it is SIGKILLed at a random moment, the project is
reopened and checked, and so on, ``--kills`` times. A sound store loses nothing it reported done
and is never corrupt.

    python -m bench.drill [--kills 100] [--seed 0] [--workdir DIR]

tests/app/test_store_kill.py runs the same drill with 20 kills. POSIX only (SIGKILL).

Edit i goes to image (i // 2) % 3: boxes when i is even (the box width is i + 1), else a mask
(its pixel count is (i % (h * w - 1)) + 1). Each (image, kind) key comes round every 6 edits, so
after a kill the newest reported edit of each key must be in the database, or the key's next edit
when that is the one that was in flight (committed, killed before it was printed). Every round's
writer starts again from edit 0: older values are overwritten, by design.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
N_IMAGES, WIDTH, HEIGHT = 3, 64, 48
KEYS = 2 * N_IMAGES            # (image, kind) pairs: a key's edits are KEYS apart


class DrillError(RuntimeError):
    """The writer died on its own, so the drill could not run."""


@dataclass
class DrillResult:
    kills: int = 0
    writes: int = 0                 # edits the writers reported as committed, all rounds
    lost: int = 0                   # reported edits not found after the kill
    corrupt: int = 0                # rounds whose database failed to open or integrity_check
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.corrupt == 0

    def summary(self) -> str:
        return (f"{self.kills} SIGKILLs, {self.writes} committed writes, {self.lost} lost, "
                f"{self.corrupt} corrupt, {self.seconds:.0f} s")


def make_project(folder: Path) -> Path:
    """A project of N_IMAGES small generated images (referenced, not copied)."""
    from app.project.importer import import_folder
    from app.project.store import Store
    from core.data.images import write_png
    src = folder / "src"
    src.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        write_png(src / f"img_{i}.png", rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8))
    with Store.create(folder / "proj") as s:
        import_folder(s, src, copy=False, split="train")
    return folder / "proj"


def writer_loop(project: Path) -> None:
    """Run by the drill in its own process until killed (see the module doc for the edits)."""
    from app.project.store import Store
    from core.data.labels import RotatedBox
    store = Store.open(project)
    ids = [r.id for r in store.images()]
    h, w = store.image(ids[0]).height, store.image(ids[0]).width
    i = 0
    while True:
        image_id = ids[(i // 2) % len(ids)]
        if i % 2 == 0:
            store.save_boxes(image_id, [RotatedBox(10, 10, i + 1, 5, 0)])     # w encodes the edit
        else:
            mask = np.zeros(h * w, np.uint8)
            mask[: (i % (h * w - 1)) + 1] = 1                                # pixel count encodes it
            store.save_mask(image_id, mask.reshape(h, w))
        print(i, flush=True)        # after the commit: a printed edit is a promise
        i += 1


def run_and_kill(project: Path, delay: float, min_lines: int = 5,
                 command: list[str] | None = None) -> list[int]:
    """Start a writer (this module's, or ``command``, which prints one edit number a line), wait
    until it has reported ``min_lines`` edits, let it run ``delay`` more seconds, SIGKILL it; the
    edit numbers it reported."""
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    command = command or [sys.executable, "-m", "bench.drill", "--writer", str(project)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, text=True)
    done: list[int] = []
    try:
        while len(done) < min_lines:              # wait until it is really writing
            line = proc.stdout.readline()
            if not line:
                proc.wait(10)
                raise DrillError(f"the writer died before the kill: {proc.stderr.read()[-2000:]}")
            done.append(int(line))
        time.sleep(delay)                          # then kill at a random moment
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    done += [int(x) for x in proc.stdout.read().split()]
    proc.stdout.close()
    proc.stderr.close()
    if proc.returncode != -signal.SIGKILL:
        raise DrillError(f"the writer ended with status {proc.returncode}, not by the kill")
    return done


def check(project: Path, done: list[int]) -> tuple[bool, list[str]]:
    """(database sound, the reported edits missing from it) after a kill."""
    from app.project.store import Store, decode_mask
    try:
        s = Store.open(project)
    except Exception as exc:       # any failure to open is the corruption the drill looks for
        return False, [f"does not open: {exc}"]
    missing = []
    with s:
        if s.integrity_check() != "ok":
            return False, ["integrity_check failed"]
        ids = [r.id for r in s.images()]
        in_flight = done[-1] + 1 if done else 0
        pixels = WIDTH * HEIGHT - 1
        for i in done[-KEYS:]:                     # the newest reported edit of each key
            allowed = {i} | ({i + KEYS} if i + KEYS == in_flight else set())
            rec = s.label_record(ids[(i // 2) % len(ids)])
            if i % 2 == 0:
                found = {int(b.w) - 1 for b in rec.boxes}
            else:
                n = int(decode_mask(rec.mask_png).sum()) if rec.mask_png else 0
                found = {k for k in allowed if (k % pixels) + 1 == n}
            if not found & allowed:
                missing.append(f"edit {i} (in flight: {in_flight})")
    return True, missing


def drill(kills: int, folder: Path, seed: int = 0, max_delay: float = 0.6,
          progress=None) -> DrillResult:
    """``kills`` rounds of write, SIGKILL at a random moment, reopen and check, on one project."""
    rng = random.Random(seed)
    project = make_project(folder)
    res = DrillResult()
    t0 = time.perf_counter()
    for k in range(kills):
        done = run_and_kill(project, rng.uniform(0.0, max_delay))
        sound, missing = check(project, done)
        res.kills += 1
        res.writes += len(done)
        res.corrupt += not sound
        res.lost += len(missing)
        res.problems += [f"kill {k + 1}: {m}" for m in missing] + ([] if sound else [f"kill {k + 1}: corrupt"])
        if progress:
            progress(f"kill {k + 1}/{kills}: {len(done)} writes reported, "
                     f"{'sound' if sound else 'CORRUPT'}, {len(missing)} lost")
    res.seconds = time.perf_counter() - t0
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.drill", description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-delay", type=float, default=0.6,
                   help="seconds the writer may run after its first edits before the kill")
    p.add_argument("--workdir", help="where the drill's project goes (default: a temporary folder)")
    p.add_argument("--writer", metavar="PROJECT", help=argparse.SUPPRESS)   # the killed process
    a = p.parse_args(argv)
    if a.writer:
        writer_loop(Path(a.writer))
        return 0
    if sys.platform == "win32":
        print("the kill drill needs SIGKILL (POSIX)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(dir=a.workdir) as tmp:
        res = drill(a.kills, Path(tmp), a.seed, a.max_delay, progress=print)
    print(res.summary())
    for line in res.problems:
        print(line)
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
