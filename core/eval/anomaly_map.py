"""Anomaly maps as arrays: block map -> smoothed map at the evaluation size, and the map's colours
on the model's fixed display scale. No torch here: the viewer colours arrays without loading a
deep-learning stack, and training, inference and export share one definition of the map.
"""
from __future__ import annotations

import cv2
import numpy as np


def postprocess(block_map: np.ndarray, out_hw: tuple[int, int], sigma: float,
                upsample: str = "nearest") -> np.ndarray:
    """(rows, cols) -> (H, W) float32: upsample (nearest: every block keeps its value, as
    PatchCore's reference does; or bilinear), then a Gaussian of ``sigma`` pixels with a kernel of
    2*int(4*sigma+0.5)+1 and mirrored borders (torch's "reflect", OpenCV's REFLECT_101)."""
    h, w = out_hw
    interp = cv2.INTER_NEAREST if upsample == "nearest" else cv2.INTER_LINEAR
    up = cv2.resize(block_map.astype(np.float32), (w, h), interpolation=interp)
    if sigma > 0:
        k = 2 * int(4.0 * sigma + 0.5) + 1
        up = cv2.GaussianBlur(up, (k, k), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
    return up


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
