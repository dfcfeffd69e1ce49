"""CutPaste (Li et al., CVPR 2021): HaloAE's self-supervised proxy defects.

Two kinds, both cut from the image itself and pasted elsewhere in it ("3-way": the normal image, a
CutPaste copy and a scar copy, as HaloAE trains):

- **cutpaste** (:func:`cutpaste_patch`): a rectangle of ``U[2 %, 15 %]`` of the image area, aspect
  ratio log-uniform in ``[0.3, 1 / 0.3]``, colour-jittered and pasted at a random position.
- **scar** (:func:`cutpaste_scar`): a thin rectangle ``U[2, 16]`` x ``U[10, 25]`` px (at 256 px,
  scaled with ``sqrt(H * W) / 256`` so it covers the same part of a larger input), colour-jittered,
  rotated by ``U[-45, 45]`` degrees and pasted at a random position.

Each returns the new image and the mask of the pixels that may differ (the paste's footprint). The
colour jitter is torchvision's ColorJitter, shared with DefectMaker (core/synthetic/defectmaker.py).
Everything random comes from the generator passed, so a seeded generator repeats bit for bit.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from .defectmaker import color_jitter

AREA = (0.02, 0.15)           # of the image area [CutPaste]
ASPECT = 0.3                  # aspect ratio log-uniform in [0.3, 1 / 0.3] [CutPaste]
SCAR_WIDTH = (2.0, 16.0)      # px at 256 [CutPaste]
SCAR_LENGTH = (10.0, 25.0)    # px at 256 [CutPaste]
SCAR_ROTATION = 45.0          # degrees, either way [CutPaste]


def _scale(shape) -> float:
    return math.sqrt(shape[0] * shape[1]) / 256.0


def _paste(image: np.ndarray, patch: np.ndarray, alpha: np.ndarray,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``patch`` (float RGB) pasted where ``alpha`` is set, at a random position that fits."""
    h, w = image.shape[:2]
    ph, pw = alpha.shape
    y0, x0 = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
    out = image.copy()
    box = out[y0:y0 + ph, x0:x0 + pw]
    box[alpha] = np.clip(np.rint(patch[alpha]), 0, 255).astype(np.uint8)
    mask = np.zeros((h, w), bool)
    mask[y0:y0 + ph, x0:x0 + pw] = alpha
    return out, mask


def cutpaste_patch(image: np.ndarray, rng: np.random.Generator,
                   jitter: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """CutPaste-normal: a jittered rectangle of the image pasted elsewhere (uint8 RGB in and out)."""
    h, w = image.shape[:2]
    area = rng.uniform(*AREA) * h * w
    aspect = math.exp(rng.uniform(math.log(ASPECT), -math.log(ASPECT)))
    cw = int(np.clip(round(math.sqrt(area * aspect)), 1, w))
    ch = int(np.clip(round(math.sqrt(area / aspect)), 1, h))
    sy, sx = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    patch = image[sy:sy + ch, sx:sx + cw]
    patch = color_jitter(patch, rng, jitter) if jitter else patch.astype(np.float32)
    return _paste(image, patch, np.ones((ch, cw), bool), rng)


def cutpaste_scar(image: np.ndarray, rng: np.random.Generator,
                  jitter: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """CutPaste-scar: a thin jittered strip of the image, rotated, pasted elsewhere."""
    h, w = image.shape[:2]
    s = _scale((h, w))
    cw = int(np.clip(round(rng.uniform(*SCAR_WIDTH) * s), 1, w))
    ch = int(np.clip(round(rng.uniform(*SCAR_LENGTH) * s), 1, h))
    sy, sx = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    patch = image[sy:sy + ch, sx:sx + cw]
    patch = color_jitter(patch, rng, jitter) if jitter else patch.astype(np.float32)
    angle = rng.uniform(-SCAR_ROTATION, SCAR_ROTATION)
    # rotate about the centre onto a canvas that holds the whole rotated strip (PIL's expand=True)
    c, sn = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
    ow = min(w, int(math.ceil(cw * c + ch * sn)))
    oh = min(h, int(math.ceil(cw * sn + ch * c)))
    m = cv2.getRotationMatrix2D((cw / 2.0, ch / 2.0), angle, 1.0)
    m[0, 2] += ow / 2.0 - cw / 2.0
    m[1, 2] += oh / 2.0 - ch / 2.0
    # replicated borders: the strip's edge pixels are not darkened by the canvas outside it
    rotated = cv2.warpAffine(np.ascontiguousarray(patch, np.float32), m, (ow, oh), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(np.ones((ch, cw), np.float32), m, (ow, oh), flags=cv2.INTER_LINEAR) > 0.5
    if not alpha.any():                       # a strip thinner than a pixel after rotation
        alpha[oh // 2, ow // 2] = True
    return _paste(image, rotated, alpha, rng)
