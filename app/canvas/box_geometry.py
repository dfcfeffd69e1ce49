"""Rotated-box geometry for the box tool: handles, hit tests, move, resize, rotate. No Qt.

Boxes are core RotatedBox in original-image pixels, OpenCV angle convention: ``angle`` is the
direction of the width axis, degrees clockwise on screen (y down). The box's local frame has
u = (cos a, sin a) along the width and v = (-sin a, cos a) along the height; "above the box" is
-v, where the rotation handle sits.
"""
from __future__ import annotations

import math

from core.data.labels import RotatedBox

# Resize handles as (sx, sy) in the local frame: corners and edge midpoints, clockwise from top-left.
HANDLES = ((-1, -1), (0, -1), (1, -1), (1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0))
MIN_SIZE = 1.0   # px: a box never collapses or flips while resizing


def axes(box: RotatedBox) -> tuple[tuple[float, float], tuple[float, float]]:
    t = math.radians(box.angle)
    return (math.cos(t), math.sin(t)), (-math.sin(t), math.cos(t))


def to_local(box: RotatedBox, x: float, y: float) -> tuple[float, float]:
    (ux, uy), (vx, vy) = axes(box)
    dx, dy = x - box.cx, y - box.cy
    return dx * ux + dy * uy, dx * vx + dy * vy


def from_local(box: RotatedBox, lx: float, ly: float) -> tuple[float, float]:
    (ux, uy), (vx, vy) = axes(box)
    return box.cx + lx * ux + ly * vx, box.cy + lx * uy + ly * vy


def contains(box: RotatedBox, x: float, y: float, margin: float = 0.0) -> bool:
    lx, ly = to_local(box, x, y)
    return abs(lx) <= box.w / 2 + margin and abs(ly) <= box.h / 2 + margin


def handle_points(box: RotatedBox) -> list[tuple[tuple[int, int], tuple[float, float]]]:
    return [((sx, sy), from_local(box, sx * box.w / 2, sy * box.h / 2)) for sx, sy in HANDLES]


def rotation_handle(box: RotatedBox, offset: float) -> tuple[float, float]:
    """The rotation handle: ``offset`` px (image) above the middle of the top edge."""
    return from_local(box, 0.0, -box.h / 2 - offset)


def normalize_angle(a: float) -> float:
    """Into [-180, 180) degrees (the core accepts [-180, 180])."""
    a = math.fmod(a + 180.0, 360.0)
    if a < 0:
        a += 360.0
    return a - 180.0


def moved(box: RotatedBox, dx: float, dy: float) -> RotatedBox:
    return RotatedBox(box.cx + dx, box.cy + dy, box.w, box.h, box.angle)


def resized(box: RotatedBox, handle: tuple[int, int], x: float, y: float) -> RotatedBox:
    """Drag ``handle`` to (x, y); the opposite corner or edge stays where it is."""
    sx, sy = handle
    (ux, uy), (vx, vy) = axes(box)
    ax, ay = from_local(box, -sx * box.w / 2, -sy * box.h / 2)       # the fixed anchor
    du = (x - ax) * ux + (y - ay) * uy
    dv = (x - ax) * vx + (y - ay) * vy
    w = max(MIN_SIZE, sx * du) if sx else box.w
    h = max(MIN_SIZE, sy * dv) if sy else box.h
    cx = ax + sx * w / 2 * ux + sy * h / 2 * vx
    cy = ay + sx * w / 2 * uy + sy * h / 2 * vy
    return RotatedBox(cx, cy, w, h, box.angle)


def rotation_angle(box: RotatedBox, x: float, y: float, snap: float | None = None) -> float:
    """Angle that points the rotation handle at (x, y); ``snap`` rounds to multiples of it."""
    dx, dy = x - box.cx, y - box.cy
    if dx == 0 and dy == 0:
        return box.angle
    # The handle direction is -v = (sin a, -cos a); solve for a.
    a = math.degrees(math.atan2(dx, -dy))
    if snap:
        a = round(a / snap) * snap
    return normalize_angle(a)


def rotated(box: RotatedBox, x: float, y: float, snap: float | None = None) -> RotatedBox:
    return RotatedBox(box.cx, box.cy, box.w, box.h, rotation_angle(box, x, y, snap))


def from_drag(x0: float, y0: float, x1: float, y1: float) -> RotatedBox:
    """The axis-aligned box spanned by a drag (drawn first, rotated afterwards)."""
    return RotatedBox((x0 + x1) / 2, (y0 + y1) / 2, max(abs(x1 - x0), MIN_SIZE),
                      max(abs(y1 - y0), MIN_SIZE), 0.0)
