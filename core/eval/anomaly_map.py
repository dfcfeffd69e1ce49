"""Anomaly maps as arrays: block map -> smoothed map at the evaluation size, and the map's colours
on the model's fixed display scale. No torch here: the viewer colours arrays without loading a
deep-learning stack, and training, inference and export share one definition of the map.
"""
from __future__ import annotations

import cv2
import numpy as np


def sharpen(block_map: np.ndarray, gamma: float) -> np.ndarray:
    """Each positive block scaled by ``(b / max3x3(b)) ** gamma``, the max over its 3 x 3
    neighbourhood (itself included, borders ignored); blocks <= 0 are kept (a score that can go
    negative, e.g. REB's, keeps its order). ``gamma`` 0 returns the map unchanged.

    Why (decision 0026): a defect's strongest block keeps its score and the weaker blocks around it,
    the one-block halo that the 3 x 3 feature aggregation spreads, lose in proportion. The halo is
    where nearly all of PIPED's wrongly flagged pixels lie (``python -m bench.ceiling``)."""
    b = np.asarray(block_map, np.float32)
    if gamma == 0:
        return b
    pos = np.maximum(b, 0.0)
    # the 3 x 3 maximum; the replicated border adds no value that is not already a neighbour
    peak = cv2.dilate(b, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)
    ratio = pos / np.maximum(peak, 1e-12)            # in [0, 1]: peak >= b
    return (b - pos * (1.0 - ratio ** np.float32(gamma))).astype(np.float32)


def postprocess(block_map: np.ndarray, out_hw: tuple[int, int], sigma: float,
                upsample: str = "nearest", sharpness: float = 0.0) -> np.ndarray:
    """(rows, cols) -> (H, W) float32: :func:`sharpen` with ``sharpness`` (0: off), upsample
    (nearest: every block keeps its value, as PatchCore's reference does; or bilinear), then a
    Gaussian of ``sigma`` pixels with a kernel of 2*int(4*sigma+0.5)+1 and mirrored borders
    (torch's "reflect", OpenCV's REFLECT_101)."""
    h, w = out_hw
    interp = cv2.INTER_NEAREST if upsample == "nearest" else cv2.INTER_LINEAR
    up = cv2.resize(sharpen(block_map, sharpness), (w, h), interpolation=interp)
    if sigma > 0:
        k = 2 * int(4.0 * sigma + 0.5) + 1
        up = cv2.GaussianBlur(up, (k, k), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
    return up


def output_map(block_map: np.ndarray, out_hw: tuple[int, int], output) -> np.ndarray:
    """:func:`postprocess` with a model's output settings (``core.config.OutputConfig``: sigma,
    upsampling, sharpness): the one call every method's maps go through, so a new output setting
    reaches inference, evaluation, calibration and the bench alike."""
    return postprocess(block_map, out_hw, output.gaussian_sigma, output.upsample, output.sharpness)


# output.contrast_choice "validation" picks beta among these (0: off) by validation pixel AP
CONTRAST_BETAS = (0.0, 0.1, 0.3, 1.0)
CONTRAST_CHOICES = ("fixed", "validation")
# held-out labels whose pixels can choose it: masks, the block tool's cells and boxes' insides
# (each a region a person marked defective; cells and boxes are coarser than the defect, and
# validation says whether the refinement still helps inside them)
CONTRAST_LABEL_KINDS = ("mask", "blocks", "boxes")


def grey_levels(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W) grey levels of an RGB (or already grey) image, as :func:`pixel_contrast` reads it."""
    img = np.asarray(image)
    if img.ndim == 3:
        img = cv2.cvtColor(np.ascontiguousarray(img[..., :3]), cv2.COLOR_RGB2GRAY)
    if img.dtype != np.uint8:       # cv2's median of a large kernel needs 8-bit grey levels
        img = np.clip(np.rint(img.astype(np.float32)), 0, 255).astype(np.uint8)
    return img


def pixel_contrast(image: np.ndarray, hw: tuple[int, int], kernel: int) -> np.ndarray:
    """(H, W) float32 at ``hw``: each pixel's absolute difference from the median of the
    ``kernel`` x ``kernel`` pixels around it (grey levels of ``image`` at ``hw``), divided by the
    median of those differences over the image, so that a typical pixel is 1 whatever the image's
    brightness and texture. Zeros for a flat image (nothing stands out of it)."""
    img = grey_levels(image)
    h, w = hw
    if img.shape != (h, w):
        shrink = img.shape[0] >= h and img.shape[1] >= w
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    k = max(3, int(kernel) | 1)
    d = np.abs(img.astype(np.float32) - cv2.medianBlur(img, k).astype(np.float32))
    typical = float(np.median(d))
    if typical <= 0:
        typical = float(d.mean())
    return d / typical if typical > 0 else np.zeros_like(d)


def contrast_kernel(map_hw: tuple[int, int], block_grid: tuple[int, int], radius_blocks: float) -> int:
    """The odd side, in map pixels, of :func:`pixel_contrast`'s window: ``radius_blocks`` blocks of
    the model's grid (``block_grid``: rows, cols of the block map) on each side of the pixel."""
    block_px = max(map_hw[0] / max(1, block_grid[0]), map_hw[1] / max(1, block_grid[1]))
    return 2 * int(round(radius_blocks * block_px)) + 1


def map_contrast(map_hw: tuple[int, int], image: np.ndarray, block_grid: tuple[int, int],
                 radius_blocks: float) -> np.ndarray:
    """:func:`pixel_contrast` of ``image`` at a map's size, with a window of ``radius_blocks``
    blocks of the model's grid: the z that :func:`with_contrast` weighs a map by."""
    return pixel_contrast(image, map_hw, contrast_kernel(map_hw, block_grid, radius_blocks))


def with_contrast(amap: np.ndarray, z: np.ndarray, beta: float) -> np.ndarray:
    """``m * (1 + beta z) / (1 + beta)`` (``beta`` <= 0: the map itself)."""
    if beta <= 0:
        return amap
    return (amap * ((1.0 + beta * z) / (1.0 + beta))).astype(np.float32)


def refine_by_contrast(amap: np.ndarray, image: np.ndarray, block_grid: tuple[int, int], beta: float,
                       radius_blocks: float) -> np.ndarray:
    """The map weighted pixel by pixel by how much each pixel stands out of its neighbourhood:
    ``m * (1 + beta z) / (1 + beta)``, z from :func:`pixel_contrast` (1 on a typical pixel, so
    normal regions keep their values and the model's calibrated scale) with a window of
    ``radius_blocks`` blocks (``output.contrast``, ``output.contrast_radius``; decision 0028).

    Why: a block covers 4 x 4 to 8 x 8 image pixels, and the 3 x 3 feature aggregation spreads a
    defect over a halo about one block wide, so a 3-pixel speck shows as a blob of about 12 x 12
    pixels (``python -m bench.ceiling``). The image itself says which pixels of the blob differ
    from their surroundings. ``beta`` 0 is the paper's map; by default held-out labelled defects
    choose beta when there are some (``output.contrast_choice``, core/eval/calibration.choose_contrast)."""
    if beta <= 0:
        return amap
    return with_contrast(amap, map_contrast(amap.shape[:2], image, block_grid, radius_blocks), beta)


def image_map(block_map: np.ndarray, image_hw: tuple[int, int], output,
              out_hw: tuple[int, int] | None = None, image: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """(anomaly map, image score) of an image of ``image_hw`` (H, W) from its block map, as
    inference makes them: :func:`output_map` at the evaluation size (longest side
    ``output.eval_size``), whose maximum is the image score, then refined by the image's pixel
    contrast when ``output.contrast`` is on (:func:`refine_by_contrast`; ``image``, uint8 RGB at its
    own size, is then required; the score stays the unrefined map's maximum: an image's verdict is
    the model's, the refinement only says which pixels), then bilinear to ``out_hw`` (a mask's
    size, say) when given."""
    maps, score = image_maps(block_map, image_hw, output, (output.contrast,), out_hw, image)
    return maps[float(output.contrast)], score


def image_maps(block_map: np.ndarray, image_hw: tuple[int, int], output, betas,
               out_hw: tuple[int, int] | None = None,
               image: np.ndarray | None = None) -> tuple[dict[float, np.ndarray], float]:
    """:func:`image_map`'s map at each of ``betas`` (``output.contrast`` replaced; what scoring one
    model at several betas needs), and the image score. The output map and the pixel contrast z are
    made once for all betas; only the weighting and the resize are per beta."""
    ev = eval_hw(image_hw[1], image_hw[0], output.eval_size)
    base = output_map(block_map, ev, output)
    z, maps = None, {}
    for b in map(float, betas):
        amap = base
        if b > 0:
            if image is None:
                raise ValueError("output.contrast is on: image_map needs the image to refine the map")
            if z is None:
                z = map_contrast(base.shape[:2], image, np.shape(block_map)[:2], output.contrast_radius)
            amap = with_contrast(base, z, b)
        if out_hw is not None and tuple(out_hw) != ev:
            amap = cv2.resize(amap, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_LINEAR)
        maps[b] = amap
    return maps, float(base.max())


def resize_mask(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """A mask (any dtype; non-zero = defect) at (H, W) ``hw``, bool: a target pixel is defective
    when more than half of it is. Area averaging when shrinking both sides, bilinear otherwise:
    cv2's bilinear downscale samples the two source pixels nearest a target pixel's centre, so at
    4x a 3 x 3 px speck would vanish or not by where it sits (at 2x the two are the same)."""
    m = np.asarray(mask) != 0
    h, w = m.shape
    if (h, w) == tuple(hw):
        return m
    shrink = h >= hw[0] and w >= hw[1]
    return cv2.resize(m.astype(np.float32), (hw[1], hw[0]),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR) > 0.5


def eval_mask(mask: np.ndarray, eval_size: int) -> np.ndarray:
    """A pixel mask at the evaluation size (longest side ``eval_size``, aspect kept), as the maps
    that calibration and validation score against it (:func:`resize_mask`'s rule)."""
    return resize_mask(mask, eval_hw(mask.shape[1], mask.shape[0], eval_size))


def eval_hw(width: int, height: int, eval_size: int) -> tuple[int, int]:
    """(H, W) of the evaluation map: longest side eval_size, aspect kept."""
    s = eval_size / max(width, height)
    return max(1, round(height * s)), max(1, round(width * s))


COLORMAPS = {"jet": cv2.COLORMAP_JET, "turbo": cv2.COLORMAP_TURBO, "inferno": cv2.COLORMAP_INFERNO,
             "viridis": cv2.COLORMAP_VIRIDIS, "hot": cv2.COLORMAP_HOT}


def display_values(amap: np.ndarray, scale: float, floor: float = 0.0) -> np.ndarray:
    """The model's fixed display range [floor, scale] -> [0, 1] (never per-image normalisation):
    ``floor`` is where normal parts sit (calibration's ``map_floor``), so they show as calm."""
    top = max(scale, floor + 1e-12)
    return np.clip((amap - floor) / (top - floor), 0, 1)


def colorize(amap: np.ndarray, scale: float, colormap: str = "jet", floor: float = 0.0) -> np.ndarray:
    """Map -> RGB heatmap with the model's fixed scale (not per-image normalisation)."""
    v = display_values(amap, scale, floor)
    bgr = cv2.applyColorMap((v * 255).astype(np.uint8), COLORMAPS[colormap])
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def overlay_alpha(amap: np.ndarray, scale: float, opacity: float, floor: float = 0.0) -> np.ndarray:
    """Per-pixel opacity of the overlay: calm regions stay transparent."""
    return opacity * display_values(amap, scale, floor)


def overlay(img: np.ndarray, amap: np.ndarray, scale: float, opacity: float = 0.5,
            colormap: str = "jet", floor: float = 0.0) -> np.ndarray:
    heat = colorize(amap, scale, colormap, floor)
    alpha = overlay_alpha(amap, scale, opacity, floor)[..., None]
    return (img * (1 - alpha) + heat * alpha).astype(np.uint8)
