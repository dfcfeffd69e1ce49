"""Run as a subprocess by test_store_kill.py: writes edits in a loop, printing the number of each
edit once it is committed, until it is SIGKILLed.

    python kill_writer.py store PROJECT     store-level edits (boxes and masks, alternating)
    python kill_writer.py window PROJECT    brush strokes through the real window (offscreen)
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # the repository root

import numpy as np  # noqa: E402

from app.store import Store  # noqa: E402
from core.labels import RotatedBox  # noqa: E402


def store_loop(project: Path) -> None:
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
        print(i, flush=True)
        i += 1


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
    store_loop(project) if mode == "store" else window_loop(project)
