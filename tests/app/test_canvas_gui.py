"""Drive the real MainWindow with mouse and keyboard; check what reached the database."""
from __future__ import annotations

import math

import pytest
from PySide6.QtCore import QPoint, Qt

from app.canvas import box_geometry as bg
from app.canvas.tools.box import ROTATE_HANDLE_PX
from app.project.store import decode_mask

from qt_drive import (db, click, drag, fraction_point, hover, image_point, key, line, wait_image, wheel,
                      widget_point)

pytestmark = pytest.mark.gui
CTRL = Qt.KeyboardModifier.ControlModifier
SHIFT = Qt.KeyboardModifier.ShiftModifier


def stored_mask(window):
    with db(window) as s:
        rec = s.label_record(window.canvas.document.image_id)
    return None if rec.mask_png is None else decode_mask(rec.mask_png)


def stored(window):
    with db(window) as s:
        return s.label_record(window.canvas.document.image_id)


def undo(qtbot, window):
    key(qtbot, window, Qt.Key.Key_Z, CTRL)


def redo(qtbot, window, how="shift"):
    if how == "shift":
        key(qtbot, window, Qt.Key.Key_Z, CTRL | SHIFT)
    else:
        key(qtbot, window, Qt.Key.Key_Y, CTRL)


def test_brush_eraser_undo_redo(qtbot, window):
    c = window.canvas
    key(qtbot, window, Qt.Key.Key_B)
    assert c.tool.name == "brush"
    c.set_brush_radius(2)
    drag(qtbot, c, line(widget_point(c, 10.5, 20.5), widget_point(c, 40.5, 20.5), 12))
    m = stored_mask(window)
    assert m is not None and m.shape == (48, 64)
    assert m[20, 10:41].all() and m[18, 25] and m[22, 25]          # radius 2 around the stroke
    assert not m[24, 25] and not m[20, 45] and m.sum() < 5 * 40       # nothing far from it

    key(qtbot, window, Qt.Key.Key_E)
    c.set_brush_radius(1)                                             # a one-pixel eraser
    drag(qtbot, c, line(widget_point(c, 20.5, 20.5), widget_point(c, 30.5, 20.5), 10))
    m2 = stored_mask(window)
    assert not m2[20, 20:31].any() and m2[19, 25] and m2[21, 25]
    undo(qtbot, window)
    assert (stored_mask(window) == m).all()
    redo(qtbot, window)
    assert (stored_mask(window) == m2).all()
    undo(qtbot, window)
    undo(qtbot, window)
    assert stored_mask(window) is None                                # back to no mask at all
    redo(qtbot, window, how="y")
    assert (stored_mask(window) == m).all()


def test_brush_size_keys_and_preview(qtbot, window):
    c = window.canvas
    key(qtbot, window, Qt.Key.Key_B)
    c.set_brush_radius(8)
    key(qtbot, window, Qt.Key.Key_BracketRight)
    assert c.brush_radius == 10
    key(qtbot, window, Qt.Key.Key_BracketLeft)
    key(qtbot, window, Qt.Key.Key_BracketLeft)
    assert c.brush_radius == 6
    assert window.brush_label.text().startswith("brush 6 px")
    hover(c, widget_point(c, 30.5, 20.5))
    assert c.tool._hover == pytest.approx(image_point(c, widget_point(c, 30.5, 20.5)))


def test_polygon_fill_and_undo(qtbot, window):
    c = window.canvas
    key(qtbot, window, Qt.Key.Key_P)
    pts = [(5.5, 5.5), (25.5, 5.5), (25.5, 15.5), (5.5, 15.5)]
    for x, y in pts:
        click(qtbot, c, widget_point(c, x, y))
    assert c.tool.busy() and stored_mask(window) is None              # nothing saved before closing
    click(qtbot, c, widget_point(c, *pts[0]))                         # close on the first point
    m = stored_mask(window)
    assert m[7:15, 7:25].all() and not m[20, 15] and not m[10, 30]
    assert not c.tool.busy()
    undo(qtbot, window)
    assert stored_mask(window) is None
    # Enter closes too; Backspace drops the last point first.
    for x, y in [(40.5, 30.5), (60.5, 30.5), (60.5, 45.5), (2.5, 2.5)]:
        click(qtbot, c, widget_point(c, x, y))
    key(qtbot, window, Qt.Key.Key_Backspace)
    key(qtbot, window, Qt.Key.Key_Return)
    m = stored_mask(window)
    assert m[35, 55] and not m[10, 10]


def test_box_draw_rotate_snap_move_resize_delete(qtbot, window):
    c = window.canvas
    key(qtbot, window, Qt.Key.Key_R)
    drag(qtbot, c, line(widget_point(c, 10, 10), widget_point(c, 30, 20)))
    (box,) = stored(window).boxes
    assert (box.cx, box.cy, box.w, box.h, box.angle) == pytest.approx((20, 15, 20, 10, 0), abs=0.15)

    def rotate_to(deg, modifiers=Qt.KeyboardModifier.NoModifier):
        b = c.document.boxes[0]
        handle = widget_point(c, *bg.rotation_handle(b, ROTATE_HANDLE_PX / c.view.scale))
        r = 12.0   # image px from the centre, in the direction of ``deg`` (clockwise from up)
        target = widget_point(c, b.cx + r * math.sin(math.radians(deg)), b.cy - r * math.cos(math.radians(deg)))
        drag(qtbot, c, line(handle, target, 6), modifiers)
        return stored(window).boxes[0]

    b = rotate_to(37)
    assert b.angle == pytest.approx(37, abs=1.0) and (b.cx, b.cy, b.w, b.h) == pytest.approx((20, 15, 20, 10), abs=0.15)
    b = rotate_to(37, SHIFT)
    assert b.angle == pytest.approx(30, abs=1e-9)                      # snapped to 15 degrees
    b = rotate_to(-100, SHIFT)
    assert b.angle == pytest.approx(-105, abs=1e-9)

    drag(qtbot, c, line(widget_point(c, 20, 15), widget_point(c, 25, 18), 5))   # move
    b = stored(window).boxes[0]
    assert (b.cx, b.cy, b.angle) == pytest.approx((25, 18, -105), abs=0.15)

    # Resize by the right-edge handle: the left edge stays, the width grows by 4 px.
    left_before = bg.from_local(b, -b.w / 2, 0)
    hx, hy = bg.from_local(b, b.w / 2, 0)
    tx, ty = bg.from_local(b, b.w / 2 + 4, 0)
    drag(qtbot, c, line(widget_point(c, hx, hy), widget_point(c, tx, ty), 4))
    r = stored(window).boxes[0]
    assert r.w == pytest.approx(b.w + 4, abs=0.2) and r.h == pytest.approx(b.h, abs=1e-6)
    assert bg.from_local(r, -r.w / 2, 0) == pytest.approx(left_before, abs=0.2)

    undo(qtbot, window)
    assert stored(window).boxes[0] == c.document.boxes[0]
    assert stored(window).boxes[0].w == pytest.approx(b.w, abs=1e-6)
    redo(qtbot, window)
    assert stored(window).boxes[0].w == pytest.approx(b.w + 4, abs=0.2)

    key(qtbot, window, Qt.Key.Key_Delete)
    assert stored(window).boxes == []
    undo(qtbot, window)
    assert len(stored(window).boxes) == 1
    for _ in range(6):   # resize, move, rotate x3, draw
        undo(qtbot, window)
    assert stored(window).boxes == []


def test_click_outside_a_box_deselects_and_tiny_drag_draws_nothing(qtbot, window):
    c = window.canvas
    key(qtbot, window, Qt.Key.Key_R)
    drag(qtbot, c, line(widget_point(c, 10, 10), widget_point(c, 30, 20)))
    assert c.tool.selected == 0
    click(qtbot, c, widget_point(c, 50, 40))
    assert c.tool.selected is None and len(stored(window).boxes) == 1
    key(qtbot, window, Qt.Key.Key_Delete)                                   # nothing selected
    assert len(stored(window).boxes) == 1


def test_blocks_click_drag_and_clear(qtbot, window):
    c = window.canvas
    key(qtbot, window, Qt.Key.Key_K)
    grid = c.document.grid
    assert (grid.rows, grid.cols, grid.block_w, grid.block_h) == (24, 32, 2.0, 2.0)

    def centre(r, col):
        x0, y0, x1, y1 = grid.block_rect(r, col)
        return widget_point(c, (x0 + x1) / 2, (y0 + y1) / 2)

    click(qtbot, c, centre(3, 4))
    rec = stored(window)
    assert rec.blocks.cells == [(3, 4)] and (rec.blocks.image_size, rec.blocks.block) == (256, 8)
    drag(qtbot, c, line(centre(5, 2), centre(5, 9), 3))                     # fast drag: no gaps
    assert sorted(stored(window).blocks.cells) == [(3, 4)] + [(5, k) for k in range(2, 10)]
    drag(qtbot, c, line(centre(5, 2), centre(5, 5), 3))                      # starts on a marked cell
    assert sorted(stored(window).blocks.cells) == [(3, 4)] + [(5, k) for k in range(6, 10)]
    undo(qtbot, window)
    assert len(stored(window).blocks.cells) == 9
    undo(qtbot, window)
    undo(qtbot, window)
    assert stored(window).blocks is None
    redo(qtbot, window)
    assert stored(window).blocks.cells == [(3, 4)]


def test_tags_with_number_keys(qtbot, window):
    key(qtbot, window, Qt.Key.Key_1)
    assert stored(window).tag == "normal" and window.actions["tag_normal"].isChecked()
    key(qtbot, window, Qt.Key.Key_2)
    assert stored(window).tag == "defective"
    key(qtbot, window, Qt.Key.Key_0)
    assert stored(window).tag is None
    undo(qtbot, window)
    assert stored(window).tag == "defective"
    with db(window) as s:
        assert s.image(window.canvas.document.image_id).status == "defective"
    row = window.image_list.model.rows[0]
    assert row.status == "defective"                                         # the list follows


def test_wheel_zoom_keeps_the_point_under_the_cursor_and_pan(qtbot, window):
    c = window.canvas
    p = fraction_point(c, 0.7, 0.3)
    before = image_point(c, p)
    s0 = c.view.scale
    wheel(c, p, 240)
    assert c.view.scale == pytest.approx(s0 * 1.0015 ** 240)
    assert image_point(c, p) == pytest.approx(before, abs=1e-9)
    wheel(c, p, -600)
    assert c.view.scale < s0 and image_point(c, p) == pytest.approx(before, abs=1e-9)
    # Middle-button drag pans by exactly the mouse motion.
    ox, oy = c.view.ox, c.view.oy
    drag(qtbot, c, [QPoint(300, 300), QPoint(340, 310), QPoint(350, 330)], button=Qt.MouseButton.MiddleButton)
    assert (c.view.ox - ox, c.view.oy - oy) == pytest.approx((50, 30))
    key(qtbot, window, Qt.Key.Key_F)
    assert c.view.scale == pytest.approx(s0)


def test_navigation_keeps_each_images_history(qtbot, window):
    c = window.canvas
    first = c.document.image_id
    key(qtbot, window, Qt.Key.Key_1)
    key(qtbot, window, Qt.Key.Key_D)
    wait_image(qtbot, window, first + 1)
    assert stored(window).tag is None and not window.actions["undo"].isEnabled()
    key(qtbot, window, Qt.Key.Key_A)
    wait_image(qtbot, window, first)
    assert c.document.tag == "normal" and window.actions["undo"].isEnabled()
    undo(qtbot, window)
    assert stored(window).tag is None


def test_escape_drops_a_stroke_in_progress_and_space_or_tag_tool_pans(qtbot, window):
    from qt_drive import LEFT, NO_MOD, _move
    c = window.canvas
    key(qtbot, window, Qt.Key.Key_B)
    c.set_brush_radius(3)
    qtbot.mousePress(c, LEFT, NO_MOD, widget_point(c, 10, 10))
    _move(c, widget_point(c, 30, 10))
    assert c.document.mask.any()                       # painted live...
    key(qtbot, window, Qt.Key.Key_Escape)
    qtbot.mouseRelease(c, LEFT, NO_MOD, widget_point(c, 30, 10))
    assert not c.document.mask.any() and stored_mask(window) is None    # ...and dropped
    assert not window.actions["undo"].isEnabled()
    # Space + left drag pans instead of painting.
    ox = c.view.ox
    qtbot.keyPress(c, Qt.Key.Key_Space)
    drag(qtbot, c, [QPoint(300, 300), QPoint(330, 300)])
    qtbot.keyRelease(c, Qt.Key.Key_Space)
    assert c.view.ox == pytest.approx(ox + 30) and not c.document.mask.any()
    # In the tag tool the left button pans too.
    key(qtbot, window, Qt.Key.Key_T)
    oy = c.view.oy
    drag(qtbot, c, [QPoint(300, 300), QPoint(300, 340)])
    assert (c.view.ox, c.view.oy) == pytest.approx((ox + 30, oy + 40))
    assert stored(window).boxes == [] and stored_mask(window) is None
