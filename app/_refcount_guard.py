"""Guard against a reference-count bug of PySide6 6.12 on CPython < 3.12.

With PySide6-Essentials 6.12.0 on CPython 3.11, every call of a void C++ method (``update()``,
``setText()``, every QPainter call...) returns ``None`` without taking a reference, and every
``Signal.emit()`` does the same with ``True``. Each call therefore steals one reference from
those singletons; after about 2,000 signal emissions (a few seconds of mouse motion) or 11,000
void calls the interpreter aborts with "Fatal Python error: bool_dealloc / none_dealloc"
(see tests/app/test_refcount_guard.py, which measures it). CPython 3.12 made these singletons
immortal (PEP 683), which is why the bug does not show there.

We do what 3.12 does: give None, True and False a reference count so large that no amount of
stolen references can bring it to zero. The singletons are statically allocated and never freed
anyway, so this changes nothing else. Applied once, on import of ``app``; a no-op on 3.12+ and
on debug builds (whose object header is laid out differently).
"""
from __future__ import annotations

import ctypes
import sys

BOOST = 1 << 48   # > 10^14 stolen references: centuries of continuous use


def immortalize_singletons() -> bool:
    """Return True if the counts were raised (CPython < 3.12, release build)."""
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython" or hasattr(sys, "gettotalrefcount"):
        return False
    for obj in (None, True, False):
        before = sys.getrefcount(obj)
        cell = ctypes.c_ssize_t.from_address(id(obj))      # ob_refcnt: the first field of PyObject
        # A sanity check of the layout: the field must read as (about) the reference count; the
        # few references taken or dropped between the two reads do not matter.
        if not (cell.value >= BOOST or abs(cell.value - before) <= 64):
            return False
        if cell.value < BOOST:
            cell.value += BOOST
    return True


GUARDED = immortalize_singletons()
