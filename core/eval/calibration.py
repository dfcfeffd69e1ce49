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
