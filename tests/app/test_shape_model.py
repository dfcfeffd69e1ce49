"""The canvas' shape model without Qt: box geometry, the view transform, the document."""
from __future__ import annotations

import math

import numpy as np
import pytest

from app.canvas import box_geometry as bg
from app.canvas.document import LabelDocument
from app.canvas.view import ViewTransform
from core.data.labels import BlockCells, RotatedBox


def test_handles_follow_opencv_angle_convention():
    b = RotatedBox(50, 40, 20, 10, 90)          # width axis points down the screen
    corners = dict(bg.handle_points(b))
    assert corners[(1, 0)] == pytest.approx((50, 50))      # right-edge middle, rotated to below
    assert corners[(0, -1)] == pytest.approx((55, 40))     # top-edge middle, rotated to the right
    assert bg.rotation_handle(b, 7) == pytest.approx((62, 40))
    assert np.allclose(sorted(map(tuple, b.corners())),
                       sorted(p for (sx, sy), p in bg.handle_points(b) if sx and sy))


@pytest.mark.parametrize("angle", [0, 30, -135, 179])
def test_resize_keeps_the_opposite_side(angle):
    b = RotatedBox(50, 40, 20, 10, angle)
    for handle in bg.HANDLES:
        sx, sy = handle
        anchor = bg.from_local(b, -sx * b.w / 2, -sy * b.h / 2)
        target = bg.from_local(b, sx * (b.w / 2 + 6), sy * (b.h / 2 + 4))
        r = bg.resized(b, handle, *target)
        assert bg.from_local(r, -sx * r.w / 2, -sy * r.h / 2) == pytest.approx(anchor)
        assert r.w == pytest.approx(b.w + 6 if sx else b.w) and r.h == pytest.approx(b.h + 4 if sy else b.h)
        assert r.angle == angle


def test_resize_never_flips_or_collapses():
    b = RotatedBox(50, 40, 20, 10, 0)
    r = bg.resized(b, (1, 1), 0, 0)             # dragged past the opposite corner
    assert r.w == bg.MIN_SIZE and r.h == bg.MIN_SIZE


def test_rotation_angle_and_snap():
    b = RotatedBox(0, 0, 10, 10, 0)
    assert bg.rotation_angle(b, 0, -5) == pytest.approx(0)
    assert bg.rotation_angle(b, 5, 0) == pytest.approx(90)
    assert bg.rotation_angle(b, 0, 5) == pytest.approx(-180)
    assert bg.rotation_angle(b, -5, 0) == pytest.approx(-90)
    t = math.radians(37)
    assert bg.rotation_angle(b, math.sin(t), -math.cos(t)) == pytest.approx(37)
    assert bg.rotation_angle(b, math.sin(t), -math.cos(t), snap=15) == 30
    assert bg.rotation_angle(b, 0, 0) == 0                      # undefined: unchanged
    assert bg.normalize_angle(540) == -180 and bg.normalize_angle(-190) == 170


def test_contains_and_drag():
    b = RotatedBox(50, 40, 20, 10, 45)
    assert bg.contains(b, 50, 40) and not bg.contains(b, 60, 30)
    d = bg.from_drag(30, 20, 10, 5)
    assert (d.cx, d.cy, d.w, d.h, d.angle) == (20, 12.5, 20, 15, 0)


def test_view_zoom_keeps_anchor_and_fit_centres():
    v = ViewTransform()
    v.fit(400, 200, 1000, 600, margin=0)
    assert v.scale == pytest.approx(2.5) and v.to_widget(200, 100) == pytest.approx((500, 300))
    p = v.to_image(123, 456)
    v.zoom_at(123, 456, 3.7)
    assert v.to_image(123, 456) == pytest.approx(p)
    v.zoom_at(0, 0, 1e9)
    assert v.scale == 64.0                                      # clamped


def test_document_brush_polygon_and_patches():
    doc = LabelDocument(1, 64, 48, 256, 8)
    seen = []
    doc.add_listener(lambda kind, rect: seen.append((kind, rect)))
    rect = doc.paint_segment((10.2, 20.7), (30.9, 20.1), 3, 1)
    assert seen == []                                           # live painting is silent
    assert doc.mask[20, 10:31].all() and doc.mask[23, 20] and not doc.mask[24, 20]
    x0, y0, x1, y1 = rect
    assert doc.mask[:y0].sum() == doc.mask[y1:].sum() == doc.mask[:, :x0].sum() == doc.mask[:, x1:].sum() == 0
    one = LabelDocument(2, 10, 10, 256, 8)
    one.paint_segment((4.5, 4.5), (4.5, 4.5), 1, 1)
    assert one.mask.sum() == 1                                  # radius 1 = one pixel, for specks
    r2 = doc.fill_polygon([(40, 30), (60, 30), (60, 45)], 1)
    assert doc.mask[35, 55] and not doc.mask[44, 41]
    before = doc.patch(r2)
    doc.set_patch(r2, np.zeros_like(before))
    assert seen == [("mask", r2)] and not doc.mask[35, 55]


def test_document_keeps_the_grid_its_cells_were_drawn_on():
    doc = LabelDocument.from_record(1, 64, 48, 512, 16, "normal", [], BlockCells(256, 8, [(1, 2)]), None, 3)
    assert (doc.image_size, doc.block, doc.rev) == (256, 8, 3)
    assert doc.block_cells().cells == [(1, 2)]
    empty = LabelDocument.from_record(1, 64, 48, 512, 16, None, [], None, None, 0)
    assert (empty.image_size, empty.block) == (512, 16) and empty.block_cells() is None
    with pytest.raises(ValueError):
        LabelDocument.from_record(1, 64, 48, 256, 8, None, [], None, np.zeros((5, 5), np.uint8), 0)
