"""Per-model calibration from the validation split (never from test images).

- ``map_scale``: one fixed scale for displaying every map of this model (value / map_scale, clipped
  to [0, 1]), so a good part looks calm instead of being stretched to full colour per image.
- ``image_threshold`` / ``pixel_threshold``: defaults that maximise F1 on the validation split
  (held-out normals vs synthetic defects); the app lets the user move them and stores its choice.
- score statistics of validation normals and defects, for the viewer's histogram.
"""
from __future__ import annotations

import numpy as np


def best_f1_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) maximising F1 for ``score >= threshold`` predicting ``labels``."""
    scores = np.asarray(scores, np.float64).ravel()
    labels = np.asarray(labels, bool).ravel()
    if labels.all() or not labels.any():
        return float(np.median(scores)), float("nan")
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    last = np.r_[s[1:] != s[:-1], True]      # evaluate only at the end of runs of equal scores
    tp, fp, s = tp[last], fp[last], s[last]
    f1 = 2 * tp / (tp + fp + labels.sum())
    i = int(np.argmax(f1))
    return float(s[i]), float(f1[i])


def best_by_pixel_ap(values, maps_for, masks: list[np.ndarray]) -> tuple[float, dict[str, float]]:
    """The value (of ``values``, in order, the first the plainest) whose validation maps
    (``maps_for(value)``, at the masks' sizes) have the best pooled pixel AP, ties going to the
    earlier one, and every AP by ``str(value)``. Without a defect pixel: the first value, ``{}``.
    What the fusion weight (core/learning/fusion.py) and the pixel-contrast beta are chosen by."""
    from .metrics import pixel_ap
    values = list(values)
    if not masks or not any(m.any() for m in masks):
        return values[0], {}
    flat_masks = np.concatenate([m.ravel() for m in masks])
    aps: dict[str, float] = {}
    best, best_ap = values[0], -1.0
    for v in values:
        flat = np.concatenate([m.ravel() for m in maps_for(v)])
        ap = pixel_ap(flat[None], flat_masks[None])
        aps[str(v)] = ap
        if ap > best_ap + 1e-9:
            best, best_ap = v, ap
    return best, aps


def contrast_maps(maps: list[np.ndarray], images: list[np.ndarray], grids: list[tuple[int, int]],
                  radius_blocks: float, beta: float) -> list[np.ndarray]:
    """Validation maps (at their masks' size) refined by their images' pixel contrast with ``beta``
    (core/eval/anomaly_map.refine_by_contrast; 0: the maps as they are)."""
    from .anomaly_map import refine_by_contrast
    return [refine_by_contrast(m, img, g, beta, radius_blocks) for m, img, g in zip(maps, images, grids, strict=True)]


def choose_contrast(maps: list[np.ndarray], images: list[np.ndarray], grids: list[tuple[int, int]],
                    masks: list[np.ndarray], output, betas=None) -> tuple[float, dict[str, float]]:
    """The pixel-contrast beta (``output.contrast_choice`` "validation", decision 0028) with the best
    validation pixel AP (ties: the smaller beta, so 0, the map as it is, wins a draw), and every AP.
    Without a defect pixel in the validation split the map stays as it is (0). Each image's
    contrast is computed once for every beta."""
    from .anomaly_map import CONTRAST_BETAS, map_contrast, with_contrast
    betas = [float(b) for b in (CONTRAST_BETAS if betas is None else betas)]
    if not masks or not any(m.any() for m in masks):
        return 0.0, {}
    zs = [map_contrast(m.shape[:2], img, g, output.contrast_radius) for m, img, g in zip(maps, images, grids, strict=True)]
    return best_by_pixel_ap(betas, lambda b: [with_contrast(m, z, b) for m, z in zip(maps, zs)], masks)


def calibrate(maps: list[np.ndarray], masks: list[np.ndarray]) -> dict:
    """Calibration from validation maps (any sizes) and their pixel masks (all False for normals)."""
    if not maps:
        return {"map_scale": 1.0, "image_threshold": 0.5, "pixel_threshold": 0.5}
    img_scores = np.array([float(m.max()) for m in maps])
    img_labels = np.array([bool(k.any()) for k in masks])
    pix = np.concatenate([m.ravel() for m in maps])
    pix_lab = np.concatenate([k.ravel() for k in masks])
    if len(pix) > 2_000_000:   # F1 threshold is stable on a subsample; keeps this step fast
        sel = np.random.default_rng(0).choice(len(pix), 2_000_000, replace=False)
        pix, pix_lab = pix[sel], pix_lab[sel]
    it, if1 = best_f1_threshold(img_scores, img_labels)
    pt, pf1 = best_f1_threshold(pix, pix_lab)
    defect_scores = img_scores[img_labels]
    normal_scores = img_scores[~img_labels]
    scale = float(np.quantile(defect_scores, 0.9)) if len(defect_scores) else float(img_scores.max())
    # Display floor: where the pixels of validation normals sit (their 99th percentile), so that a
    # good part shows calm instead of the colour of a mid-scale value (SemiREST's normal blocks sit
    # near a probability of 0.5 on some classes, PatchCore's distances never reach 0).
    normal_pix = [m.ravel() for m, k in zip(maps, masks) if not k.any()]
    floor = float(np.quantile(np.concatenate(normal_pix), 0.99)) if normal_pix else 0.0
    floor = min(floor, 0.8 * scale) if scale > 0 else 0.0   # keep room for the defects' colours
    return {
        "map_scale": float(max(scale, 1e-6)),   # probabilities (SemiREST) or distances (PatchCore)
        "map_floor": floor,
        "image_threshold": it, "image_f1": if1,
        "pixel_threshold": pt, "pixel_f1": pf1,
        "normal_image_scores": normal_scores.round(6).tolist(),
        "defect_image_scores": defect_scores.round(6).tolist(),
    }
