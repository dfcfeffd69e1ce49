"""Fusing the Swin's block probability with the block's nearest-neighbour distance.

The residual Swin sees only residuals and decides per block; the distance to the nearest bank
entry (what PatchCore scores) is computed anyway for the residual and used to be thrown away. It
is sharp on specks that the Swin, trained on synthetic defects, can be unsure about, and it does
not depend on how well the synthetic defects resembled the real ones. The fused block score is

    s = (p + w * d / d_ref) / (1 + w)          (w = inf: s = d / d_ref)

with ``d_ref`` the 99th percentile of the block distances of the validation normals (held out of
the bank, so their distances look like a test image's) and ``w`` chosen on the validation split
(held-out normals + DefectMaker defects, never test images) from :data:`WEIGHTS` by pixel AP of the
smoothed maps. ``w = 0`` is the plain SemiREST map.
"""
from __future__ import annotations

import math

import numpy as np

WEIGHTS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, math.inf)


def combine(prob, nd, weight: float):
    """The fused score of a probability map and a normalised distance map (d / d_ref): numpy arrays
    or torch tensors alike (the exported graph uses it on tensors, core/methods/semirest.py)."""
    if weight == 0:
        return prob
    if math.isinf(weight):
        return nd
    return (prob + weight * nd) / (1.0 + weight)


def normalised(dist, d_ref: float):
    """A distance map on the fusion's scale, d / d_ref (numpy or torch alike)."""
    return dist / max(d_ref, 1e-12)


def fuse(prob: np.ndarray, dist: np.ndarray, weight: float, d_ref: float) -> np.ndarray:
    """Fused block scores (float32) of one image's probability and distance block maps."""
    if weight == 0:
        return prob.astype(np.float32)
    return np.asarray(combine(prob, normalised(dist, d_ref), weight), np.float32)


def distance_reference(normal_dists: list[np.ndarray]) -> float:
    """The 99th percentile of the validation normals' block distances (1.0 without any)."""
    if not normal_dists:
        return 1.0
    return float(max(np.quantile(np.concatenate([d.ravel() for d in normal_dists]), 0.99), 1e-12))


def choose_weight(probs: list[np.ndarray], dists: list[np.ndarray], masks: list[np.ndarray],
                  d_ref: float, to_map, weights=WEIGHTS) -> tuple[float, dict[str, float]]:
    """The weight with the best validation pixel AP (ties: the smaller weight), and every AP.

    ``to_map(block, mask_shape)`` turns a block map into the smoothed map scored against ``mask``.
    Without a defect pixel in the validation split the plain map (w = 0) is kept.
    """
    from ..eval.calibration import best_by_pixel_ap
    if not masks or not any(m.any() for m in masks):
        return 0.0, {}
    return best_by_pixel_ap(weights, lambda w: [to_map(fuse(p, d, w, d_ref), m.shape)
                                                for p, d, m in zip(probs, dists, masks)], masks)
