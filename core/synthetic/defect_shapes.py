"""DefectMaker's defect shapes (REB): Bezier rectangles, scars and clumps as tight bool patches.

Split from :mod:`core.synthetic.defectmaker` (which places, fills and blends them; its docstring describes
the whole generator and the ranges below). Pixel sizes are given at REB's 256 px and scaled with
the image (``_scale``); every shape is rasterised at the image's own scale with sub-pixel vertices.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

REFERENCE_SIDE = 256.0        # REB works at 256 px; pixel sizes below are given there
RECT_AREA = (0.02, 0.15)      # fraction of the image (REB area_ratio_range)
RECT_MAX_ASPECT = 3.3         # REB aspect_ratio
RECT_BEND = 0.28              # control-point push, x the short side (keeps opposite edges apart)
RECT_CORNER_JITTER = 0.06     # corner jitter, x the short side
SCAR_LENGTH = (0.08, 0.45)    # chord, fraction of the side
SCAR_WIDTH_PX = (1.0, 12.0)   # at 256 px, log-uniform
SCAR_MIN_ELONGATION = 3.0     # chord >= 3 x width
SCAR_BEND = 0.6               # control-point push, x the chord
CLUMP_AREA = (0.001, 0.04)    # fraction of the image, log-uniform
CLUMP_MAX_ASPECT = 2.5        # ellipse stretch before the radial irregularity
CLUMP_POINTS = (5, 10)        # 5..9 points on the closed curve
CLUMP_RADIUS = (0.55, 1.0)
BEZIER_K = (0.2, 0.5)         # smoothness of the closed clump curve (REB k_range)
MIN_SIDE = 16
_SUB = 4                      # fixed-point bits for cv2 drawing (sub-pixel vertices)


# ---------------------------------------------------------------------------------------------
# Geometry helpers
# ---------------------------------------------------------------------------------------------
def _scale(shape) -> float:
    """Length scale of an image relative to REB's 256 x 256 (geometric mean of the sides)."""
    return math.sqrt(float(shape[0]) * float(shape[1])) / REFERENCE_SIDE


def _bezier(ctrl: np.ndarray, n: int, closed: bool) -> np.ndarray:
    """Points on cubic Bezier segments ``ctrl`` (S, 4, 2), ``n`` per segment, as (S*n(+1), 2).

    One Bernstein-basis matrix product for all segments. For a closed curve each segment's end is
    the next one's start, so the end point is left out (no duplicated vertices).
    """
    t = np.linspace(0.0, 1.0, n, endpoint=False)[:, None]
    u = 1.0 - t
    basis = np.concatenate([u ** 3, 3 * t * u * u, 3 * t * t * u, t ** 3], axis=1)  # (n, 4)
    pts = np.einsum("nk,skd->snd", basis, ctrl).reshape(-1, 2)
    return pts if closed else np.vstack([pts, ctrl[-1, 3]])


def _smooth_closed(points: np.ndarray, k: float) -> np.ndarray:
    """Control points (N, 4, 2) of a closed C1 curve through ``points`` (N, 2).

    The tangent at each point is parallel to the chord between its neighbours (Catmull-Rom for
    k = 1/3); larger ``k`` gives rounder, bulgier arcs. Same role as REB's smoothing factor.
    """
    nxt = np.roll(points, -1, axis=0)
    tangent = (nxt - np.roll(points, 1, axis=0)) * (k / 2.0)
    return np.stack([points, points + tangent, nxt - np.roll(tangent, -1, axis=0), nxt], axis=1)


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def _polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _crop(canvas: np.ndarray) -> np.ndarray:
    """The tight bounding box of the True pixels of a bool image (an empty image gives (0, 0))."""
    rows, cols = np.flatnonzero(canvas.any(axis=1)), np.flatnonzero(canvas.any(axis=0))
    if rows.size == 0:
        return np.zeros((0, 0), bool)
    return canvas[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _fill_polygon(points: np.ndarray) -> np.ndarray:
    """Rasterise a closed outline (N, 2) in (x, y) order: tight bool patch, sub-pixel vertices."""
    pts = points - np.floor(points.min(axis=0)) + 1.0
    w, h = (np.ceil(pts.max(axis=0)) + 2).astype(int)
    canvas = np.zeros((h, w), np.uint8)
    cv2.fillPoly(canvas, [np.round(pts * (1 << _SUB)).astype(np.int32)], 1, cv2.LINE_8, _SUB)
    return _crop(canvas.view(bool))


def _fit_area(points: np.ndarray, target: float, lo: float, hi: float) -> np.ndarray:
    """Rasterise ``points`` scaled so the *pixel count* is within 10 % of ``target`` and inside
    [lo, hi].

    Scaling the polygon to the target area is exact for the outline but rasterisation adds about
    half a pixel along the boundary (+30 % for a 20-px speck), so the count is checked and the scale
    corrected (0-2 redraws; after 6 the closest draw inside [lo, hi] is kept, else the closest).
    """
    pts = points * math.sqrt(target / max(_polygon_area(points), 1e-9))
    best = None
    for _ in range(6):
        patch = _fill_polygon(pts)
        count = int(np.count_nonzero(patch))
        err = abs(math.log(max(count, 1) / target))
        if lo <= count <= hi and err <= 0.1:
            return patch
        key = (not lo <= count <= hi, err)
        if best is None or key < best[0]:
            best = (key, patch)
        pts = pts * math.sqrt(target / max(count, 1))
    return best[1]


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def _check_shape(shape) -> tuple[int, int]:
    try:
        h, w = int(shape[0]), int(shape[1])
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"shape: expected (H, W), got {shape!r}") from None
    if min(h, w) < MIN_SIDE:
        raise ValueError(f"shape {h}x{w}: DefectMaker needs images of at least "
                         f"{MIN_SIDE}x{MIN_SIDE} px")
    return h, w


# ---------------------------------------------------------------------------------------------
# Shapes: tight bool patches (rasterised at the image's scale, not yet placed)
# ---------------------------------------------------------------------------------------------
def _squeeze_aspect(pts: np.ndarray, max_aspect: float) -> np.ndarray:
    """Squeeze an outline along the long side of its minimum-area bounding rectangle until that
    rectangle's aspect is <= ``max_aspect`` (outward bows on the short edges of a bent rectangle
    lengthen it beyond the sampled aspect; the fix-up rarely needs more than one step)."""
    for _ in range(4):
        _, (rw, rh), deg = cv2.minAreaRect(pts.astype(np.float32))
        if max(rw, rh) <= max_aspect * 0.995 * min(rw, rh):  # 0.5 % margin for float32 rounding
            break
        theta = math.radians(deg) + (0.0 if rw >= rh else math.pi / 2)  # long-side direction
        axis = np.array([math.cos(theta), math.sin(theta)])
        factor = max_aspect * 0.99 * min(rw, rh) / max(rw, rh)
        centre = pts.mean(axis=0)
        along = (pts - centre) @ axis
        pts = pts - np.outer(along * (1.0 - factor), axis)
    return pts


def _rectangle_patch(shape, rng: np.random.Generator, min_area: int = 0) -> np.ndarray:
    h, w = shape
    total = float(h * w)
    lo, hi = RECT_AREA[0] * total, RECT_AREA[1] * total
    lo, hi = max(lo, float(min_area)), max(hi, 1.5 * min_area)
    target = rng.uniform(lo, hi)
    aspect = _log_uniform(rng, 1.0, RECT_MAX_ASPECT)
    long_, short = math.sqrt(aspect), 1.0 / math.sqrt(aspect)  # unit area; scaled below
    corners = np.array([[-long_, -short], [long_, -short], [long_, short], [-long_, short]]) / 2
    corners = corners + rng.uniform(-1, 1, (4, 2)) * RECT_CORNER_JITTER * short
    # Each edge a -> b becomes a cubic Bezier with controls at 1/3 and 2/3 of the edge, pushed
    # along its normal: bulges, dents and S-bends. The push is relative to the short side so the
    # two long edges can never meet (max inward bow 0.75 * 0.28 * short from each side).
    a, b = corners, np.roll(corners, -1, axis=0)
    d = b - a
    normal = np.stack([d[:, 1], -d[:, 0]], axis=1) / np.linalg.norm(d, axis=1, keepdims=True)
    push = rng.uniform(-RECT_BEND, RECT_BEND, (4, 2, 1)) * short
    ctrl = np.stack([a, a + d / 3 + push[:, 0] * normal, a + 2 * d / 3 + push[:, 1] * normal, b], 1)
    pts = _squeeze_aspect(_bezier(ctrl, 16, closed=True), RECT_MAX_ASPECT)
    pts = _rotate(pts, rng.uniform(0.0, 2.0 * math.pi))
    return _fit_area(pts, target, lo, hi)


def _scar_patch(shape, rng: np.random.Generator, min_area: int = 0) -> np.ndarray:
    s = _scale(shape)
    side = math.sqrt(float(shape[0]) * float(shape[1]))
    width = max(1.0, _log_uniform(rng, *SCAR_WIDTH_PX) * s)
    length = rng.uniform(*SCAR_LENGTH) * side
    length = max(length, SCAR_MIN_ELONGATION * width)
    if min_area:  # too little ink for the size floor: lengthen (up to the max), then widen
        length = max(length, min(SCAR_LENGTH[1] * side, 1.3 * min_area / width))
        width = max(width, 1.3 * min_area / length)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    chord = np.array([math.cos(angle), math.sin(angle)]) * length
    normal = np.array([-chord[1], chord[0]]) / length
    push = rng.uniform(-SCAR_BEND, SCAR_BEND, 2) * length
    ctrl = np.array([[[0.0, 0.0], chord / 3 + push[0] * normal, 2 * chord / 3 + push[1] * normal,
                      chord]])
    pts = _bezier(ctrl, max(8, int(length / 3)), closed=False)  # ~3 px per drawn segment
    # Width along the stroke: constant, or tapered towards one end (scratches fade out).
    widths = np.full(len(pts) - 1, width)
    if rng.random() < 0.5:
        ramp = np.linspace(1.0, rng.uniform(0.25, 1.0), len(widths))
        widths = np.maximum(1.0, width * (ramp if rng.random() < 0.5 else ramp[::-1]))
    return _stroke(pts, widths)


def _stroke(pts: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Rasterise a polyline (N, 2) with per-segment widths (N - 1,) as a tight bool patch.

    Each segment is a sub-pixel quad of its exact width plus a disc at every vertex (round joins
    and caps), so the stroke is as wide as asked: OpenCV's own thick lines come out 1-2 px wider
    than their ``thickness`` (3 -> 5 px), which would leave no 2-4 px scratches.
    """
    pad = int(math.ceil(widths.max())) + 2
    pts = pts - pts.min(axis=0) + pad
    size = (np.ceil(pts.max(axis=0)) + pad).astype(int)
    canvas = np.zeros((size[1], size[0]), np.uint8)
    d = np.diff(pts, axis=0)
    normal = np.stack([-d[:, 1], d[:, 0]], axis=1) / np.maximum(
        np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
    # OpenCV fills pixels *on* the outline too, which adds about one pixel to any width: aim the
    # outline 1 px narrower (a width-1 stroke is the degenerate quad: a plain 8-connected line).
    half = (np.maximum(widths - 1.0, 0.0) / 2.0)[:, None]
    quads = np.stack([pts[:-1] + normal * half, pts[1:] + normal * half,
                      pts[1:] - normal * half, pts[:-1] - normal * half], axis=1)
    one = 1 << _SUB
    for quad in np.round(quads * one).astype(np.int32):
        cv2.fillConvexPoly(canvas, quad, 1, cv2.LINE_8, _SUB)
    # A vertex takes the larger width of its two segments (no notch where the width steps).
    vertex_half = np.maximum(np.append(half, half[-1]), np.insert(half, 0, half[0]))
    if vertex_half.max() > 0.25:  # discs this small add nothing to a 1-px line
        centres = np.round(pts * one).astype(np.int32)
        radii = np.round(vertex_half * one).astype(int)
        for (x, y), r in zip(centres, radii):
            cv2.circle(canvas, (int(x), int(y)), int(r), 1, -1, cv2.LINE_8, _SUB)
    return _crop(canvas.view(bool))


def _clump_patch(shape, rng: np.random.Generator, min_area: int = 0) -> np.ndarray:
    total = float(shape[0] * shape[1])
    lo, hi = CLUMP_AREA[0] * total, CLUMP_AREA[1] * total
    lo, hi = max(lo, float(min_area)), max(hi, 1.5 * min_area)
    target = _log_uniform(rng, lo, hi)
    n = int(rng.integers(*CLUMP_POINTS))
    # Jittered even angles (not sorted uniform draws) so no two points bunch up into a spike.
    angles = (np.arange(n) + rng.uniform(-0.35, 0.35, n)) * (2 * math.pi / n)
    radii = rng.uniform(*CLUMP_RADIUS, n)
    pts = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    pts[:, 0] *= _log_uniform(rng, 1.0, CLUMP_MAX_ASPECT)
    pts = _rotate(pts, rng.uniform(0.0, 2.0 * math.pi))
    outline = _bezier(_smooth_closed(pts, rng.uniform(*BEZIER_K)), 12, closed=True)
    return _fit_area(outline, target, lo, hi)


_PATCH = {"rectangle": _rectangle_patch, "scar": _scar_patch, "clump": _clump_patch}


def _place_anywhere(patch: np.ndarray, shape, rng: np.random.Generator) -> np.ndarray:
    h, w = shape
    patch = _fit_into(patch, shape)
    ph, pw = patch.shape
    y0, x0 = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
    mask = np.zeros((h, w), bool)
    mask[y0:y0 + ph, x0:x0 + pw] = patch
    return mask


def _fit_into(patch: np.ndarray, shape) -> np.ndarray:
    """Centre-crop a patch larger than the image (only possible for very elongated images)."""
    ph, pw = patch.shape
    h, w = shape
    if ph <= h and pw <= w:
        return patch
    y0, x0 = max(0, (ph - h) // 2), max(0, (pw - w) // 2)
    return _crop(patch[y0:y0 + h, x0:x0 + w])


def bezier_rectangle(shape, rng: np.random.Generator) -> np.ndarray:
    """A rectangle with Bezier-bent edges, bool ``(H, W)``, placed uniformly in the image.

    Area in [2 %, 15 %] of the image (pixel count), aspect ratio of the outline's minimum-area
    bounding rectangle <= 3.3, any rotation. One 8-connected region.
    """
    shape = _check_shape(shape)
    return _place_anywhere(_rectangle_patch(shape, rng), shape, rng)


def bezier_scar(shape, rng: np.random.Generator) -> np.ndarray:
    """A stroke along a cubic Bezier curve (scratch / fibre), bool ``(H, W)``, placed uniformly.

    Width log-uniform in [1, 12] px at 256 px (scaled with the image, at least 1 px), chord
    8-45 % of the side and at least 3x the width, tapered half the time. One 8-connected region.
    """
    shape = _check_shape(shape)
    return _place_anywhere(_scar_patch(shape, rng), shape, rng)


def bezier_clump(shape, rng: np.random.Generator) -> np.ndarray:
    """A blob with a smooth closed Bezier boundary (speck / clump), bool ``(H, W)``, placed
    uniformly. Area log-uniform in [0.1 %, 4 %] of the image (pixel count). One region."""
    shape = _check_shape(shape)
    return _place_anywhere(_clump_patch(shape, rng), shape, rng)
