"""Evaluation metrics (spec, "Evaluation protocol").

Per category, over all test pixels of the category: pixel AP, pixel AUROC, PRO (mean per-region
overlap integrated up to FPR 0.3 and normalised) and image AUROC, with the ground truth resized to
256 x 256 (threshold 0.5).

Conventions, stated once:
- ``maps``: float ``(N, H, W)``, higher = more anomalous. ``masks``: ``(N, H, W)``, True (or any
  non-zero value, e.g. 255) = defect. A single 2-D map/mask pair is accepted as N = 1.
- Curves (ROC, PRO) run over all thresholds; pixels with tied scores enter together, which makes
  a straight segment of the curve (sklearn's ROC, the MVTec PRO code and ours agree on this).
- The metrics are undefined without both defect and normal pixels (or, for image AUROC, without
  both defective and good images): we raise ``ValueError`` saying so rather than return a made-up
  number. Non-finite scores raise too (sklearn would otherwise fail with an unrelated message).
- AUROC below 0.5 is reported as is, never "flipped" to 1 - AUROC: an inverted detector is bad.
"""
from __future__ import annotations

import cv2
import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from .anomaly_map import resize_mask

__all__ = ["pixel_ap", "pixel_auroc", "pro_score", "image_auroc", "evaluate", "resize_masks",
           "pro_curve"]


# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------
def _check(maps, masks, what: str) -> tuple[np.ndarray, np.ndarray]:
    maps = np.asarray(maps)
    masks = np.asarray(masks)
    if maps.ndim == 2:
        maps = maps[None]
    if masks.ndim == 2:
        masks = masks[None]
    if maps.ndim != 3:
        raise ValueError(f"{what}: maps must be (N, H, W), got shape {maps.shape}")
    if maps.shape != masks.shape:
        raise ValueError(f"{what}: maps {maps.shape} and masks {masks.shape} differ in shape "
                         f"(resize the masks with resize_masks and the maps to the same size)")
    if not np.issubdtype(maps.dtype, np.number) or np.issubdtype(maps.dtype, np.complexfloating):
        raise ValueError(f"{what}: maps must be real numbers, got {maps.dtype}")
    if not np.isfinite(maps).all():
        raise ValueError(f"{what}: maps contain NaN or infinite scores")
    if masks.dtype != bool:
        masks = masks != 0
    n_def = int(np.count_nonzero(masks))
    if n_def == 0:
        raise ValueError(f"{what} is undefined: the masks contain no defect pixels")
    if n_def == masks.size:
        raise ValueError(f"{what} is undefined: the masks contain no normal (defect-free) pixels")
    return maps, masks


# ---------------------------------------------------------------------------------------------
# Pixel AP / AUROC
# ---------------------------------------------------------------------------------------------
def pixel_ap(maps: np.ndarray, masks: np.ndarray) -> float:
    """Average precision over all pixels (sklearn's step-wise AP, no interpolation)."""
    maps, masks = _check(maps, masks, "pixel AP")
    return float(average_precision_score(masks.ravel(), maps.ravel()))


def pooled_pixel_ap(maps: list[np.ndarray], masks: list[np.ndarray]) -> float:
    """Pixel AP over maps of any sizes (the pixels of every map pooled, as the evaluation does);
    NaN when no mask has a defective pixel."""
    maps_a = np.concatenate([np.asarray(m, np.float32).ravel() for m in maps])[None, None]
    masks_a = np.concatenate([np.asarray(m, bool).ravel() for m in masks])[None, None]
    return pixel_ap(maps_a, masks_a) if masks_a.any() else float("nan")


def pixel_auroc(maps: np.ndarray, masks: np.ndarray) -> float:
    """Area under the ROC curve over all pixels (ties count one half)."""
    maps, masks = _check(maps, masks, "pixel AUROC")
    return float(roc_auc_score(masks.ravel(), maps.ravel()))


# ---------------------------------------------------------------------------------------------
# PRO
# ---------------------------------------------------------------------------------------------
def _trapezoid_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under the polyline (x, y) (x non-decreasing) from x[0] to ``x_max``, the
    curve interpolated linearly exactly at ``x_max`` (as ``trapezoid`` in the MVTec AD evaluation
    code, Bergmann et al. 2021)."""
    keep = x <= x_max
    xs, ys = x[keep], y[keep]
    area = float(np.sum(0.5 * (ys[1:] + ys[:-1]) * np.diff(xs)))
    if xs[-1] < x_max:  # partial segment up to x_max
        i = int(np.count_nonzero(keep))  # first point beyond x_max
        x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
        y_at = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
        area += 0.5 * (y0 + y_at) * (x_max - x0)
    return area


def pro_curve(maps: np.ndarray, masks: np.ndarray, max_fpr: float = 0.3,
              num_thresholds: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """The PRO curve as (fpr, pro) arrays, both non-decreasing, from (0, 0) to (1, 1).

    Regions are the 8-connected components of each ground-truth mask; each region weighs the same
    whatever its size. The false-positive rate is over all normal pixels of all images (normal
    images and the defect-free pixels of defective ones).

    Thresholds are the normal-pixel scores at ``num_thresholds`` evenly spaced false-positive
    rates in [0, max_fpr], one step beyond ``max_fpr`` (so the curve can be interpolated there)
    and the lowest normal score. Cost: one sort of the normal scores and a ``searchsorted`` of the
    defect scores; each defect pixel adds ``1 / (region size * number of regions)`` to the PRO of
    every threshold below its score (a weighted histogram plus a suffix sum), so there is no loop
    over thresholds and no rescan of the pixels. With ``num_thresholds`` at least the number of
    normal pixels every normal score is a threshold and the curve equals the exact one of the MVTec
    AD code (all distinct scores, tied scores joined by a straight segment).
    """
    maps, masks = _check(maps, masks, "PRO")
    if not 0.0 < max_fpr <= 1.0:
        raise ValueError(f"PRO: max_fpr must be in (0, 1], got {max_fpr}")
    if num_thresholds < 2:
        raise ValueError(f"PRO: num_thresholds must be at least 2, got {num_thresholds}")

    # Per-pixel weight 1 / (|region| * #regions), regions = 8-connected components per image.
    weights = np.zeros(masks.shape, np.float64)
    n_regions = 0
    for i in range(masks.shape[0]):
        if not masks[i].any():
            continue
        m = np.ascontiguousarray(masks[i]).view(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
        inv_size = np.zeros(n, np.float64)
        inv_size[1:] = 1.0 / stats[1:, cv2.CC_STAT_AREA]
        weights[i] = inv_size[labels]
        n_regions += n - 1
    defect_scores = maps[masks].astype(np.float64)
    defect_weights = weights[masks] / n_regions

    normal = np.sort(maps[~masks].astype(np.float64))
    m = normal.size
    # k = number of normal pixels above the threshold; threshold = the (k+1)-th largest score.
    # k = m - 1 (the lowest normal score) is always included, so the curve reaches FPR 1.
    step = max_fpr / (num_thresholds - 1)
    ks = np.round(np.linspace(0.0, max_fpr + step, num_thresholds + 1) * m).astype(np.int64)
    ks = np.unique(np.clip(np.append(ks, m - 1), 0, m - 1))
    thresholds = np.unique(normal[m - 1 - ks])                    # ascending, distinct
    # Two curve points per threshold t: "score > t" (B) and "score >= t" (A). Going down from
    # B(t) to A(t) is the step across the pixels scoring exactly t (a diagonal where normal and
    # defect pixels tie, as in the MVTec code); from A(t_hi) to B(t) the FPR does not change when
    # t, t_hi are adjacent normal scores, so defect scores in between make the exact vertical rise.
    # With every normal score as a threshold this is the MVTec curve point for point.
    fpr_gt = (m - np.searchsorted(normal, thresholds, side="right")) / m
    fpr_ge = (m - np.searchsorted(normal, thresholds, side="left")) / m
    n = thresholds.size

    def pro_at(n_detected_at: np.ndarray) -> np.ndarray:
        # Defect pixel with n_detected_at = c counts at thresholds 0..c-1 (a suffix-sum histogram).
        hist = np.bincount(n_detected_at, weights=defect_weights, minlength=n + 1)
        return np.cumsum(hist[::-1])[::-1][1:]

    pro_gt = pro_at(np.searchsorted(thresholds, defect_scores, side="left"))   # #t < score
    pro_ge = pro_at(np.searchsorted(thresholds, defect_scores, side="right"))  # #t <= score
    # Interleave B, A by descending threshold; then FPR and PRO both ascend. Add (0, 0) for
    # t = +inf and (1, 1) for t = -inf.
    fpr = np.empty(2 * n + 2)
    pro = np.empty(2 * n + 2)
    fpr[0], pro[0], fpr[-1], pro[-1] = 0.0, 0.0, 1.0, 1.0
    fpr[1:-1:2], fpr[2:-1:2] = fpr_gt[::-1], fpr_ge[::-1]
    pro[1:-1:2], pro[2:-1:2] = pro_gt[::-1], pro_ge[::-1]
    np.minimum(pro, 1.0, out=pro)  # float rounding of the sums
    return fpr, pro


def pro_score(maps: np.ndarray, masks: np.ndarray, max_fpr: float = 0.3,
              num_thresholds: int = 1000) -> float:
    """Normalised area under the PRO curve up to ``max_fpr``: in [0, 1], 1 = perfect.

    PRO(t) = mean over ground-truth regions of the fraction of the region's pixels scoring above
    ``t``; integrated over the false-positive rate from 0 to ``max_fpr`` (trapezoid, interpolated
    exactly at ``max_fpr``) and divided by ``max_fpr``, as in the MVTec AD evaluation code and
    anomalib's AUPRO. See :func:`pro_curve` for the thresholds; with the default 1000 the result is
    within 1e-3 of the exact all-thresholds value (the error of a trapezoid rule on a monotone
    curve is at most one FPR step, 1/999 of the range, and usually far less).
    """
    fpr, pro = pro_curve(maps, masks, max_fpr, num_thresholds)
    return float(_trapezoid_to(fpr, pro, max_fpr) / max_fpr)


# ---------------------------------------------------------------------------------------------
# Image level, everything, mask resizing
# ---------------------------------------------------------------------------------------------
def image_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """AUROC of image scores against image labels (True = defective)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel() != 0
    if scores.shape != labels.shape:
        raise ValueError(f"image AUROC: {scores.size} scores but {labels.size} labels")
    if not np.isfinite(scores).all():
        raise ValueError("image AUROC: scores contain NaN or infinite values")
    if labels.all():
        raise ValueError("image AUROC is undefined: every image is defective (no good image)")
    if not labels.any():
        raise ValueError("image AUROC is undefined: no image is defective")
    return float(roc_auc_score(labels, scores))


def evaluate(maps: np.ndarray, masks: np.ndarray,
             image_scores: np.ndarray | None = None) -> dict[str, float]:
    """All four protocol metrics: ``pixel_ap``, ``pro``, ``pixel_auroc``, ``image_auroc``.

    Image labels: an image is defective when its mask has any defect pixel. Image scores default
    to the maximum of each map (pass the pipeline's own rule, method.md component 18, to override).
    Raises ``ValueError`` when a metric is undefined (see the module docstring), e.g. for a test
    set without good images.
    """
    maps, masks = _check(maps, masks, "evaluate")
    labels = masks.reshape(masks.shape[0], -1).any(axis=1)
    if image_scores is None:
        image_scores = maps.reshape(maps.shape[0], -1).max(axis=1)
    elif np.asarray(image_scores).size != maps.shape[0]:
        raise ValueError(f"evaluate: {np.asarray(image_scores).size} image scores for "
                         f"{maps.shape[0]} maps")
    return {
        "pixel_ap": pixel_ap(maps, masks),
        "pro": pro_score(maps, masks),
        "pixel_auroc": pixel_auroc(maps, masks),
        "image_auroc": image_auroc(image_scores, labels),
    }


def resize_masks(masks: list[np.ndarray] | np.ndarray, size: int) -> np.ndarray:
    """Ground-truth masks resized to ``size`` x ``size`` as the protocol says, bool ``(N, size, size)``.

    Each mask is resized as a 0/1 float image and thresholded at > 0.5: bilinear (``INTER_LINEAR``)
    when enlarging, area averaging (``INTER_AREA``) when shrinking both sides, so a pixel is a defect
    when more than half of the area it covers was defect. (For a factor-2 reduction the two are the
    same.) Masks of different sizes may be mixed in a list. Note that defects smaller than about
    half an output pixel vanish when shrinking, as under any threshold-0.5 rule.
    """
    if size < 1:
        raise ValueError(f"resize_masks: size must be positive, got {size}")
    if isinstance(masks, np.ndarray) and masks.ndim == 2:
        masks = [masks]
    out = np.zeros((len(masks), size, size), bool)
    for i, m in enumerate(masks):
        m = np.asarray(m)
        if m.ndim != 2 or m.size == 0:
            raise ValueError(f"resize_masks: mask {i} must be a non-empty 2-D array, got shape {m.shape}")
        out[i] = resize_mask(m, (size, size))
    return out
