"""Mask helpers shared by the two anomaly generators (:mod:`core.synthetic.memseg`, MemSeg-style, and
:mod:`core.synthetic.defectmaker`, REB's): the input checks they both make and the connected-component
size floor they both apply."""
from __future__ import annotations

import math

import cv2
import numpy as np


def drop_small_components(mask: np.ndarray, min_px: int) -> np.ndarray:
    """``mask`` (bool) without its 8-connected components of fewer than ``min_px`` pixels."""
    if min_px <= 1 or not mask.any():
        return mask
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_px
    keep[0] = False  # background
    if keep[1:].all():
        return mask
    return keep[labels]


def check_rgb_u8(image) -> None:
    """Raise ``ValueError`` unless ``image`` is a uint8 (H, W, 3) array."""
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
            and image.shape[2] == 3):
        raise ValueError(f"image: expected uint8 RGB (H, W, 3), got "
                         f"{getattr(image, 'dtype', type(image))} {getattr(image, 'shape', '')}")


def check_foreground(foreground, shape: tuple[int, int], min_px: int) -> np.ndarray:
    """``foreground`` as a contiguous bool mask of ``shape`` with room for a defect of at least
    ``min_px`` pixels in one connected region; ``ValueError`` naming the problem otherwise."""
    fg = np.asarray(foreground)
    if fg.shape != tuple(shape):
        raise ValueError(f"foreground: shape {fg.shape} differs from the image's {tuple(shape)}")
    fg = np.ascontiguousarray(fg != 0)
    if not fg.any():
        raise ValueError("foreground is empty: no room to place a defect inside the object")
    if not drop_small_components(fg, min_px).any():
        h, w = shape
        raise ValueError(f"foreground has no connected region of at least {min_px} px "
                         f"(the defect size floor at {w}x{h}): no room to place a defect")
    return fg


def fallback_disc(shape: tuple[int, int], rng: np.random.Generator, allowed: np.ndarray | None,
                  min_px: int) -> np.ndarray:
    """A disc at a random allowed pixel, grown until it holds a component of >= ``min_px``
    pixels: the last resort of both defect generators when their shapes keep missing a tiny or
    fragmented foreground. Returns a bool mask of ``shape``.

    Terminates: once the disc covers the whole image the result is the allowed region's valid
    components, which the caller has checked to exist (:func:`check_foreground`).
    """
    h, w = shape
    valid = np.ones(shape, bool) if allowed is None else drop_small_components(allowed, min_px)
    ys, xs = np.nonzero(valid)
    i = int(rng.integers(len(ys)))
    cy, cx = int(ys[i]), int(xs[i])
    r = max(2.0, math.sqrt(2.0 * min_px / math.pi))
    yy = (np.arange(h) - cy)[:, None] ** 2
    xx = (np.arange(w) - cx)[None, :] ** 2
    while True:
        m = drop_small_components(((yy + xx) <= r * r) & valid, min_px)
        if m.any():
            return m
        r *= 1.5
