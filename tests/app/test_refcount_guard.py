"""The app survives the PySide6 6.12 reference-count bug (stolen refs to None and True)."""
import subprocess
import sys

import pytest

import app._refcount_guard as guard


def test_singletons_cannot_reach_zero(qapp):
    if sys.version_info >= (3, 12):
        pytest.skip("CPython 3.12+ has immortal singletons")
    assert guard.GUARDED
    assert sys.getrefcount(None) > guard.BOOST and sys.getrefcount(True) > guard.BOOST


def test_many_emits_and_void_calls_do_not_abort():
    """In a fresh interpreter: 20,000 emits and void calls (the bug kills it after ~2,000)."""
    code = ("import app\n"
            "from PySide6.QtCore import QObject, Signal, QRect\n"
            "from PySide6.QtWidgets import QApplication, QWidget\n"
            "a = QApplication([])\n"
            "class E(QObject):\n    s = Signal()\n"
            "e, w = E(), QWidget()\n"
            "e.s.connect(lambda: None)\n"
            "for _ in range(20000):\n    e.s.emit(); w.update(QRect(0, 0, 2, 2))\n"
            "print('survived')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert r.returncode == 0 and "survived" in r.stdout, r.stderr[-2000:]
