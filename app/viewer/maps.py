"""Anomaly maps for display, without Qt: the core's smoothed map, colour with the model's fixed
scale, and the blended overlay. The canvas layer (app.viewer.heat) and the report both use these.
"""
from __future__ import annotations

import cv2
import numpy as np

from core.eval import anomaly_map   # no torch: colouring an array never loads the deep-learning stack

COLORMAPS = tuple(anomaly_map.COLORMAPS)
CONTRAST_BETAS = anomaly_map.CONTRAST_BETAS     # the review panel's Pixel contrast choices (decision 0028)
VIEWS = ("smoothed", "blocks")
# upsample: models made before decision 0013 (no "upsample" in their display record) were bilinear
# sharpness: models made before decision 0026 were not sharpened; contrast: before decision 0028
# no map was refined by pixel contrast
DEFAULT_DISPLAY = {"eval_size": 256, "gaussian_sigma": 4.0, "upsample": "bilinear", "sharpness": 0.0,
                   "contrast": 0.0, "contrast_radius": 2.0}


def smoothed_map(block_map: np.ndarray, width: int, height: int, display: dict | None = None,
                 image: np.ndarray | None = None) -> np.ndarray:
    """The core's anomaly map at the evaluation size, as inference makes it: the block map
    smoothed, then refined by the image's pixel contrast when the model does that (``image``, uint8
    RGB or grey levels at ``width`` x ``height``, is then needed; without it the map stays unrefined)."""
    d = {**DEFAULT_DISPLAY, **(display or {})}
    hw = anomaly_map.eval_hw(width, height, int(d["eval_size"]))
    amap = anomaly_map.postprocess(block_map, hw, float(d["gaussian_sigma"]), str(d["upsample"]),
                                   float(d["sharpness"]))
    if float(d["contrast"]) > 0 and image is not None:
        amap = anomaly_map.refine_by_contrast(amap, image, np.shape(block_map)[:2], float(d["contrast"]),
                                              float(d["contrast_radius"]))
    return amap


def needs_image(display: dict | None) -> bool:
    """Whether the model's maps are refined by the image's pixels (decision 0028)."""
    return float({**DEFAULT_DISPLAY, **(display or {})}["contrast"]) > 0


def colorize_rgba(values: np.ndarray, scale: float, colormap: str, opacity: float,
                  floor: float = 0.0) -> np.ndarray:
    """(h, w) map -> (h, w, 4) BGRA uint8 with the fixed range [floor, scale]; alpha = opacity *
    normalised value."""
    values = np.asarray(values, np.float32)
    rgb = anomaly_map.colorize(values, scale, colormap, floor)
    alpha = (anomaly_map.overlay_alpha(values, scale, float(np.clip(opacity, 0.0, 1.0)), floor) * 255).astype(np.uint8)
    return np.ascontiguousarray(np.dstack([rgb[..., ::-1], alpha]))


def overlay_rgb(rgb: np.ndarray, block_map: np.ndarray, map_scale: float, colormap: str = "jet",
                opacity: float = 0.6, display: dict | None = None, map_floor: float = 0.0) -> np.ndarray:
    """The overlay as an RGB array at the image's size (for the exported PNGs):
    core.eval.anomaly_map.overlay."""
    h, w = rgb.shape[:2]
    amap = cv2.resize(smoothed_map(block_map, w, h, display, rgb), (w, h), interpolation=cv2.INTER_LINEAR)
    return anomaly_map.overlay(rgb, amap, map_scale, opacity, colormap, map_floor)
