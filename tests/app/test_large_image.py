"""A 4000 x 4000 image stays fast: background loading, a pyramid for zoomed-out views, brush
strokes that repaint only their dirty rectangle, and masks saved in well under a second."""
from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt

from app.project.importer import import_folder
from app.main_window import MainWindow
from app.settings import AppSettings
from app.project.store import Store, decode_mask
from core.data.images import write_png

from qt_drive import _move, db, image_point, wait_image, wheel, widget_point

pytestmark = pytest.mark.gui
SIZE = 4000


@pytest.fixture(scope="module")
def big_project(tmp_path_factory):
    root = tmp_path_factory.mktemp("big")
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    img = np.dstack([(x * 255 // SIZE), (y * 255 // SIZE), np.full_like(x, 128)]).astype(np.uint8)
    cv2.circle(img, (2500, 1500), 200, (20, 20, 20), -1)
    write_png(root / "src" / "big.png", img)
    with Store.create(root / "proj") as s:
        assert len(import_folder(s, root / "src", copy=False, split="test").added) == 1
    return root / "proj"


def test_4000px_image_draws_only_dirty_rects_and_saves_fast(qtbot, big_project, tmp_path):
    w = MainWindow(big_project, AppSettings(tmp_path / "u.ini"))
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    qtbot.waitExposed(w)
    wait_image(qtbot, w, timeout=20000)
    c = w.canvas
    assert (c.image.width, c.image.height) == (SIZE, SIZE) and len(c.image.levels) >= 2
    painted = []
    original = c.paintEvent

    def spy(event):
        painted.append(event.rect().width() * event.rect().height())
        original(event)

    c.paintEvent = spy
    w.set_tool("brush")
    c.set_brush_radius(20)
    c.zoom(4.0, QPoint(c.width() // 2, c.height() // 2))           # zoomed in on part of it
    qtbot.wait(50)
    cx, cy = image_point(c, QPoint(c.width() // 2, c.height() // 2))
    start = widget_point(c, cx - 60, cy)
    qtbot.mousePress(c, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start)
    painted.clear()
    t0 = time.perf_counter()
    moves = 40
    for i in range(1, moves + 1):
        _move(c, widget_point(c, cx - 60 + 3 * i, cy + (i % 5)))
        qtbot.wait(1)                                              # let the repaint happen
    per_move = (time.perf_counter() - t0) / moves
    t1 = time.perf_counter()
    qtbot.mouseRelease(c, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                       widget_point(c, cx + 60, cy))
    save_s = time.perf_counter() - t1
    widget_area = c.width() * c.height()
    print(f"\nper move {per_move*1000:.1f} ms, save {save_s*1000:.0f} ms, biggest repaint {max(painted)/widget_area:.1%}")
    assert painted and max(painted) < 0.25 * widget_area, "a brush dab repainted most of the canvas"
    assert per_move < 0.05, f"{per_move * 1000:.1f} ms per brush move"
    assert save_s < 1.0, f"saving the stroke took {save_s:.2f} s"
    with db(w) as s:
        m = decode_mask(s.label_record(c.document.image_id).mask_png)
    assert m.shape == (SIZE, SIZE) and m[int(cy), int(cx)] and m.sum() < 20000
    # Zooming far out and back keeps the point under the cursor, on the pyramid's levels.
    p = QPoint(300, 200)
    before = image_point(c, p)
    wheel(c, p, -1200)
    assert c.image.level_for(c.view.scale)[0] > 1
    wheel(c, p, 1200)
    assert image_point(c, p) == pytest.approx(before, abs=1e-6)
    w.close()
