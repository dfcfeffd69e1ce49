"""Driving the real window: clicks and drags at image coordinates or canvas fractions."""
from __future__ import annotations

import time

from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QMouseEvent, QWheelEvent
from PySide6.QtWidgets import QApplication

NO_MOD = Qt.KeyboardModifier.NoModifier
LEFT = Qt.MouseButton.LeftButton


def widget_point(canvas, x: float, y: float) -> QPoint:
    """The widget pixel showing image point (x, y)."""
    wx, wy = canvas.view.to_widget(x, y)
    return QPoint(round(wx), round(wy))


def fraction_point(canvas, fx: float, fy: float) -> QPoint:
    """The widget pixel at a fraction of the *image* as shown (0..1 across it)."""
    return widget_point(canvas, fx * canvas.image.width, fy * canvas.image.height)


def image_point(canvas, p: QPoint) -> tuple[float, float]:
    return canvas.view.to_image(p.x(), p.y())


def _move(widget, pos: QPoint, buttons=LEFT, modifiers=NO_MOD) -> None:
    # qtbot.mouseMove cannot carry modifiers (Shift-snapping), so moves are sent as real events.
    gp = widget.mapToGlobal(pos)
    ev = QMouseEvent(QEvent.Type.MouseMove, QPointF(pos), QPointF(gp), Qt.MouseButton.NoButton,
                     buttons, modifiers)
    QApplication.sendEvent(widget, ev)


def drag(qtbot, widget, points: list[QPoint], modifiers=NO_MOD, button=LEFT) -> None:
    """Press at the first point, move through the rest, release at the last."""
    qtbot.mousePress(widget, button, modifiers, points[0])
    for p in points[1:]:
        _move(widget, p, button, modifiers)
    qtbot.mouseRelease(widget, button, modifiers, points[-1])


def line(a: QPoint, b: QPoint, steps: int = 8) -> list[QPoint]:
    return [QPoint(round(a.x() + (b.x() - a.x()) * i / steps), round(a.y() + (b.y() - a.y()) * i / steps))
            for i in range(steps + 1)]


def click(qtbot, widget, p: QPoint, modifiers=NO_MOD) -> None:
    qtbot.mouseClick(widget, LEFT, modifiers, p)


def hover(widget, p: QPoint) -> None:
    _move(widget, p, Qt.MouseButton.NoButton)


def wheel(widget, p: QPoint, delta: int) -> None:
    gp = widget.mapToGlobal(p)
    ev = QWheelEvent(QPointF(p), QPointF(gp), QPoint(0, 0), QPoint(0, delta), Qt.MouseButton.NoButton,
                     NO_MOD, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, ev)


def key(qtbot, window, k, modifiers=NO_MOD) -> None:
    """A key press on the canvas: goes through the window's shortcut map like a real one."""
    qtbot.keyClick(window.canvas, k, modifiers)


def wait_image(qtbot, window, image_id: int | None = None, timeout: int = 5000) -> None:
    def shown():
        c = window.canvas
        assert c.has_image()
        if image_id is not None:
            assert c.document.image_id == image_id
    qtbot.waitUntil(shown, timeout=timeout)


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def tick(self, dt: float) -> None:
        self.t += dt


def settle(qtbot, ms: int = 50) -> None:
    qtbot.wait(ms)
    time.sleep(0)


def db(window):
    """A second connection, like another process reading what the window committed."""
    from app.project.store import Store
    return Store.open(window.store.folder)


def open_main_window(qtbot, folder, tmp_path, devices):
    """The main window on ``folder``, shown, active, with its first image drawn and the canvas
    focused (user settings in ``tmp_path``)."""
    from app.main_window import MainWindow
    from app.settings import AppSettings
    w = MainWindow(folder, AppSettings(tmp_path / "user.ini"), devices=devices)
    qtbot.addWidget(w)
    w.resize(1400, 860)
    w.show()
    qtbot.waitExposed(w)
    w.activateWindow()
    qtbot.waitUntil(w.isActiveWindow)
    wait_image(qtbot, w)
    w.canvas.setFocus()
    return w
