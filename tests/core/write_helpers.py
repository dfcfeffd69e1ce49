"""Making a folder refuse writes in tests, also when the tests run as root."""
from __future__ import annotations

import errno
import os
from pathlib import Path

from core import fileio


def make_read_only(folder: Path, monkeypatch) -> None:
    """Make ``folder`` refuse new files: chmod 0o555 for a normal user; as root (where modes do not
    stop writes) new files in it get the kernel's answer on a read-only mount, EROFS. Undo the
    chmod with ``folder.chmod(0o755)`` before tmp_path cleanup."""
    if os.name == "posix" and os.geteuid() != 0:
        folder.chmod(0o555)
        return
    real = fileio.tempfile.mkstemp

    def mkstemp(*a, dir=None, **k):
        if dir is not None and Path(dir).resolve() == folder.resolve():
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*a, dir=dir, **k)
    monkeypatch.setattr(fileio.tempfile, "mkstemp", mkstemp)
