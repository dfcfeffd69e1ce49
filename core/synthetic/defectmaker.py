"""DefectMaker: REB's synthetic defects, used as a *second*, independent defect generator.

SemiREST trains on MemSeg-style defects (:mod:`core.synthetic.memseg`). If the validation split's
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

Module map: the shapes live in :mod:`core.synthetic.defect_shapes`; the size-floor filter and the input
checks shared with :mod:`core.synthetic.memseg` in :mod:`core.synthetic.masks`; placement, fills, blending and
the :class:`DefectMaker` class here.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from .defect_shapes import (CLUMP_AREA, CLUMP_MAX_ASPECT, RECT_AREA, RECT_MAX_ASPECT,  # noqa: F401 (re-exported)
                            SCAR_LENGTH, SCAR_WIDTH_PX, _PATCH, _check_shape, _fit_into, _scale,
                            bezier_clump, bezier_rectangle, bezier_scar)
from .masks import check_foreground, check_rgb_u8, drop_small_components, fallback_disc

__all__ = [
    "DefectMaker", "bezier_rectangle", "bezier_scar", "bezier_clump", "noise_fill", "blend",
    "blur_kernel", "SHAPES", "FILLS", "RECT_AREA", "RECT_MAX_ASPECT", "SCAR_LENGTH",
    "SCAR_WIDTH_PX", "CLUMP_AREA", "CLUMP_MAX_ASPECT", "NOISE_MEAN", "NOISE_HALF_WIDTH", "BLEND_MIN", "BLUR_KSIZE",
    "MAX_TRIES", "PLACE_TRIES",
]

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
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


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


def color_jitter(patch: np.ndarray, rng: np.random.Generator, amount: float = JITTER) -> np.ndarray:
    """torchvision-style ColorJitter(amount) on a uint8 RGB patch, float32 out (fixed op order).
    Also HaloAE's training augmentation (core/synthetic/cutpaste.py)."""
    x = patch.astype(np.float32) * np.float32(rng.uniform(1 - amount, 1 + amount))  # brightness
    np.clip(x, 0, 255, out=x)
    m = float((x @ _LUMA).mean())                                                  # contrast
    x = np.clip((x - m) * np.float32(rng.uniform(1 - amount, 1 + amount)) + m, 0, 255)
    gray = (x @ _LUMA)[..., None]                                                  # saturation
    x = np.clip(gray + (x - gray) * np.float32(rng.uniform(1 - amount, 1 + amount)), 0, 255)
    hsv = cv2.cvtColor(np.ascontiguousarray(x / 255.0, dtype=np.float32), cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0] + 360.0 * rng.uniform(-amount, amount)) % 360.0    # hue (degrees)
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
    return color_jitter(src, rng), (dy, dx)


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


# ---------------------------------------------------------------------------------------------
# The generator
# ---------------------------------------------------------------------------------------------
class DefectMaker:
    """REB's DefectMaker (see the module docstring): 3 shapes x 2 fills, placed, blended, blurred.

    ``min_component_px``: optional size floor, the least number of pixels of every 8-connected
    defect component *at the image size you will pass* (already scaled, e.g. with
    :func:`core.synthetic.memseg.min_component_pixels`); 0 disables it. Shapes are drawn at least this
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
        check_rgb_u8(image)
        shape = _check_shape(image.shape[:2])
        h, w = shape
        min_px = self.min_component_px
        if min_px > h * w:
            raise ValueError(f"min_component_px={min_px} exceeds the {w}x{h} image: no room for "
                             f"a defect")
        allowed = None if foreground is None else check_foreground(foreground, shape, min_px)

        info: dict = {}
        for attempt in range(1, MAX_TRIES + 1):
            kind = SHAPES[int(rng.integers(len(SHAPES)))]
            raw = _PATCH[kind](shape, rng, min_px)
            y0, x0, patch = _place(raw, shape, rng, allowed)
            patch = drop_small_components(patch, min_px)
            if patch.any():
                info.update(shape=kind, tries=attempt, fallback=False)
                break
        else:  # only for tiny or fragmented foregrounds against a large floor
            kind = "clump"
            y0, x0, patch = 0, 0, fallback_disc(shape, rng, allowed, min_px)   # cut below
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
