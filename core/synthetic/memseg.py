"""Synthetic anomalies for the unsupervised setting, MemSeg style (method.md component 10).

SemiREST trains its Swin Transformer on normal images plus *synthetic* defects when no real defect
is labelled. The paper defers to MemSeg (Yang et al., 2023) for how they are made; the spec fixes
the numbers (all in :class:`~core.config.SynthesisConfig`):

1. **Where**: a Perlin-noise mask. Noise with ``2**e`` cells per axis, ``e ~ U{perlin_min_exp, ...,
   perlin_max_exp - 1}`` drawn independently for rows and columns (as DRAEM/MemSeg's
   ``2 ** randint(min, max)``), rotated by ``U[-max_rotation, max_rotation]`` degrees, thresholded
   at ``perlin_threshold``, intersected with the object's foreground when one is known.
2. **What**: with probability ``texture_prob`` a texture (a random crop of a user texture, else a
   procedural one: the paper uses DTD, which we cannot ship), otherwise the normal image itself
   after 3 distinct random photometric/geometric ops, cut into an 8x8 grid of tiles and shuffled.
3. **How**: inside the mask ``out = (1 - beta) * image + beta * source`` with
   ``beta ~ U[blend_min, blend_max]``. **beta is the weight of the anomaly source** (MemSeg's
   reference implementation calls it the transparency ``factor`` and multiplies the source by it),
   so beta = 1 pastes the source opaquely and beta = 0.5 is a half-transparent overlay. Outside the
   mask the output is the input, bit for bit.
4. **Size floor**: every 8-connected defect component must have at least
   ``min_component_px * H * W / 512**2`` pixels (250 px at 512 px input, i.e. about four 8x8
   blocks; scaled with the area). Training labels are per block (Eq. 14: anomalous only above
   eps+ = 50% defective), so a smaller component changes pixels while yielding at most a block or
   two of positive label and a rim of "ignored" blocks: weak, noisy supervision. We **drop** small components from the mask before blending (their pixels therefore keep the
   original values), and draw a new Perlin mask only when nothing is left. After
   ``MAX_MASK_TRIES`` empty draws we fall back to a guaranteed valid blob (a disc grown inside the
   foreground), so a call always terminates with a non-empty mask.

Everything random comes from the ``numpy.random.Generator`` the caller passes, and the OpenCV
calls used are deterministic, so a seeded generator gives the same sample bit for bit.
Everything is vectorised numpy / OpenCV: about 1 ms at 128 x 128, 4 ms at 256 x 256 and 14 ms at
512 x 512 per sample on one core (with the default config ~1.07 Perlin draws per sample).
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import cv2
import numpy as np

from ..config import SynthesisConfig
from ..data.images import is_image_file, read_image
from ..errors import ConfigError, DatasetError, ImageReadError
from .masks import check_foreground, check_rgb_u8, drop_small_components, fallback_disc

__all__ = [
    "perlin_noise", "perlin_mask", "procedural_texture", "load_textures", "AnomalySynthesizer",
    "min_component_pixels", "MAX_MASK_TRIES", "GRID",
]

MAX_MASK_TRIES = 64     # Perlin draws before the fallback blob (one draw: ~1.5 ms at 256 px)
GRID = 8                # structure anomalies: the image is cut into GRID x GRID tiles (spec: 8x8)
REFERENCE_AREA = 512 * 512  # min_component_px is given at the paper's 512 x 512 input


# ---------------------------------------------------------------------------------------------
# Perlin noise
# ---------------------------------------------------------------------------------------------
def _fade(t: np.ndarray) -> np.ndarray:
    # Perlin's quintic 6t^5 - 15t^4 + 10t^3: C2-continuous at cell borders (no grid artefacts).
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def _axis_weights(coord: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Perlin interpolation weights of the ``n`` lattice lines for the coordinates ``coord``.

    Per axis, lattice line ``i`` contributes with weight ``w(d) = 1 - fade(|d|)`` for ``|d| < 1``
    (``d = coord - i``), and its gradient component is dotted with ``d``. Returns ``(w, w * d)``,
    both ``(len(coord), n)``.
    """
    d = coord[:, None] - np.arange(n, dtype=np.float32)[None, :]
    a = np.minimum(np.abs(d), 1.0)
    w = 1.0 - _fade(a)
    return w, w * d


def _perlin_grid(ys: np.ndarray, xs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gradient noise on the grid ``ys x xs`` (float32 coordinates >= 0, in cell units).

    Classic Perlin noise: random unit gradients (gy, gx) on the integer lattice, each point's value
    the fade-interpolation of the 4 corner dot products ``g . (p - corner)``. Because the fade
    weights factor per axis, the whole field is two small matrix products,

        noise = (Wy * Dy) @ GY @ Wx^T + Wy @ GX @ (Wx * Dx)^T,

    exactly equal to the per-pixel formula but ~20x faster than gathering corners per pixel.
    Scaled by sqrt(2) so the values span about [-1, 1] like DRAEM/MemSeg's ``rand_perlin_2d_np``
    (the spec's threshold 0.5 is meant for that range).
    """
    gh, gw = int(ys[-1]) + 2, int(xs[-1]) + 2
    angles = rng.uniform(0.0, 2.0 * np.pi, size=(gh, gw))
    grad_y, grad_x = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
    wy, wdy = _axis_weights(ys, gh)
    wx, wdx = _axis_weights(xs, gw)
    noise = wdy @ grad_y @ wx.T + wy @ grad_x @ wdx.T
    return (np.float32(math.sqrt(2.0)) * noise).astype(np.float32)


def perlin_noise(shape: tuple[int, int], scale: tuple[int, int],
                 rng: np.random.Generator) -> np.ndarray:
    """2-D gradient (Perlin) noise, float32 ``(H, W)``, about in [-1, 1].

    ``scale = (sy, sx)``: the number of noise cells along the rows and the columns (DRAEM's
    ``res``), so the features are about ``H / sy`` by ``W / sx`` pixels. Any shape works (no
    divisibility requirement); the noise is 0 on the lattice points, which start at pixel (0, 0).
    """
    h, w = int(shape[0]), int(shape[1])
    sy, sx = float(scale[0]), float(scale[1])
    if h <= 0 or w <= 0 or sy <= 0 or sx <= 0:
        raise ValueError(f"perlin_noise: shape {shape} and scale {scale} must be positive")
    ys = np.arange(h, dtype=np.float32) * np.float32(sy / h)
    xs = np.arange(w, dtype=np.float32) * np.float32(sx / w)
    return _perlin_grid(ys, xs, rng)


def _rotated_perlin(shape: tuple[int, int], scale: tuple[float, float], angle_deg: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Perlin noise of ``scale`` cells per image side, rotated by ``angle_deg`` about the centre.

    As DRAEM/MemSeg (noise image, then imgaug ``Affine(rotate)``), but the noise is made on a
    square canvas as wide as the image diagonal and the output is its rotated centre, so no corner
    of the result falls outside the noise (no zero-filled, defect-free corners).
    """
    h, w = shape
    side = int(math.ceil(math.hypot(h, w))) + 2
    ys = np.arange(side, dtype=np.float32) * np.float32(scale[0] / h)
    xs = np.arange(side, dtype=np.float32) * np.float32(scale[1] / w)
    canvas = _perlin_grid(ys, xs, rng)
    c = (side - 1) / 2.0
    m = cv2.getRotationMatrix2D((c, c), angle_deg, 1.0)
    m[0, 2] += (w - 1) / 2.0 - c
    m[1, 2] += (h - 1) / 2.0 - c
    return cv2.warpAffine(canvas, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def perlin_mask(shape: tuple[int, int], rng: np.random.Generator,
                cfg: SynthesisConfig) -> np.ndarray:
    """One raw Perlin defect mask, bool ``(H, W)`` (may be empty; no size floor applied).

    Scale ``2**U{perlin_min_exp, ..., perlin_max_exp - 1}`` cells per axis (independently),
    rotation ``U[-max_rotation, max_rotation]`` degrees, ``noise > perlin_threshold``.
    """
    h, w = int(shape[0]), int(shape[1])
    ey, ex = rng.integers(cfg.perlin_min_exp, cfg.perlin_max_exp, size=2)
    angle = rng.uniform(-cfg.max_rotation, cfg.max_rotation)
    noise = _rotated_perlin((h, w), (2.0 ** ey, 2.0 ** ex), angle, rng)
    return noise > cfg.perlin_threshold


def min_component_pixels(cfg: SynthesisConfig, shape: tuple[int, int]) -> int:
    """The per-component size floor at this input size: ``min_component_px`` at 512 x 512,
    scaled with the image area, rounded up (a component must have at least this many pixels)."""
    return max(1, math.ceil(cfg.min_component_px * shape[0] * shape[1] / REFERENCE_AREA - 1e-9))


# ---------------------------------------------------------------------------------------------
# Procedural textures (fallback for DTD)
# ---------------------------------------------------------------------------------------------
def _fractal(shape, rng, octaves: int) -> np.ndarray:
    h, w = shape
    base = 2 ** int(rng.integers(1, 4))
    out = np.zeros(shape, np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cells = base * 2 ** o
        out += amp * perlin_noise((h, w), (cells, max(1, round(cells * w / h))), rng)
        total += amp
        amp *= 0.5
    return out / total


def _normalise(f: np.ndarray) -> np.ndarray:
    lo, hi = float(f.min()), float(f.max())
    return (f - lo) / (hi - lo) if hi > lo else np.zeros_like(f)


def _coords(shape, rng):
    h, w = shape
    a = rng.uniform(0, np.pi)
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    return yy * math.cos(a) + xx * math.sin(a), -yy * math.sin(a) + xx * math.cos(a)


def _pattern_noise(shape, rng):
    return _normalise(_fractal(shape, rng, int(rng.integers(1, 5))))


def _pattern_grating(shape, rng):
    u, v = _coords(shape, rng)
    period = rng.uniform(3.0, max(4.0, min(shape) / 3.0))
    phase = u * (2 * np.pi / period)
    if rng.random() < 0.5:  # wavy stripes: the phase is warped by smooth noise
        phase = phase + rng.uniform(1.0, 6.0) * perlin_noise(shape, (2, 2), rng)
    f = 0.5 + 0.5 * np.sin(phase)
    if rng.random() < 0.5:  # square wave (hard stripes) instead of a sinusoid
        f = (f > rng.uniform(0.3, 0.7)).astype(np.float32)
    if rng.random() < 0.3:  # crossed grating (woven look)
        f = 0.5 * (f + 0.5 + 0.5 * np.sin(v * (2 * np.pi / rng.uniform(3.0, 20.0))))
    return f.astype(np.float32)


def _pattern_checker(shape, rng):
    u, v = _coords(shape, rng)
    p = rng.uniform(3.0, max(4.0, min(shape) / 4.0))
    return ((np.floor(u / p) + np.floor(v / p)) % 2).astype(np.float32)


def _pattern_cells(shape, rng):
    # Voronoi cells via OpenCV's labelled distance transform (nearest seed per pixel, ~1 ms).
    h, w = shape
    n = int(rng.integers(8, 80))
    seeds = np.ones((h, w), np.uint8)
    ys, xs = rng.integers(0, h, n), rng.integers(0, w, n)
    seeds[ys, xs] = 0
    dist, labels = cv2.distanceTransformWithLabels(seeds, cv2.DIST_L2, 5,
                                                   labelType=cv2.DIST_LABEL_PIXEL)
    if rng.random() < 0.5:   # flat random value per cell (cobbles, crackle)
        values = rng.random(int(labels.max()) + 1).astype(np.float32)
        return values[labels]
    return _normalise(dist)  # distance to the nearest seed (scales, bubbles)


def _pattern_blotches(shape, rng):
    f = _fractal(shape, rng, 3)
    f = (f > rng.uniform(-0.2, 0.3)).astype(np.float32)
    if rng.random() < 0.5:  # specks and dots on top
        dots = rng.random(shape) < rng.uniform(0.002, 0.02)
        k = 2 * int(rng.integers(0, 3)) + 1
        dots = cv2.dilate(dots.view(np.uint8), np.ones((k, k), np.uint8)).view(bool)
        f = np.where(dots, 1.0 - f, f).astype(np.float32)
    return f


_PATTERNS = (_pattern_noise, _pattern_grating, _pattern_checker, _pattern_cells, _pattern_blotches)


def procedural_texture(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random procedural texture, uint8 RGB ``(H, W, 3)``: the fallback for a texture folder.

    One of fractal noise, (wavy / square / crossed) gratings, checkers, Voronoi cells and blotches
    with specks, coloured through a random palette of 2-4 random colours, optionally with fine
    grain. Meant to be unlike any normal surface, as DTD textures are.
    """
    h, w = int(shape[0]), int(shape[1])
    f = _PATTERNS[int(rng.integers(len(_PATTERNS)))]((h, w), rng)
    # Colour map: a piecewise-linear ramp through k random colours, applied as a 256-entry LUT.
    k = int(rng.integers(2, 5))
    colours = rng.integers(0, 256, size=(k, 3)).astype(np.float32)
    ramp = np.linspace(0.0, 1.0, 256)
    stops = np.linspace(0.0, 1.0, k)
    lut = np.stack([np.interp(ramp, stops, colours[:, c]) for c in range(3)], axis=1)
    idx = np.clip(f * 255.0 + 0.5, 0, 255).astype(np.uint8)
    out = lut.astype(np.uint8)[idx]
    if rng.random() < 0.5:  # fine grain
        grain = rng.normal(0.0, rng.uniform(4.0, 20.0), size=(h, w, 1)).astype(np.float32)
        out = np.clip(out + grain, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out)


# ---------------------------------------------------------------------------------------------
# Texture folder
# ---------------------------------------------------------------------------------------------
def load_textures(folder: str | Path, max_side: int | None = 512) -> list[np.ndarray]:
    """All readable images under ``folder`` (recursively, so DTD's ``images/<class>/`` layout
    works), as uint8 RGB, sorted by path.

    Images larger than ``max_side`` are downscaled (aspect kept) to bound memory: the crops are
    resized to the model input anyway. Unreadable files are skipped with a warning naming the file;
    a missing folder, or one without any readable image, raises
    :class:`~core.errors.DatasetError` naming the folder.
    """
    folder = Path(folder)
    if not folder.exists():
        raise DatasetError(folder, "texture folder does not exist")
    if not folder.is_dir():
        raise DatasetError(folder, "texture folder is a file, not a folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))
    textures: list[np.ndarray] = []
    for p in files:
        try:
            img = read_image(p)
        except ImageReadError as exc:
            warnings.warn(f"skipping texture {exc}", stacklevel=2)
            continue
        if max_side and max(img.shape[:2]) > max_side:
            s = max_side / max(img.shape[:2])
            size = (max(8, round(img.shape[1] * s)), max(8, round(img.shape[0] * s)))
            img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        textures.append(img)
    if not textures:
        why = (f"none of its {len(files)} image file(s) could be read" if files else
               "it holds no image files (.png, .jpg, .bmp, .tif, .webp)")
        raise DatasetError(folder, f"no usable texture: {why}")
    return textures


# ---------------------------------------------------------------------------------------------
# Photometric / geometric ops for structure anomalies (MemSeg's augmenters, in OpenCV)
# ---------------------------------------------------------------------------------------------
def _lut(img: np.ndarray, table: np.ndarray) -> np.ndarray:
    return cv2.LUT(img, np.clip(table + 0.5, 0, 255).astype(np.uint8))


_RAMP = np.arange(256, dtype=np.float32)


def _op_brightness(img, rng):
    return _lut(img, _RAMP * rng.uniform(0.7, 1.3) + rng.uniform(-40, 40))


def _op_contrast(img, rng):
    m = float(img.mean())
    return _lut(img, (_RAMP - m) * rng.uniform(0.4, 1.8) + m)


def _op_gamma(img, rng):
    return _lut(img, 255.0 * (_RAMP / 255.0) ** rng.uniform(0.4, 2.5))


def _op_hue_saturation(img, rng):
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)  # uint8: H in [0, 180)
    hue_lut = ((np.arange(256) + int(rng.integers(10, 170))) % 180).astype(np.uint8)
    sat_lut = np.clip(_RAMP * rng.uniform(0.3, 2.0) + 0.5, 0, 255).astype(np.uint8)
    hsv[..., 0] = hue_lut[hsv[..., 0]]
    hsv[..., 1] = sat_lut[hsv[..., 1]]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _op_sharpness(img, rng):
    # blur + k * (img - blur): k < 1 blurs, k > 1 sharpens (PIL ImageEnhance.Sharpness style).
    k = rng.uniform(0.0, 3.0)
    blur = cv2.GaussianBlur(img, (0, 0), rng.uniform(1.0, 2.5))
    return cv2.addWeighted(img, k, blur, 1.0 - k, 0.0)


def _op_solarize(img, rng):
    t = rng.uniform(32, 192)
    return _lut(img, np.where(_RAMP >= t, 255.0 - _RAMP, _RAMP))


def _op_posterize(img, rng):
    bits = int(rng.integers(2, 5))
    return img & np.uint8((0xFF << (8 - bits)) & 0xFF)


def _op_autocontrast(img, rng):
    # Per-channel stretch of the [lo, hi] percentiles to [0, 255] (PIL autocontrast with cut-off).
    cut = rng.uniform(0.0, 5.0)
    lo, hi = np.percentile(img.reshape(-1, 3), [cut, 100.0 - cut], axis=0)
    out = np.empty_like(img)
    for c in range(3):
        span = max(float(hi[c] - lo[c]), 1.0)
        out[..., c] = _lut(img[..., c], (_RAMP - lo[c]) * (255.0 / span))
    return out


def _op_flip(img, rng):
    return np.ascontiguousarray(cv2.flip(img, int(rng.integers(-1, 2))))


def _op_rotate(img, rng):
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), rng.uniform(-45, 45), 1.0)
    # Reflected border, not black corners: the source should be the image's own content.
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


# Eight photometric and two geometric ops: any 3 distinct ones include a photometric op, so the
# structure source always differs in appearance, not only in layout, from the normal image.
STRUCTURE_OPS = (_op_brightness, _op_contrast, _op_gamma, _op_hue_saturation, _op_sharpness,
                 _op_solarize, _op_posterize, _op_autocontrast, _op_flip, _op_rotate)


def _shuffle_tiles(img: np.ndarray, rng: np.random.Generator, grid: int = GRID) -> np.ndarray:
    """Cut into ``grid`` x ``grid`` tiles and permute them at random (MemSeg structure anomaly)."""
    h, w = img.shape[:2]
    th, tw = -(-h // grid), -(-w // grid)
    work = img if (th * grid, tw * grid) == (h, w) else cv2.resize(
        img, (tw * grid, th * grid), interpolation=cv2.INTER_LINEAR)
    tiles = work.reshape(grid, th, grid, tw, 3).transpose(0, 2, 1, 3, 4).reshape(grid * grid, th, tw, 3)
    tiles = tiles[rng.permutation(grid * grid)]
    out = tiles.reshape(grid, grid, th, tw, 3).transpose(0, 2, 1, 3, 4).reshape(th * grid, tw * grid, 3)
    if out.shape[:2] != (h, w):
        out = cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(out)


# ---------------------------------------------------------------------------------------------
# The synthesizer
# ---------------------------------------------------------------------------------------------
def _validate_cfg(cfg: SynthesisConfig) -> None:
    if not 0.0 <= cfg.texture_prob <= 1.0:
        raise ConfigError(f"synthesis.texture_prob must be in [0, 1], got {cfg.texture_prob}")
    if not 0.0 <= cfg.blend_min <= cfg.blend_max <= 1.0:
        raise ConfigError(f"synthesis.blend_min <= blend_max must lie in [0, 1], got "
                          f"{cfg.blend_min}, {cfg.blend_max}")
    if not 0 <= cfg.perlin_min_exp < cfg.perlin_max_exp:
        raise ConfigError(f"synthesis: need 0 <= perlin_min_exp < perlin_max_exp, got "
                          f"{cfg.perlin_min_exp}, {cfg.perlin_max_exp}")
    if not -1.0 < cfg.perlin_threshold < 1.0:
        raise ConfigError(f"synthesis.perlin_threshold must be in (-1, 1), got {cfg.perlin_threshold}")
    if cfg.min_component_px < 1:
        raise ConfigError(f"synthesis.min_component_px must be >= 1, got {cfg.min_component_px}")


class AnomalySynthesizer:
    """MemSeg-style synthetic defects (method.md component 10). See the module docstring.

    ``textures``: uint8 RGB texture images (e.g. from :func:`load_textures`). When ``None`` and
    ``cfg.texture_dir`` is set, that folder is loaded; when neither, procedural textures are used.
    """

    def __init__(self, cfg: SynthesisConfig, textures: list[np.ndarray] | None = None):
        _validate_cfg(cfg)
        self.cfg = cfg
        if textures is None and cfg.texture_dir:
            textures = load_textures(cfg.texture_dir)
        if textures is not None:
            textures = list(textures)
            for i, t in enumerate(textures):
                if not (isinstance(t, np.ndarray) and t.dtype == np.uint8 and t.ndim == 3
                        and t.shape[2] == 3 and min(t.shape[:2]) >= 2):
                    raise ValueError(f"texture {i}: expected uint8 RGB (H, W, 3), got "
                                     f"{getattr(t, 'dtype', type(t))} {getattr(t, 'shape', '')}")
            if not textures:
                textures = None  # an empty list means "no textures": procedural fallback
        self.textures = textures
        self.last_info: dict = {}  # what the last call did (source, ops, beta, mask tries): for logs

    # ---- mask -------------------------------------------------------------------------------
    def _mask(self, shape, rng, fg, min_px) -> np.ndarray:
        for attempt in range(1, MAX_MASK_TRIES + 1):
            m = perlin_mask(shape, rng, self.cfg)
            if fg is not None:
                m &= fg
            m = drop_small_components(m, min_px)
            if m.any():
                self.last_info["mask_tries"] = attempt
                return m
        self.last_info["mask_tries"] = -1  # fallback
        return fallback_disc(shape, rng, fg, min_px)

    # ---- source -----------------------------------------------------------------------------
    def _texture_source(self, shape, rng) -> np.ndarray:
        h, w = shape
        if self.textures is None:
            self.last_info["source"] = "procedural"
            return procedural_texture(shape, rng)
        k = int(rng.integers(len(self.textures)))
        self.last_info["source"] = f"texture:{k}"
        tex = self.textures[k]
        th, tw = tex.shape[:2]
        # Random crop with the target's aspect ratio, 40-100% of the largest such crop, resized.
        fit = min(th / h, tw / w)
        s = fit * rng.uniform(0.4, 1.0)
        ch, cw = max(1, min(th, round(h * s))), max(1, min(tw, round(w * s)))
        y0, x0 = int(rng.integers(0, th - ch + 1)), int(rng.integers(0, tw - cw + 1))
        crop = tex[y0:y0 + ch, x0:x0 + cw]
        interp = cv2.INTER_AREA if ch > h else cv2.INTER_LINEAR
        out = cv2.resize(crop, (w, h), interpolation=interp)
        if rng.random() < 0.5:
            out = cv2.flip(out, 1)
        return np.ascontiguousarray(out)

    def _structure_source(self, image, rng) -> np.ndarray:
        ops = rng.choice(len(STRUCTURE_OPS), size=3, replace=False)
        self.last_info["source"] = "structure"
        self.last_info["ops"] = [STRUCTURE_OPS[i].__name__[4:] for i in ops]
        out = image
        for i in ops:
            out = STRUCTURE_OPS[i](out, rng)
        return _shuffle_tiles(out, rng)

    # ---- call -------------------------------------------------------------------------------
    def __call__(self, image: np.ndarray, rng: np.random.Generator,
                 foreground: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """image: uint8 RGB (H, W, 3) at model-input size. Returns (anomalous uint8 RGB image, bool
        defect mask (H, W)). The mask is never empty, every 8-connected component of it has at
        least :func:`min_component_pixels` pixels, it lies inside ``foreground`` when given, and the
        output equals ``image`` wherever the mask is False.

        Raises ``ValueError`` for a malformed image/foreground, or a foreground without any
        connected region as large as the size floor (no valid defect can be placed there).
        """
        check_rgb_u8(image)
        shape = image.shape[:2]
        min_px = min_component_pixels(self.cfg, shape)
        fg = None if foreground is None else check_foreground(foreground, shape, min_px)
        self.last_info = {}
        mask = self._mask(shape, rng, fg, min_px)
        if rng.random() < self.cfg.texture_prob:
            source = self._texture_source(shape, rng)
        else:
            source = self._structure_source(image, rng)
        beta = float(rng.uniform(self.cfg.blend_min, self.cfg.blend_max))
        self.last_info["beta"] = beta
        # Blend only the masked pixels: the rest of the output is the input, untouched.
        out = image.copy()
        blended = (1.0 - beta) * image[mask].astype(np.float32) + beta * source[mask].astype(np.float32)
        out[mask] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
        return out, mask
