"""Atomic writes: a reader sees the old file or the new one, never half of one.

Everything the core writes (models, heatmaps, CSVs, label files) goes through here: write to a
temporary file in the same folder, flush and fsync, then os.replace, which is atomic on POSIX and
Windows. A kill at any moment leaves at worst a stray ``.tmp`` file, never a truncated output;
the temp name holds the writer's pid, and the next write of the same file removes the temp files
of writers that are dead (:func:`remove_stale_temps`).
"""
from __future__ import annotations

import contextlib
import errno
import io
import math
import os
import re
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

from .errors import WriteError


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o077)          # elsewhere: read by setting; 077 so a racing file is never wider
    os.umask(old)
    return old


# Torch's own C++ writer (torch.save to a path) turns a full disk into a RuntimeError without an
# errno; these are the phrases of its write failures (save through a file handle to get the OSError).
_TORCH_WRITE_FAILURES = ("enforce fail at inline_container", "PytorchStreamWriter failed",
                         "file write failed", "unexpected pos")
LOW_SPACE_BYTES = 1 << 20          # below this much free space a failed write is a full disk
STALE_LEGACY_TEMP_S = 3600         # temp names without a pid (before pids were added): stale after 1 h


def _existing_folder(path: Path) -> Path:
    """``path`` or its nearest existing ancestor: the place whose file system a write goes to."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    k = min(3, int(math.log(n, 1024)))
    return f"{n / 1024 ** k:.1f} {('KB', 'MB', 'GB')[k - 1]}"


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def write_error(path: str | Path, exc: BaseException, place: Path | None = None) -> WriteError | None:
    """``exc`` (an OSError, or torch's write RuntimeError) as a plain WriteError naming ``path``
    and the place at fault (``place``, by default the nearest existing folder of ``path``); None
    when ``exc`` is not a write failure (e.g. a bug: re-raise it)."""
    path = Path(path)
    folder = place or _existing_folder(path.parent)
    code = getattr(exc, "errno", None) if isinstance(exc, OSError) else None
    if isinstance(exc, RuntimeError) and not isinstance(exc, OSError):
        if not any(s in str(exc) for s in _TORCH_WRITE_FAILURES):
            return None
        free = _free_bytes(folder)
        if free is not None and free < LOW_SPACE_BYTES:
            code = errno.ENOSPC
        else:
            return WriteError(path, f"the write failed ({str(exc).strip()[:200]}); check that {folder} "
                                    f"has space and is still there")
    elif not isinstance(exc, OSError):
        return None
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        free = _free_bytes(folder)
        what = "no space left" if code == errno.ENOSPC else "disk quota exceeded"
        return WriteError(path, f"{what} on {folder}" + (f" ({_size(free)} free now)" if free is not None else "")
                          + "; free some space or choose another place")
    if code == errno.EROFS:
        return WriteError(path, f"{folder} is read-only (a read-only file system); choose another place")
    if code in (errno.EACCES, errno.EPERM):
        return WriteError(path, f"{folder} is not writable (permission denied); choose another place")
    return WriteError(path, exc.strerror or str(exc))


# ---- temporary files of killed writers ---------------------------------------------------------
# Our temp names: ``.<target>.<pid>-<random><suffix>.tmp`` (suffix: the target's), and before pids
# were added ``.<target>.<random 8><suffix>.tmp``.
_TEMP_NAME = re.compile(r"\.(?P<target>.+)\.(?:(?P<pid>\d+)-[a-z0-9_]+|[a-z0-9_]{8})(?P<suffix>(?:\.[^.]+)?)\.tmp")
CLEAN_EVERY_S = 60.0               # a folder is scanned for stale temps at most once a minute
_last_clean: dict[str, float] = {}


def writer_may_be_alive(pid: int | None, mtime: float, max_age_s: float = STALE_LEGACY_TEMP_S) -> bool:
    """Could the process that made a temp file (``pid``, or None when the name carries none) still
    be writing it? This process: yes. On POSIX a pid is probed with signal 0; without a pid, or on
    Windows (where os.kill(pid, 0) would end the process), the file's age decides."""
    if pid is not None and pid == os.getpid():
        return True
    if pid is None or os.name != "posix":
        return time.time() - mtime < max_age_s
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:                 # EPERM: alive, another user's
        return True
    return True


def _is_stale(folder: Path, name: str) -> bool:
    m = _TEMP_NAME.fullmatch(name)
    if not m or Path(m["target"]).suffix != m["suffix"]:
        return False
    try:
        mtime = (folder / name).stat().st_mtime
    except OSError:
        return False
    return not writer_may_be_alive(int(m["pid"]) if m["pid"] is not None else None, mtime)


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Remove the temp files of atomic writes into ``folder`` whose writer died part way (a kill -9
    skips every cleanup). A live writer's temp is never touched (its pid is in the name); a temp
    without a pid (older versions), or any temp on Windows where a pid cannot be probed safely,
    is removed once it is an hour old."""
    folder = Path(folder)
    gone: list[Path] = []
    try:
        names = [n for n in os.listdir(folder) if n.startswith(".") and n.endswith(".tmp")]
    except OSError:
        return gone
    for name in names:
        if _is_stale(folder, name):
            try:
                (folder / name).unlink()
                gone.append(folder / name)
            except OSError:          # gone meanwhile, or not ours to remove: leave it
                pass
    return gone


def _remove_stale_temps_now_and_then(folder: Path) -> None:
    """remove_stale_temps at most once a minute per folder: a folder of 100,000 images written
    one by one is listed once, not 100,000 times."""
    key, now = os.path.abspath(folder), time.monotonic()
    if now - _last_clean.get(key, -CLEAN_EVERY_S) >= CLEAN_EVERY_S:
        _last_clean[key] = now
        remove_stale_temps(folder)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    Any failure (a full disk, a read-only or forbidden folder, torch's write error, a kill signal
    turned into an exception) removes the temporary file and leaves ``path`` as it was; write
    failures become a :class:`WriteError` that says what is wrong and where."""
    path = Path(path)
    suffix = suffix or path.suffix
    tmp_path: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps_now_and_then(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=suffix + ".tmp",
                                   dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp makes the file 0600; give it the mode the file had, or a new file's (0666 less
        # the umask), so exports stay readable by the other users of a shared line computer
        try:
            os.chmod(tmp_path, stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o666 & ~_umask())
        except OSError:
            pass   # a file system without modes (FAT, some network shares): keep what it gave
        os.replace(tmp_path, path)
    except (OSError, RuntimeError) as exc:
        if tmp_path is not None:
            _unlink_quietly(tmp_path)
        err = write_error(path, exc)
        if err is None:
            raise
        raise WriteError(path, err.problem + ". Nothing was overwritten.") from exc
    except BaseException:
        if tmp_path is not None:
            _unlink_quietly(tmp_path)
        raise


def _unlink_quietly(p: Path) -> None:
    """Remove a temp file; a failure here must not hide the error that brought us here."""
    try:
        p.unlink(missing_ok=True)
    except OSError:
        pass


def ensure_writable(folder: str | Path, need_bytes: int = LOW_SPACE_BYTES) -> None:
    """Fail at once, not after hours of work, when outputs cannot go to ``folder``: create and
    remove a small probe file in it (or in its nearest existing ancestor, which must then allow
    creating it), and check that ``need_bytes`` are free. Also removes the stale temp files of
    earlier writes into ``folder`` that were killed part way."""
    folder = Path(folder)
    place = _existing_folder(folder)
    if not place.is_dir():
        raise WriteError(folder, f"{place} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".semirest-probe.{os.getpid()}-", suffix=".tmp", dir=place)
        try:
            os.write(fd, bytes(4096))          # a full disk may accept the name, not the data
            os.fsync(fd)
        finally:
            os.close(fd)
            _unlink_quietly(Path(probe))
    except OSError as exc:
        raise write_error(folder, exc, place) from exc
    free = _free_bytes(place)
    if free is not None and free < need_bytes:
        raise WriteError(folder, f"no space left on {place} ({_size(free)} free, at least "
                                 f"{_size(need_bytes)} needed); free some space or choose another place")
    if place == Path(os.path.abspath(folder)):
        remove_stale_temps(place)


def safe_name(name: str | Path) -> str:
    """A file name as valid text for CSVs, JSON and messages: bytes of the name that are not UTF-8
    (Python keeps them as lone surrogates, e.g. a Latin-1 name on Linux) are written as ``\\xff``,
    so two such names stay two. Names that decode cleanly are returned unchanged."""
    name = str(name)
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_with(path: str | Path, writer: Callable[[io.BufferedWriter], None]) -> None:
    """Call ``writer(fh)`` on a binary file handle of the temporary file."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            writer(fh)


def save_npy(path: str | Path, array) -> None:
    """``numpy.save`` to ``path`` atomically (the file is whole or absent)."""
    import numpy as np
    atomic_write_with(path, lambda f: np.save(f, array, allow_pickle=False))
