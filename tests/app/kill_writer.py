"""Run as a subprocess by test_store_kill.py: brush strokes through the real window (offscreen),
printing the number of each stroke once it is committed, until it is SIGKILLed. (The store-level
writer is bench/drill.py's.)

    python kill_writer.py window PROJECT
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # the repository root


def window_loop(project: Path) -> None:
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6.QtCore import QPoint, Qt, QTimer
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow
    from app.settings import AppSettings

    app = QApplication([])
    win = MainWindow(project, AppSettings(project.parent / "kill-user.ini"))
    win.resize(900, 700)
    win.show()
    win.set_tool("brush")
    win.canvas.set_brush_radius(1)
    state = {"k": 0}

    def stroke():
        c = win.canvas
        if not c.has_image():
            return
        k = state["k"]
        h = c.document.height
        y = k % h
        win.set_tool("brush" if (k // h) % 2 == 0 else "eraser")   # passes alternate paint / erase
        a = QPoint(*map(round, c.view.to_widget(2.5, y + 0.5)))
        b = QPoint(*map(round, c.view.to_widget(20.5, y + 0.5)))
        QTest.mousePress(c, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, a)
        QTest.mouseMove(c, b)
        QTest.mouseRelease(c, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, b)
        print(k, flush=True)          # the release pushed the command, which committed it
        state["k"] = k + 1

    QTimer(win, interval=0, timeout=stroke).start()
    app.exec()


if __name__ == "__main__":
    mode, project = sys.argv[1], Path(sys.argv[2])
    if mode != "window":
        sys.exit(f"unknown mode {mode!r}: only window (the store writer is bench/drill.py's)")
    window_loop(project)
