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


# ---- write failures: a plain WriteError naming the place, no temp file, the old file intact ------
import errno
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from core import fileio
from core.errors import WriteError
from core.fileio import atomic_write_with, ensure_writable, remove_stale_temps, safe_name
from write_helpers import make_read_only

ROOT = Path(__file__).resolve().parents[2]
DEV_FULL = Path("/dev/full")          # every write to it fails with ENOSPC (Linux)


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def _tiny_bundle():
    from core.config import preset
    from core.deploy.modelfile import ModelBundle
    return ModelBundle(preset("cpu"), "tf_efficientnet_lite0", 4, {"features": torch.zeros(3, 4)},
                       {"w": torch.ones(64)}, 1.0)


@pytest.mark.skipif(not DEV_FULL.exists(), reason="needs /dev/full")
def test_full_disk_during_model_save_says_no_space_and_keeps_the_old_model(tmp_path, monkeypatch):
    target = tmp_path / "model.pt"
    target.write_bytes(b"the model of yesterday")
    real_save = torch.save

    def save_to_full_disk(obj, f, *a, **k):   # the real torch writer meeting a full disk
        with open(DEV_FULL, "wb") as full:
            real_save(obj, full, *a, **k)

    monkeypatch.setattr(torch, "save", save_to_full_disk)
    with pytest.raises(WriteError) as e:
        _tiny_bundle().save(target)
    assert f"no space left on {tmp_path}" in str(e.value) and str(target) in str(e.value)
    assert target.read_bytes() == b"the model of yesterday"
    assert _temps(tmp_path) == []


@pytest.mark.skipif(not DEV_FULL.exists(), reason="needs /dev/full")
def test_torch_write_runtime_error_on_a_full_disk_is_no_space(tmp_path, monkeypatch):
    """torch.save to a path (its C++ writer) raises RuntimeError '[enforce fail at
    inline_container.cc]' without an errno: the free space tells it was the disk."""
    real_save = torch.save
    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda p: type("U", (), {"free": 100})())
    with pytest.raises(WriteError, match="no space left on .*100 bytes free"):
        atomic_write_with(tmp_path / "run.ckpt", lambda fh: real_save({"a": torch.zeros(10000)}, str(DEV_FULL)))
    assert _temps(tmp_path) == []


def test_torch_write_runtime_error_with_space_left_names_the_file(tmp_path):
    def fail(fh):
        fh.write(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: file write failed")
    with pytest.raises(WriteError, match=r"run\.ckpt: the write failed .*file write failed"):
        atomic_write_with(tmp_path / "run.ckpt", fail)
    assert not (tmp_path / "run.ckpt").exists() and _temps(tmp_path) == []


def test_other_runtime_errors_pass_through_and_leave_no_temp(tmp_path):
    def bug(fh):
        raise RuntimeError("Expected all tensors to be on the same device")
    with pytest.raises(RuntimeError, match="same device"):
        atomic_write_with(tmp_path / "m.pt", bug)
    assert _temps(tmp_path) == []


def test_failure_creating_the_folder_or_temp_is_a_write_error(tmp_path, monkeypatch):
    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(fileio.tempfile, "mkstemp", read_only)
    with pytest.raises(WriteError, match=f"{tmp_path} is read-only"):
        fileio.atomic_write_text(tmp_path / "scores.csv", "x")
    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(WriteError, match=f"{tmp_path} is read-only"):
        fileio.atomic_write_text(tmp_path / "new" / "scores.csv", "x")


# ---- checking the output place before the work -------------------------------------------------
def test_ensure_writable_names_a_read_only_place(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    make_read_only(ro, monkeypatch)
    try:
        with pytest.raises(WriteError, match=f"{ro} is (read-only|not writable)"):
            ensure_writable(ro)
        with pytest.raises(WriteError, match=f"cannot write {ro}/out: {ro} is (read-only|not writable)"):
            ensure_writable(ro / "out")           # not there yet: its existing parent is probed
    finally:
        ro.chmod(0o755)
    ensure_writable(tmp_path / "a" / "b")         # fine, and creates nothing
    assert not (tmp_path / "a").exists()
    assert _temps(tmp_path) == [] and _temps(ro) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="modes do not stop root")
def test_ensure_writable_on_a_chmod_555_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(WriteError, match="not writable"):
            ensure_writable(ro)
    finally:
        ro.chmod(0o755)


def test_ensure_writable_wants_free_space(tmp_path, monkeypatch):
    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda p: type("U", (), {"free": 5000})())
    with pytest.raises(WriteError, match=r"no space left on .*4\.9 KB free, at least 64\.0 MB needed"):
        ensure_writable(tmp_path, 64 << 20)
    ensure_writable(tmp_path, 4096)


# ---- temp files of killed writers --------------------------------------------------------------
_SLOW_WRITER = """
import sys, time
from core.fileio import atomic_write_with
def slow(fh):
    fh.write(b"half a model")
    fh.flush()
    print("writing", flush=True)
    time.sleep(120)
atomic_write_with(sys.argv[1], slow)
"""


def _start_writer(target: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(target)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    return proc


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_a_write_killed_part_way_is_cleaned_by_the_next_write(tmp_path, monkeypatch):
    monkeypatch.setattr(fileio, "_last_clean", {})
    target = tmp_path / "model.pt"
    killed = _start_writer(target)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    left = _temps(tmp_path)
    assert len(left) == 1 and left[0].startswith(f".model.pt.{killed.pid}-")
    alive = _start_writer(target)                  # a writer still at work keeps its temp
    try:
        atomic_write_with(target, lambda fh: fh.write(b"new model"))
        assert target.read_bytes() == b"new model"
        left = _temps(tmp_path)
        assert len(left) == 1 and left[0].startswith(f".model.pt.{alive.pid}-")
    finally:
        alive.kill()
        alive.wait()


def test_stale_temp_rules(tmp_path):
    old = time.time() - 2 * 3600
    legacy_old = tmp_path / ".model.pt.abcd1234.pt.tmp"        # before pids were in the names
    legacy_new = tmp_path / ".model.pt.efgh5678.pt.tmp"
    mine = tmp_path / f".scores.csv.{os.getpid()}-x1y2z3w4.csv.tmp"
    foreign = [tmp_path / ".notes.tmp", tmp_path / ".a.b.tmp", tmp_path / "model.pt.tmp"]
    for p in [legacy_old, legacy_new, mine, *foreign]:
        p.write_bytes(b"")
    os.utime(legacy_old, (old, old))
    for p in foreign:
        os.utime(p, (old, old))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    dead_tmp = tmp_path / f".img.png.{dead.pid}-abcdefgh.png.tmp"
    dead_tmp.write_bytes(b"")
    gone = set(remove_stale_temps(tmp_path))
    assert legacy_old in gone and (dead_tmp in gone or os.name != "posix")
    assert all(p.exists() for p in [legacy_new, mine, *foreign])


def test_safe_name_escapes_undecodable_bytes_only():
    assert safe_name("ñandú 画像.png") == "ñandú 画像.png"
    bad = os.fsdecode(b"bad\xff.png")
    assert safe_name(bad) == "bad\\xff.png" != safe_name(os.fsdecode(b"bad\xfe.png"))
    safe_name(bad).encode("utf-8")


def test_the_check_before_training_removes_a_dead_writers_temp(tmp_path):
    """A train killed while writing its model left .model.pt.<pid>-xxxx.pt.tmp: the next run's
    check of the output place (api.fit, api.predict) removes it before anything else."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = tmp_path / f".model.pt.{dead.pid}-k7q2x9ab.pt.tmp"
    left.write_bytes(b"")
    ensure_writable(tmp_path)
    assert not left.exists() or os.name != "posix"
