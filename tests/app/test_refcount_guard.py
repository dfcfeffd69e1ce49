"""Regression guard for the PySide6 6.12.0 reference-count bug.

PySide6-Essentials 6.12.0 on CPython 3.11 drops a reference to ``True`` on every ``Signal.emit()``
and to ``None`` on every void call; the interpreter aborts ("bool_dealloc") after about a thousand
emits, i.e. seconds of mouse motion over the canvas. pyproject.toml therefore pins PySide6 below
6.12 (docs/decisions/0005-pyside6-pin.md). This test fails if an installed PySide6 brings it back.
"""
import os
import subprocess
import sys


def test_emits_and_void_calls_do_not_leak_singleton_references():
    code = ("import sys\n"
            "from PySide6.QtCore import QObject, Signal, QRect\n"
            "from PySide6.QtWidgets import QApplication, QWidget\n"
            "a = QApplication([])\n"
            "class E(QObject):\n    s = Signal()\n"
            "e, w = E(), QWidget()\n"
            "e.s.connect(lambda: None)\n"
            "t0, n0 = sys.getrefcount(True), sys.getrefcount(None)\n"
            "for _ in range(500):\n    e.s.emit(); w.update(QRect(0, 0, 2, 2))\n"
            "print(sys.getrefcount(True) - t0, sys.getrefcount(None) - n0)\n"
            "for _ in range(20000):\n    e.s.emit(); w.update(QRect(0, 0, 2, 2))\n"
            "print('survived')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert r.returncode == 0 and "survived" in r.stdout, r.stderr[-2000:]
    d_true, d_none = map(int, r.stdout.split()[:2])
    # a leak steals one reference per call: -500 or worse; allow a few for interpreter noise
    assert d_true > -50 and d_none > -50, (d_true, d_none)
