"""Faults during an import, and bad input to it: a clear message naming the place, a non-zero
exit, nothing left behind but what was committed. A killed copy import (SIGKILL at random
moments) leaves no orphan copy, no temporary file, and its rerun stores every image once under
its own name."""
from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from app.project import import_copies
from app.__main__ import main
from app.project.importer import import_files, import_folder
from app.project.store import Store, StoreError, file_sha1
from core.data.images import write_mask

from gen_images import make_folder

ROOT = Path(__file__).resolve().parents[2]
POSIX = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and mount namespaces are POSIX")


def app_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "app", *map(str, args)]


def run_app(*args, timeout=120) -> subprocess.CompletedProcess:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    return subprocess.run(app_cmd(*args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def project_files(project: Path) -> list[Path]:
    return sorted(p for p in (project / "images").rglob("*") if p.is_file())


# ---- the kill drill ---------------------------------------------------------------------------
@POSIX
def test_killed_copy_imports_leave_no_orphans_and_the_rerun_stores_each_image_once(tmp_path):
    src = tmp_path / "src"
    make_folder(src, 90)
    make_folder(src / "sub", 30)                    # copies keep sub-folders: images/src/sub/...
    project = tmp_path / "p"
    cmd = app_cmd("--new", project, "--import", src, "--copy", "--headless")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    rng = random.Random(20240614)
    killed_mid_import = 0
    for _ in range(5):
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while not (project / "images").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)                       # copying has begun ...
        time.sleep(rng.uniform(0.0, 0.5))           # ... then a random moment
        finished = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        err = proc.stderr.read().decode()
        proc.stderr.close()
        assert finished or proc.returncode == -signal.SIGKILL, err
        killed_mid_import += not finished
    assert killed_mid_import >= 3                   # the drill really killed imports in progress

    r = run_app("--new", project, "--import", src, "--copy", "--headless")
    assert r.returncode == 0, r.stderr
    files = project_files(project)
    with Store.open(project) as s:
        assert s.integrity_check() == "ok"
        rows = s.images()
        assert sorted(row.abs_path for row in rows) == files          # no orphans, no .tmp
        assert len(rows) == 120 and len({s.db.execute("SELECT source FROM images WHERE id = ?",
                                                      (row.id,)).fetchone()[0] for row in rows}) == 120
        assert not [f for f in files if re.search(r"-\d+\.png$", f.name)]   # no name-1.png
        assert all(file_sha1(row.abs_path) == row.sha1 and s.file_state(row) == "ok" for row in rows)
    names = {f.relative_to(project / "images").as_posix() for f in files}
    assert names == {f"src/img_{i:03d}.png" for i in range(90)} | {f"src/sub/img_{i:03d}.png" for i in range(30)}


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid                                  # a pid that no longer runs


def as_killed(pending: Path, pid: int) -> Path:
    """The pending copy as a process ``pid`` (killed) would have left it."""
    return pending.rename(pending.with_name(pending.name.replace(f".{os.getpid()}-", f".{pid}-")))


def killed_after_commit(s: Store, src: Path, final: Path, pid: int) -> Path:
    """The state a kill between the row's commit and the copy's rename leaves; the pending file."""
    pending = import_copies.copy_pending(src, final)
    s.add_image(final, copied=True, width=64, height=48, split="train", sha1=file_sha1(src),
                source=src, stat_path=pending)
    return as_killed(pending, pid)


def test_a_copy_committed_but_not_renamed_is_finished_and_stray_pending_copies_removed(tmp_path):
    """The two states a kill can leave (between the copy and its row; between the row and the
    rename), made by hand: the next import finishes the one and removes the other."""
    files = make_folder(tmp_path / "src", 3)
    pid = dead_pid()
    with Store.create(tmp_path / "p") as s:
        images = s.folder / "images" / "src"
        final = images / "img_000.png"
        killed = killed_after_commit(s, files[0], final, pid)
        stray = as_killed(import_copies.copy_pending(files[1], images / "img_001.png"), pid)
        live = import_copies.copy_pending(files[2], images / "other.png")   # this process: alive
        assert import_copies.recover(s) == (1, 1)
        assert final.is_file() and not killed.exists() and not stray.exists() and live.exists()
        assert s.file_state(s.images()[0]) == "ok"
        live.unlink()
        report = import_folder(s, tmp_path / "src", copy=True, split="train")
        assert len(report.added) == 2 and [why for _, why in report.skipped] == ["already in the project"]
        assert project_files(s.folder) == sorted(r.abs_path for r in s.images())
        assert {f.name for f in project_files(s.folder)} == {"img_000.png", "img_001.png", "img_002.png"}


def test_the_window_finishes_a_killed_copy_when_it_opens_the_project(qtbot, tmp_path):
    from app.main_window import MainWindow
    from app.settings import AppSettings
    files = make_folder(tmp_path / "src", 1)
    with Store.create(tmp_path / "p") as s:
        final = s.folder / "images" / "src" / "img_000.png"
        killed = killed_after_commit(s, files[0], final, dead_pid())
    w = MainWindow(tmp_path / "p", AppSettings(tmp_path / "user.ini"))
    qtbot.addWidget(w)
    assert final.is_file() and not killed.exists()
    assert w.store.file_state(w.store.images()[0]) == "ok"
    w.close()


def test_a_copy_an_older_version_left_is_taken_over_not_doubled(tmp_path):
    """An import killed by an older version left a copy under its final name with no row, and a
    hidden temporary file: the rerun takes the copy over (no img_000-1.png) and removes the temp."""
    files = make_folder(tmp_path / "src", 2)
    with Store.create(tmp_path / "p") as s:
        images = s.folder / "images" / "src"
        images.mkdir(parents=True)
        (images / "img_000.png").write_bytes(files[0].read_bytes())
        old_tmp = images / ".img_001.png.k2j4h5.png.tmp"
        old_tmp.write_bytes(files[1].read_bytes()[:100])
        os.utime(old_tmp, (time.time() - 2 * import_copies.STALE_S,) * 2)
        different = s.folder / "images" / "src" / "img_001.png"
        different.write_bytes(files[0].read_bytes())   # not the content of img_001: kept, not taken
        report = import_folder(s, tmp_path / "src", copy=True, split="train")
        assert len(report.added) == 2
        assert {r.path for r in s.images()} == {"images/src/img_000.png", "images/src/img_001-1.png"}
        assert not old_tmp.exists() and different.is_file()
        assert all(s.file_state(r) == "ok" and file_sha1(r.abs_path) == r.sha1 for r in s.images())


# ---- bad sources ------------------------------------------------------------------------------
def test_a_missing_or_empty_source_folder_is_refused_before_a_project_is_made(tmp_path, capsys):
    assert main(["--new", str(tmp_path / "p"), "--import", str(tmp_path / "does-not-exist"), "--headless"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'does-not-exist'}: no such folder" in err and "Traceback" not in err
    assert not (tmp_path / "p").exists()                 # no empty project left behind
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no images here")
    assert main(["--new", str(tmp_path / "p"), "--import", str(tmp_path / "notes"), "--headless"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'notes'}: no images in this folder" in err and ".png" in err and ".tif" in err
    assert not (tmp_path / "p").exists()
    (tmp_path / "file.png").write_bytes(b"x")
    assert main(["--new", str(tmp_path / "p"), "--mvtec", str(tmp_path / "file.png"), "--headless"]) == 2
    assert "not a folder" in capsys.readouterr().err and not (tmp_path / "p").exists()
    with Store.create(tmp_path / "q") as s:              # the API says the same (the window shows it)
        with pytest.raises(Exception, match="no such folder"):
            import_folder(s, tmp_path / "does-not-exist", copy=False, split="train")


def test_a_wrong_size_mask_skips_that_image_and_imports_the_rest(tmp_path, capsys):
    from gen_images import synthetic_mvtec
    cat = synthetic_mvtec(tmp_path)
    write_mask(cat / "ground_truth" / "scratch" / "img_001_mask.png", np.ones((16, 20), bool))
    assert main(["--new", str(tmp_path / "p"), "--mvtec", str(cat), "--headless", "--copy"]) == 0
    out = capsys.readouterr().out
    bad = cat / "test" / "scratch" / "img_001.png"
    assert "6 images imported" in out and "1 skipped" in out
    assert f"skipped {bad}: " in out and "img_001_mask.png: mask is 20x16 px" in out and "40x32 px" in out
    assert out.strip().splitlines()[-1].endswith("6 images; 1 file skipped, listed above")
    with Store.open(tmp_path / "p") as s:
        assert s.image_count() == 6 and len(s.images(status="defective")) == 1
        assert "images/widget/test/scratch/img_001.png" not in {r.path for r in s.images()}


# ---- a project that cannot be written ---------------------------------------------------------
def test_a_full_database_stops_the_import_with_a_message_and_keeps_what_was_committed(tmp_path, monkeypatch, capsys):
    """SQLite's "database or disk is full" (made here with max_page_count: the same SQLITE_FULL a
    full disk gives) ends in a plain message and exit 1, not a traceback."""
    make_folder(tmp_path / "src", 80)
    with Store.create(tmp_path / "p") as s:
        pages = int(s.db.execute("PRAGMA page_count").fetchone()[0])
    real_init = Store.__init__

    def small_disk(self, *args, **kw):
        real_init(self, *args, **kw)
        self.db.execute(f"PRAGMA max_page_count = {pages + 80}")

    monkeypatch.setattr(Store, "__init__", small_disk)
    monkeypatch.setattr("app.project.importer.BATCH", 4)
    assert main([str(tmp_path / "p"), "--import", str(tmp_path / "src"), "--copy", "--headless"]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'p' / 'project.sqlite'}: no space left on the disk" in err
    assert "the import stopped" in err and "Traceback" not in err
    monkeypatch.setattr(Store, "__init__", real_init)
    with Store.open(tmp_path / "p") as s:
        assert s.integrity_check() == "ok"
        n = s.image_count()
        assert 0 < n < 80 and n % 4 == 0 and f"holds {n} images" in err
        assert project_files(s.folder) == sorted(r.abs_path for r in s.images())   # no leftovers


def test_a_locked_database_is_named_at_open_and_mid_import(tmp_path, monkeypatch, capsys):
    """Another program holding the write lock longer than the busy timeout: a plain message when
    the project opens (exit 2, nothing done) and when it takes the lock mid-import (StoreError:
    the batches committed before stay)."""
    files = make_folder(tmp_path / "src", 12)
    Store.create(tmp_path / "p").close()
    db_file = tmp_path / "p" / "project.sqlite"
    other = sqlite3.connect(str(db_file), isolation_level=None)
    monkeypatch.setattr("app.project.store.BUSY_TIMEOUT_S", 0.2)
    monkeypatch.setattr("app.project.importer.BUSY_TIMEOUT_S", 0.2)
    monkeypatch.setattr("app.project.importer.BATCH", 4)
    other.execute("BEGIN IMMEDIATE")
    try:
        assert main([str(tmp_path / "p"), "--import", str(tmp_path / "src"), "--headless"]) == 2
    finally:
        other.execute("ROLLBACK")
    err = capsys.readouterr().err
    assert f"{db_file}: another program has kept the project database locked for more than 0.2 s" in err
    assert "Traceback" not in err

    def lock_at_6(done, total):
        if done == 6:
            other.execute("BEGIN IMMEDIATE")

    with Store.open(tmp_path / "p") as s:
        try:
            with pytest.raises(StoreError, match="locked for more than 0.2 s") as exc:
                import_files(s, files, copy=True, split="train", progress=lock_at_6)
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert str(exc.value).startswith(f"{db_file}: ")
        assert s.image_count() == 4                      # the first batch, committed before
        assert project_files(s.folder) == sorted(r.abs_path for r in s.images())


def in_read_only(folder: Path, *app_args) -> subprocess.CompletedProcess:
    """Run the app with ``folder`` read-only: a read-only bind mount in a private mount namespace
    when we are root (root writes through file modes), else the folder's modes."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            return run_app(*app_args)
        finally:
            folder.chmod(0o755)
    q = f"'{folder}'"
    script = (f"mount --bind {q} {q} && mount -o remount,bind,ro {q} {q} && exec "
              + " ".join(f"'{a}'" for a in app_cmd(*app_args)))
    r = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
    if "mount" in r.stderr and r.returncode != 0 and "SemiREST" not in r.stderr:
        pytest.skip(f"cannot make a read-only mount here: {r.stderr.strip()}")
    return r


@POSIX
def test_new_project_on_a_read_only_folder_says_so(tmp_path):
    make_folder(tmp_path / "src", 2)
    (tmp_path / "ro").mkdir()
    r = in_read_only(tmp_path / "ro", "--new", tmp_path / "ro" / "p", "--import", tmp_path / "src", "--headless")
    assert r.returncode == 2, r.stderr
    assert f"cannot create the project at {tmp_path / 'ro' / 'p'}: " in r.stderr
    assert "read-only" in r.stderr and "Traceback" not in r.stderr


@POSIX
def test_a_read_only_project_says_it_is_read_only(tmp_path):
    make_folder(tmp_path / "src", 2)
    with Store.create(tmp_path / "p") as s:
        import_folder(s, tmp_path / "src", copy=False, split="train")
    r = in_read_only(tmp_path / "p", tmp_path / "p", "--import", tmp_path / "src", "--headless")
    assert r.returncode == 2, r.stderr
    assert f"{tmp_path / 'p'}: the project is read-only" in r.stderr
    assert "not a usable project database" not in r.stderr and "Traceback" not in r.stderr
    with Store.open(tmp_path / "p") as s:           # untouched, and fine once writable
        assert s.image_count() == 2 and s.integrity_check() == "ok"


CHECK = """
import json, sys
from pathlib import Path
from app.project.store import Store
p = Path(sys.argv[1])
with Store.open(p) as s:
    rows = sorted(str(r.abs_path) for r in s.images())
    print(json.dumps({"integrity": s.integrity_check(), "rows": rows,
                      "files": sorted(str(f) for f in (p / "images").rglob("*") if f.is_file())}))
"""


@POSIX
@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="mounts a small tmpfs: root only")
def test_a_full_disk_during_a_copy_import_stops_with_a_message(tmp_path):
    """A real full disk (a 1 MiB tmpfs in a private mount namespace): the copy or the database
    write fails with ENOSPC / SQLITE_FULL; the user reads "no space left", exit 1, and the project
    on that disk is sound and holds no copy without its row."""
    import json
    make_folder(tmp_path / "src", 150)
    disk = tmp_path / "disk"
    disk.mkdir()
    app = " ".join(f"'{a}'" for a in app_cmd("--new", disk / "p", "--import", tmp_path / "src", "--copy",
                                              "--headless"))
    script = (f"mount -t tmpfs -o size=1m tmpfs '{disk}' && {{ {app}; echo rc=$? >&2; }} && "
              f"'{sys.executable}' -c \"$CHECK\" '{disk / 'p'}'")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", CHECK=CHECK)
    r = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=180)
    if "rc=" not in r.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    assert "rc=1" in r.stderr, r.stderr
    assert "no space left on the disk" in r.stderr and "Traceback" not in r.stderr
    assert str(disk / "p") in r.stderr                     # names the place (the file or folder)
    state = json.loads(r.stdout.strip().splitlines()[-1])
    assert state["integrity"] == "ok" and state["rows"] == state["files"] and 0 < len(state["rows"]) < 150


def test_a_copy_that_cannot_be_written_stops_the_import_a_source_that_cannot_be_read_is_skipped(
        tmp_path, monkeypatch):
    import errno
    import shutil
    files = make_folder(tmp_path / "src", 10)
    real_copy = shutil.copyfile
    calls = []

    def copyfile(src, dst):
        calls.append(src)
        if Path(src).name == "img_002.png":           # the source's fault: skip this file
            raise PermissionError(errno.EACCES, "Permission denied", str(src))
        if len(calls) == 7:                            # the project's disk is full: stop
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_copy(src, dst)

    monkeypatch.setattr("app.project.import_copies.shutil.copyfile", copyfile)
    monkeypatch.setattr("app.project.importer.BATCH", 3)
    with Store.create(tmp_path / "p") as s:
        with pytest.raises(StoreError) as exc:
            import_files(s, files, copy=True, split="train", root=tmp_path / "src")
        assert str(exc.value) == f"{s.folder / 'images' / 'src'}: no space left on the disk"
        assert s.image_count() == 3                    # img_000, 001, 003: the first batch
        assert project_files(s.folder) == sorted(r.abs_path for r in s.images())   # 004, 005: gone
        monkeypatch.setattr("app.project.import_copies.shutil.copyfile", real_copy)
        report = import_files(s, [files[2]], copy=True, split="train", root=tmp_path / "src")
        assert len(report.added) == 1                  # the skipped file was never half in
