"""Atomic writes: a reader sees the old file or the new one, never half of one.

Everything the core writes (models, heatmaps, CSVs, label files) goes through here: write to a
temporary file in the same folder, flush and fsync, then os.replace, which is atomic on POSIX and
Windows. A kill at any moment leaves at worst a stray ``.tmp`` file, never a truncated output.
"""
from __future__ import annotations

import contextlib
import io
import os
import stat
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from .errors import InputError


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


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=(suffix or path.suffix) + ".tmp",
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
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
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise InputError(path, f"cannot write ({exc.strerror or exc}); nothing was overwritten") from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


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
