"""DefectMaker: REB's synthetic defects, used as a *second*, independent defect generator.

SemiREST trains on MemSeg-style defects (:mod:`core.synthesis`). If the validation split's
defects came from the same generator, checkpoint selection would reward models that learned that
generator's look. Validation defects therefore come from this module, a re-implementation of
DefectMaker from REB (Lyu, Mo, Wong, "REB: Reducing Biases in Representation for Industrial
Anomaly Detection"; numbers from the paper and its reference code). A defect is

    one of 3 **shapes** (uniform)  x  one of 2 **fills** (prob. 1/2 each)
    -> placed inside the object -> blended -> blurred half the time.

Shapes (all sizes relative to the image, ``s = sqrt(H * W) / 256``, so they scale from 128 to
1024 px; every shape is one 8-connected region, returned as a tight bool patch):

- **rectangle** (:func:`bezier_rectangle`): area ``U[2 %, 15 %]`` of the image, aspect ratio
  ``exp(U[0, ln 3.3])`` (REB's ``area_ratio_range`` / ``aspect_ratio``), each of the 4 edges
  replaced by a cubic Bezier whose control points are pushed up to 0.28 x the short side in or
  out, corners jittered, any rotation. REB itself fits a random 5-6 point Bezier blob into the
  box; we keep a recognisable rectangle with bent edges (as the project spec asks) and enforce the
  ranges on the *drawn* mask: the rasterised area is corrected until it lies in [2 %, 15 %], and the
  bent outline is squeezed so its minimum-area bounding rectangle keeps aspect <= 3.3 (dented long
  edges can still make the blob look slimmer than its box).
- **scar** (:func:`bezier_scar`): a stroke along one cubic Bezier curve (arcs and S-bends), chord
  ``U[0.08, 0.45]`` of the side (at least 3x its width: a scar is elongated), width log-uniform in
  ``[1, 12] * s`` px (so more than half are 1-4 px at 256: scratches and fibres), tapered towards
  one end half the time. REB's scar is a short, fat Bezier blob (7-21 x 15-30 px, +-45 deg); we
  follow the spec's thinner scratch because thin defects are what a validation set must not lack.
  The stroke is drawn as exact-width sub-pixel quads with round joins (OpenCV's thick lines come
  out 1-2 px wider than asked).
- **clump** (:func:`bezier_clump`): a star-shaped blob, a closed smooth Bezier curve through 5-9
  points at jittered angles and radii ``U[0.55, 1]``, stretched to an ellipse of aspect up to 2.5,
  area log-uniform in ``[0.1 %, 4 %]`` of the image (a speck of one or two 8x8 blocks at 256 px up
  to a medium stain). REB's clump intersects such a blob with thresholded blocky noise (a spotty
  cluster); we keep one connected blob, as the spec asks.

Fills:

- **cut-paste**: the same image's content from elsewhere (the source box overlaps the target box
  by at most half along some axis; it lies inside the foreground when one is given and a source
  there can be found), colour-jittered as REB does (torchvision ``ColorJitter(0.1)``:
  brightness, contrast, saturation in [0.9, 1.1], hue shift up to +-0.1 of the circle), so that a
  paste on a homogeneous surface is not invisible.
- **noise**: uniform noise of mean ``mu ~ U[50, 200]`` and half-width ``U[0, 50)`` (REB's
  ``mean_range`` / ``fluct_range``). ``mu`` is a **gray level shared by the three channels**, while
  the fluctuation is drawn independently per channel (REB draws one mean and per-channel noise
  for RGB), so the defect is a dark-to-bright grayish patch with fine colour grain. The noise is
  drawn on a coarser grid, grain ``{1, 2, 4} * s`` px with grain aspect ``{1/4, 1/2, 1, 2, 4}``
  (REB's ``scale_range`` / ``aspect_ratio_range``), and resized linearly; all values stay in
  ``[mu - half, mu + half]`` within [0, 250]. It is not colour-jittered (REB jitters every fill; a
  +-10 % brightness change would push the mean outside the stated 50-200).

Blending and blur: inside the mask ``out = (1 - beta) * image + beta * fill`` with ``beta = 1`` or
``beta ~ U[0.5, 1)`` (prob. 1/2 each; REB ties 1 to some defect kinds and U(0.5, 1) to others, we
mix both for every kind). Half the time the blended result is Gaussian-blurred with REB's kernel,
5 px for rectangles and 3 px for scars and clumps at 256 px (scaled with ``s``, odd, >= 3), and
**only the mask's pixels take the blurred values**: the pasted content and its rim are softened
(the rim mixes with the normal pixels just outside) while every pixel outside the mask keeps its
value. REB instead feathers the alpha after eroding the mask by the kernel, which would erase a
scar thinner than the kernel; blurring the composite keeps thin defects and the same guarantee.
The returned mask is the defect region: the output differs from the input nowhere else.

Placement: anywhere in the image, or with a ``foreground`` mask: centred on a random foreground
pixel, keeping the first of up to ``PLACE_TRIES`` positions where the whole shape lies inside the
foreground, else the best one clipped to the foreground (so near a thin object's edge a defect
can be smaller than its shape's stated range). An optional per-component size floor drops
smaller 8-connected pieces; a shape is redrawn when nothing is left, and after ``MAX_TRIES``
draws a disc grown inside the allowed region guarantees a non-empty mask.

Everything random comes from the ``numpy.random.Generator`` the caller passes and the OpenCV calls
are deterministic, so a seeded generator gives the same sample bit for bit. All work is done on
the defect's bounding box: per sample about 0.7 ms at 256 px (rectangles ~1.1 ms, p99 < 5 ms),
2 ms at 512 px and 6 ms at 1024 px (rectangles ~14 ms there), measured on one core.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = [
    "DefectMaker", "bezier_rectangle", "bezier_scar", "bezier_clump", "noise_fill", "blend",
    "blur_kernel", "SHAPES", "FILLS", "RECT_AREA", "RECT_MAX_ASPECT", "SCAR_LENGTH",
    "SCAR_WIDTH_PX", "CLUMP_AREA", "CLUMP_MAX_ASPECT", "NOISE_MEAN", "NOISE_HALF_WIDTH", "BLEND_MIN", "BLUR_KSIZE",
    "MAX_TRIES", "PLACE_TRIES",
]

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
NOISE_MEAN = (50.0, 200.0)    # REB mean_range
NOISE_HALF_WIDTH = (0.0, 50.0)  # REB fluct_range
NOISE_GRAIN = (1.0, 2.0, 4.0)   # px at 256 (REB scale_range 2**{0,1,2})
NOISE_GRAIN_ASPECT = (0.25, 0.5, 1.0, 2.0, 4.0)
JITTER = 0.1                  # REB ColorJitter(0.1) on pasted content
BLEND_MIN = 0.5               # beta = 1, or U[BLEND_MIN, 1)
BLUR_PROB = 0.5
BLUR_KSIZE = {"rectangle": 5, "scar": 3, "clump": 3}  # at 256 px, as REB's makers
SHAPES = ("rectangle", "scar", "clump")
FILLS = ("cut-paste", "noise")
MAX_TRIES = 32                # shape draws before the fallback disc
PLACE_TRIES = 24              # foreground positions tried per shape
SOURCE_TRIES = 16             # cut-paste source positions tried
MIN_SIDE = 16
_SUB = 4                      # fixed-point bits for cv2 drawing (sub-pixel vertices)
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


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


# ---------------------------------------------------------------------------------------------
# Fills
# ---------------------------------------------------------------------------------------------
def noise_fill(size: tuple[int, int], rng: np.random.Generator,
               scale: float = 1.0) -> tuple[np.ndarray, float]:
    """REB's random-noise fill: float32 ``(h, w, 3)`` and its mean gray level.

    Mean ``mu ~ U[50, 200]`` shared by the channels, values uniform in ``[mu - a, mu + a]`` with
    ``a ~ U[0, 50)`` independently per channel, drawn on a grid of ``{1, 2, 4} * scale`` px grains
    with grain aspect in ``{1/4, ..., 4}`` and resized linearly (values stay within the range).
    """
    h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"noise_fill: size {size} must be positive")
    mean = float(rng.uniform(*NOISE_MEAN))
    half = float(rng.uniform(*NOISE_HALF_WIDTH))
    grain = NOISE_GRAIN[int(rng.integers(len(NOISE_GRAIN)))] * scale
    stretch = math.sqrt(NOISE_GRAIN_ASPECT[int(rng.integers(len(NOISE_GRAIN_ASPECT)))])
    gh = max(1, math.ceil(h / max(1.0, grain * stretch)))
    gw = max(1, math.ceil(w / max(1.0, grain / stretch)))
    small = rng.uniform(mean - half, mean + half, (gh, gw, 3)).astype(np.float32)
    if (gh, gw) == (h, w):
        return small, mean
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), mean


def _jitter(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """torchvision-style ColorJitter(0.1) on a uint8 RGB patch, float32 out (fixed op order)."""
    x = patch.astype(np.float32) * np.float32(rng.uniform(1 - JITTER, 1 + JITTER))  # brightness
    np.clip(x, 0, 255, out=x)
    m = float((x @ _LUMA).mean())                                                  # contrast
    x = np.clip((x - m) * np.float32(rng.uniform(1 - JITTER, 1 + JITTER)) + m, 0, 255)
    gray = (x @ _LUMA)[..., None]                                                  # saturation
    x = np.clip(gray + (x - gray) * np.float32(rng.uniform(1 - JITTER, 1 + JITTER)), 0, 255)
    hsv = cv2.cvtColor(np.ascontiguousarray(x / 255.0, dtype=np.float32), cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0] + 360.0 * rng.uniform(-JITTER, JITTER)) % 360.0    # hue (degrees)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * np.float32(255.0)


def _cut_source(image, patch, y0, x0, rng, allowed) -> tuple[np.ndarray, tuple[int, int]]:
    """Content for a cut-paste defect at (y0, x0): the same-sized box from elsewhere in the image.

    "Elsewhere": the source box overlaps the target box by at most half its height or width, so
    the pasted content is really displaced. With a foreground, the first source whose pixels under
    the shape all lie on the object wins; otherwise the displaced source with the most object
    pixels; if the image is too small for any displaced source, the farthest one, and a mirrored
    copy when no other position exists at all (patch as large as the image).
    """
    h, w = image.shape[:2]
    ph, pw = patch.shape
    sy = rng.integers(0, h - ph + 1, SOURCE_TRIES)
    sx = rng.integers(0, w - pw + 1, SOURCE_TRIES)
    far = (np.abs(sy - y0) * 2 >= ph) | (np.abs(sx - x0) * 2 >= pw)
    if far.any():
        cand = np.flatnonzero(far)
        best, best_cov = int(cand[0]), -1
        if allowed is not None:
            n = int(np.count_nonzero(patch))
            for i in cand:
                cov = int(np.count_nonzero(patch & allowed[sy[i]:sy[i] + ph, sx[i]:sx[i] + pw]))
                if cov > best_cov:
                    best, best_cov = int(i), cov
                if cov == n:
                    break
    else:
        best = int(np.argmax(np.abs(sy - y0) + np.abs(sx - x0)))
    dy, dx = int(sy[best]) - y0, int(sx[best]) - x0
    src = image[sy[best]:sy[best] + ph, sx[best]:sx[best] + pw]
    if dy == 0 and dx == 0:
        src = cv2.flip(src, -1)
    return _jitter(src, rng), (dy, dx)


# ---------------------------------------------------------------------------------------------
# Blending
# ---------------------------------------------------------------------------------------------
def blur_kernel(kind: str, shape) -> int:
    """The blur kernel for a shape kind at this image size: REB's 5 (rectangle) or 3 px (scar,
    clump) at 256 px, scaled with the image and kept odd and >= 3."""
    base = BLUR_KSIZE[kind]
    return max(3, 2 * int(round((base - 1) / 2 * _scale(shape))) + 1)


def _composite(out: np.ndarray, patch: np.ndarray, y0: int, x0: int, fill: np.ndarray,
               beta: float, ksize: int) -> None:
    """Blend ``fill`` (ph, pw, 3) into ``out`` (in place) under ``patch`` placed at (y0, x0).

    Works on the patch's box grown by the blur radius, so a masked pixel sees exactly the
    neighbourhood it would in a full-image blur (at the image border both use OpenCV's default
    reflection). Only masked pixels are written.
    """
    h, w = out.shape[:2]
    ph, pw = patch.shape
    r = ksize // 2 if ksize else 0
    ya, xa = max(0, y0 - r), max(0, x0 - r)
    yb, xb = min(h, y0 + ph + r), min(w, x0 + pw + r)
    region = out[ya:yb, xa:xb].astype(np.float32)
    m = np.zeros(region.shape[:2], bool)
    m[y0 - ya:y0 - ya + ph, x0 - xa:x0 - xa + pw] = patch
    region[m] = (1.0 - beta) * region[m] + beta * fill[patch]
    if ksize:
        region = cv2.GaussianBlur(region, (ksize, ksize), 0)
    out[ya:yb, xa:xb][m] = np.clip(region[m] + 0.5, 0, 255).astype(np.uint8)


def blend(image: np.ndarray, fill: np.ndarray, mask: np.ndarray, beta: float,
          ksize: int = 0) -> np.ndarray:
    """``(1 - beta) * image + beta * fill`` on ``mask``, then (``ksize`` > 0) a ``ksize`` Gaussian
    blur of that composite whose values are kept on ``mask`` only. uint8 out, rounded; equal to
    ``image`` outside ``mask``. ``fill``: (H, W, 3), any real dtype."""
    mask = np.asarray(mask, bool)
    if image.shape[:2] != mask.shape or fill.shape != image.shape:
        raise ValueError(f"blend: image {image.shape}, fill {fill.shape} and mask {mask.shape} "
                         f"must agree")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"blend: beta must be in [0, 1], got {beta}")
    if ksize and (ksize < 3 or ksize % 2 == 0):
        raise ValueError(f"blend: ksize must be 0 (no blur) or odd >= 3, got {ksize}")
    out = image.copy()
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size:
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        _composite(out, mask[y0:y1, x0:x1], y0, x0, fill[y0:y1, x0:x1], beta, ksize)
    return out


# ---------------------------------------------------------------------------------------------
# Placement and the size floor
# ---------------------------------------------------------------------------------------------
def _drop_small(patch: np.ndarray, min_px: int) -> np.ndarray:
    """``patch`` without its 8-connected components of fewer than ``min_px`` pixels."""
    if min_px <= 1 or not patch.any():
        return patch
    n, labels, stats, _ = cv2.connectedComponentsWithStats(patch.view(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_px
    keep[0] = False
    return keep[labels]


def _allowed_points(allowed: np.ndarray, rng: np.random.Generator, k: int) -> np.ndarray:
    """``k`` random foreground pixels (row, col). Rejection sampling first: a full
    ``np.nonzero`` of a 1024 x 1024 mask costs more than the whole defect."""
    h, w = allowed.shape
    ys, xs = rng.integers(0, h, 8 * k), rng.integers(0, w, 8 * k)
    ok = allowed[ys, xs]
    if np.count_nonzero(ok) >= k:
        return np.stack([ys[ok][:k], xs[ok][:k]], axis=1)
    pts = np.argwhere(allowed)
    return pts[rng.integers(0, len(pts), k)]


def _place(patch, shape, rng, allowed):
    """Position (y0, x0) for ``patch`` and the patch clipped to ``allowed`` (see module doc)."""
    h, w = shape
    patch = _fit_into(patch, shape)
    ph, pw = patch.shape
    if allowed is None:
        return int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1)), patch
    n = int(np.count_nonzero(patch))
    best = None
    for cy, cx in _allowed_points(allowed, rng, PLACE_TRIES):
        y0 = min(max(int(cy) - ph // 2, 0), h - ph)
        x0 = min(max(int(cx) - pw // 2, 0), w - pw)
        inside = patch & allowed[y0:y0 + ph, x0:x0 + pw]
        c = int(np.count_nonzero(inside))
        if c == n:
            return y0, x0, patch
        if best is None or c > best[0]:
            best = (c, y0, x0, inside)
    return best[1], best[2], best[3]


def _fallback_disc(shape, rng, allowed, min_px):
    """A disc at a random valid pixel, grown until it holds a component of >= min_px pixels.

    Terminates: at full size it is the valid part of the allowed region, checked non-empty by the
    caller. Returns (y0, x0, patch) like :func:`_place`.
    """
    h, w = shape
    valid = np.ones(shape, bool) if allowed is None else _drop_small(allowed, min_px)
    pts = np.argwhere(valid)
    cy, cx = pts[int(rng.integers(len(pts)))]
    r = max(2.0, math.sqrt(2.0 * max(min_px, 1) / math.pi))
    yy = (np.arange(h) - cy)[:, None] ** 2
    xx = (np.arange(w) - cx)[None, :] ** 2
    while True:
        m = _drop_small(((yy + xx) <= r * r) & valid, min_px)
        if m.any():
            rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
            return int(rows[0]), int(cols[0]), m[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        r *= 1.5


# ---------------------------------------------------------------------------------------------
# The generator
# ---------------------------------------------------------------------------------------------
class DefectMaker:
    """REB's DefectMaker (see the module docstring): 3 shapes x 2 fills, placed, blended, blurred.

    ``min_component_px``: optional size floor, the least number of pixels of every 8-connected
    defect component *at the image size you will pass* (already scaled, e.g. with
    :func:`core.synthesis.min_component_pixels`); 0 disables it. Shapes are drawn at least this
    large, and pieces left smaller by clipping to the foreground are dropped.
    """

    def __init__(self, min_component_px: int = 0):
        is_int = isinstance(min_component_px, (int, np.integer))
        if isinstance(min_component_px, bool) or not is_int:
            raise ValueError(f"min_component_px must be an int >= 0, got {min_component_px!r}")
        if min_component_px < 0:
            raise ValueError(f"min_component_px must be >= 0, got {min_component_px}")
        self.min_component_px = int(min_component_px)
        self.last_info: dict = {}  # what the last call did (shape, fill, beta, blur...): for logs

    def __call__(self, image: np.ndarray, rng: np.random.Generator,
                 foreground: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """uint8 RGB (H, W, 3) -> (defective uint8 RGB image, bool defect mask (H, W)).

        The mask is never empty, lies inside ``foreground`` when one is given, each of its
        8-connected components has at least ``min_component_px`` pixels, and the output equals
        ``image`` wherever the mask is False (the optional blur only rewrites masked pixels).

        Raises ``ValueError`` for a malformed image or foreground, an image smaller than 16 px,
        or a foreground that leaves no room: no pixel at all, or no connected region as large as
        the size floor.
        """
        if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
                and image.shape[2] == 3):
            raise ValueError(f"image: expected uint8 RGB (H, W, 3), got "
                             f"{getattr(image, 'dtype', type(image))} {getattr(image, 'shape', '')}")
        shape = _check_shape(image.shape[:2])
        h, w = shape
        min_px = self.min_component_px
        if min_px > h * w:
            raise ValueError(f"min_component_px={min_px} exceeds the {w}x{h} image: no room for "
                             f"a defect")
        allowed = None
        if foreground is not None:
            fg = np.asarray(foreground)
            if fg.shape != shape:
                raise ValueError(f"foreground: shape {fg.shape} differs from the image's {shape}")
            allowed = np.ascontiguousarray(fg != 0)
            if not allowed.any():
                raise ValueError("foreground is empty: no room to place a defect inside the object")
            if min_px > 1 and not _drop_small(allowed, min_px).any():
                raise ValueError(f"foreground has no connected region of at least {min_px} px "
                                 f"(the defect size floor at {w}x{h}): no room to place a defect")

        info: dict = {}
        for attempt in range(1, MAX_TRIES + 1):
            kind = SHAPES[int(rng.integers(len(SHAPES)))]
            raw = _PATCH[kind](shape, rng, min_px)
            y0, x0, patch = _place(raw, shape, rng, allowed)
            patch = _drop_small(patch, min_px)
            if patch.any():
                info.update(shape=kind, tries=attempt, fallback=False)
                break
        else:  # only for tiny or fragmented foregrounds against a large floor
            kind = "clump"
            y0, x0, patch = _fallback_disc(shape, rng, allowed, min_px)
            info.update(shape=kind, tries=MAX_TRIES, fallback=True)
        # Re-tighten the box (clipping to the foreground may have emptied its borders).
        rows, cols = np.flatnonzero(patch.any(axis=1)), np.flatnonzero(patch.any(axis=0))
        y0, x0 = y0 + int(rows[0]), x0 + int(cols[0])
        patch = np.ascontiguousarray(patch[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1])

        if rng.random() < 0.5:
            fill, info["source_offset"] = _cut_source(image, patch, y0, x0, rng, allowed)
            info["fill"] = "cut-paste"
        else:
            fill, info["noise_mean"] = noise_fill(patch.shape, rng, _scale(shape))
            info["fill"] = "noise"
        beta = 1.0 if rng.random() < 0.5 else float(rng.uniform(BLEND_MIN, 1.0))
        ksize = blur_kernel(kind, shape) if rng.random() < BLUR_PROB else 0
        info.update(beta=beta, blur_ksize=ksize, box=(y0, x0, patch.shape[0], patch.shape[1]))

        out = image.copy()
        _composite(out, patch, y0, x0, fill, beta, ksize)
        mask = np.zeros(shape, bool)
        mask[y0:y0 + patch.shape[0], x0:x0 + patch.shape[1]] = patch
        self.last_info = info
        return out, mask
