"""Evaluation metrics (spec "Evaluation protocol"): hand-computed values, a slow reference for PRO,
and the undefined cases."""
from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from core.eval.metrics import (evaluate, image_auroc, pixel_ap, pixel_auroc, pro_curve, pro_score,
                               resize_masks)


# ---------------------------------------------------------------------------------------------
# AP and AUROC by hand
# ---------------------------------------------------------------------------------------------
def test_ap_and_auroc_hand_computed():
    # Ranked: 0.9 (defect), 0.8 (normal), 0.7 (defect), 0.1 (normal).
    maps = np.array([[[0.9, 0.8], [0.7, 0.1]]])
    masks = np.array([[[True, False], [True, False]]])
    # AP = mean precision at each defect's rank = (1/1 + 2/3) / 2.
    assert pixel_ap(maps, masks) == pytest.approx((1 + 2 / 3) / 2)
    # AUROC = fraction of (defect, normal) pairs ordered right: 0.9>0.8, 0.9>0.1, 0.7>0.1, not 0.7>0.8.
    assert pixel_auroc(maps, masks) == pytest.approx(3 / 4)


def test_auroc_counts_ties_as_half():
    maps = np.array([[[0.5, 0.5, 0.2]]])
    masks = np.array([[[True, False, False]]])
    # pairs: (0.5 vs 0.5) tie = 1/2, (0.5 vs 0.2) = 1.
    assert pixel_auroc(maps, masks) == pytest.approx(0.75)


def test_perfect_and_inverted_maps_are_not_flipped():
    masks = np.zeros((2, 4, 4), bool)
    masks[0, :2, :2] = True          # a 4-px region
    masks[1, 3, 3] = True            # a 1-px region
    rng = np.random.default_rng(0)
    normal_scores = rng.uniform(0.0, 0.5, masks.shape)
    perfect = np.where(masks, rng.uniform(0.6, 1.0, masks.shape), normal_scores)
    assert pixel_ap(perfect, masks) == pytest.approx(1.0)
    assert pixel_auroc(perfect, masks) == pytest.approx(1.0)
    assert pro_score(perfect, masks) == pytest.approx(1.0)
    inverted = -perfect
    assert pixel_auroc(inverted, masks) == pytest.approx(0.0)   # reported as is, never 1 - AUROC
    assert pro_score(inverted, masks) == pytest.approx(0.0)
    # AP of an inverted ranking: 5 defects ranked after all 27 normals: mean_k k / (27 + k).
    expected_ap = np.mean([k / (27 + k) for k in range(1, 6)])
    assert pixel_ap(inverted, masks) == pytest.approx(expected_ap)


# ---------------------------------------------------------------------------------------------
# PRO by hand
# ---------------------------------------------------------------------------------------------
def _two_region_case(lower_half_of_b: float):
    """Region A (4 px, image 0) and region B (8 px, image 1); 88 normal pixels.

    Scores: A all 1.0; B: 4 px at 1.0, 4 px at ``lower_half_of_b``; normal: 22 px at 0.5, 66 at 0.
    """
    masks = np.zeros((2, 10, 5), bool)
    maps = np.zeros((2, 10, 5))
    masks[0, 0:2, 0:2] = True
    maps[0, 0:2, 0:2] = 1.0
    masks[1, 2:6, 1:3] = True
    maps[1, 2:4, 1:3] = 1.0
    maps[1, 4:6, 1:3] = lower_half_of_b
    normal = np.flatnonzero(~masks.ravel())
    assert normal.size == 88
    maps.reshape(-1)[normal[:22]] = 0.5
    return maps, masks


def test_pro_hand_computed_two_regions():
    maps, masks = _two_region_case(lower_half_of_b=0.2)
    # t in [0.5, 1): FPR 0, A fully and B half detected -> PRO (1 + 1/2) / 2 = 0.75.
    # t in [0.2, 0.5): FPR 22/88 = 0.25, PRO 0.75.   t in [0, 0.2): FPR 0.25, PRO 1.
    # Area up to 0.3 = 0.25 * 0.75 + 0.05 * 1 = 0.2375 -> normalised 0.2375 / 0.3.
    assert pro_score(maps, masks, max_fpr=0.3) == pytest.approx(0.2375 / 0.3)
    assert pro_score(maps, masks, max_fpr=0.25) == pytest.approx(0.75)
    assert pro_score(maps, masks, max_fpr=0.1) == pytest.approx(0.75)
    fpr, pro = pro_curve(maps, masks)
    pts = set(zip(np.round(fpr, 9), np.round(pro, 9)))
    assert {(0.0, 0.75), (0.25, 0.75), (0.25, 1.0), (1.0, 1.0)} <= pts
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= -1e-12)


def test_pro_interpolates_exactly_at_max_fpr():
    # B's lower half ties with the 66 normal pixels at 0: one straight segment (0.25, 0.75) -> (1, 1)
    # crosses max_fpr = 0.3, where PRO = 0.75 + 0.25 * 0.05 / 0.75.
    maps, masks = _two_region_case(lower_half_of_b=0.0)
    y_at = 0.75 + 0.25 * 0.05 / 0.75
    area = 0.25 * 0.75 + 0.05 * (0.75 + y_at) / 2
    assert pro_score(maps, masks, max_fpr=0.3) == pytest.approx(area / 0.3)
    # Stopping at the last curve point below 0.3 (no interpolation) would give 0.625, and
    # integrating the full segment would overshoot: the exact value is in between.
    assert 0.625 < area / 0.3 < 0.76
    assert pro_score(maps, masks, max_fpr=1.0) == pytest.approx(0.25 * 0.75 + 0.75 * (0.75 + 1) / 2)


def test_pro_regions_are_8_connected_and_weigh_equally():
    masks = np.zeros((1, 8, 8), bool)
    maps = np.zeros((1, 8, 8))
    masks[0, 0, 0] = masks[0, 1, 1] = True    # diagonal neighbours: one region of 2 px
    masks[0, 5, 5] = True                     # a 1-px region
    maps[0, 0, 0] = maps[0, 5, 5] = 1.0       # (1, 1) ties with the normal pixels at 0
    # 8-connected: PRO at FPR 0 = (1/2 + 1) / 2 = 0.75, then straight to (1, 1):
    # area = 0.3 * 0.75 + 0.25 * 0.3**2 / 2. (4-connected would start at 2/3 instead.)
    assert pro_score(maps, masks) == pytest.approx((0.3 * 0.75 + 0.25 * 0.09 / 2) / 0.3)


# ---------------------------------------------------------------------------------------------
# PRO against a slow, obviously correct reference
# ---------------------------------------------------------------------------------------------
def _slow_pro(maps, masks, max_fpr):
    """Definition-level PRO: every distinct score is a threshold (score >= t is anomalous),
    FPR over normal pixels, mean over 8-connected regions of the fraction detected."""
    regions = []
    for i in range(masks.shape[0]):
        n, lab = cv2.connectedComponents(masks[i].astype(np.uint8), connectivity=8)
        regions += [maps[i][lab == k] for k in range(1, n)]
    normal = maps[~masks]
    xs, ys = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        xs.append(np.mean(normal >= t))
        ys.append(np.mean([np.mean(r >= t) for r in regions]))
    xs.append(1.0)
    ys.append(1.0)
    area = 0.0
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x0 >= max_fpr:
            break
        if x1 > max_fpr:   # cut the segment at max_fpr
            y1 = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
            x1 = max_fpr
        area += (x1 - x0) * (y0 + y1) / 2
    return area / max_fpr


@pytest.mark.parametrize("seed", range(4))
def test_fast_pro_matches_slow_reference(seed):
    rng = np.random.default_rng(seed)
    n, size = 3, 24
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n - 1):  # the last image stays good
        for _ in range(rng.integers(1, 4)):
            c = tuple(int(v) for v in rng.integers(0, size, 2))
            cv2.circle(masks[i], c, int(rng.integers(1, 5)), 1, -1)
    masks = masks.astype(bool)
    maps = rng.random(masks.shape) + masks * rng.uniform(0.2, 0.8)
    if seed % 2:  # coarse scores: many ties between normal and defect pixels
        maps = np.round(maps * 6) / 6
    for max_fpr in (0.3, 0.05, 1.0):
        ref = _slow_pro(maps, masks, max_fpr)
        assert pro_score(maps, masks, max_fpr) == pytest.approx(ref, abs=1e-3)
        # with every normal score a threshold, the fast curve is the exact one
        assert pro_score(maps, masks, max_fpr, num_thresholds=10 ** 6) == pytest.approx(ref, abs=1e-9)


def test_pro_fast_on_protocol_sized_input():
    # 72 maps of 256 x 256 = 4.7M pixels (about 0.5 s on one core). A loop over 1000 thresholds
    # that rescans the pixels would take minutes; the bound is loose for slow CI machines.
    rng = np.random.default_rng(0)
    maps = rng.random((72, 256, 256), dtype=np.float32)
    masks = np.zeros(maps.shape, bool)
    masks[:36, 100:120, 50:90] = True
    maps[masks] += 0.3
    t0 = time.process_time()  # CPU time: robust to other jobs on the machine
    value = pro_score(maps, masks)
    assert time.process_time() - t0 < 10.0
    assert 0.0 < value < 1.0


# ---------------------------------------------------------------------------------------------
# Undefined cases and bad input
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [pixel_ap, pixel_auroc, pro_score, evaluate])
def test_metrics_raise_without_defect_or_normal_pixels(fn):
    maps = np.random.default_rng(0).random((2, 4, 4))
    with pytest.raises(ValueError, match="no defect pixels"):
        fn(maps, np.zeros((2, 4, 4), bool))
    with pytest.raises(ValueError, match="no normal"):
        fn(maps, np.ones((2, 4, 4), bool))


def test_metrics_reject_bad_input():
    maps = np.zeros((2, 4, 4))
    masks = np.zeros((2, 4, 4), bool)
    masks[0, 0, 0] = True
    with pytest.raises(ValueError, match="shape"):
        pixel_ap(maps, masks[:, :3])
    bad = maps.copy()
    bad[1, 2, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pro_score(bad, masks)
    with pytest.raises(ValueError, match="max_fpr"):
        pro_score(maps, masks, max_fpr=0.0)


def test_image_auroc_hand_computed_and_undefined():
    # defective scores 0.9, 0.4; good 0.5, 0.1 -> pairs right: 0.9>0.5, 0.9>0.1, 0.4>0.1 = 3/4.
    assert image_auroc([0.9, 0.5, 0.4, 0.1], [1, 0, 1, 0]) == pytest.approx(0.75)
    assert image_auroc([0.1, 0.9], [True, False]) == pytest.approx(0.0)  # not flipped
    with pytest.raises(ValueError, match="every image is defective"):
        image_auroc([0.1, 0.9], [1, 1])
    with pytest.raises(ValueError, match="no image is defective"):
        image_auroc([0.1, 0.9], [0, 0])


def test_evaluate_keys_labels_and_default_image_scores():
    maps = np.zeros((3, 4, 4))
    masks = np.zeros((3, 4, 4), np.uint8)
    masks[0, 1, 1] = 255                 # 255 = defect, as in the MVTec PNGs
    masks[1, 2, 2] = 255
    maps[0, 1, 1] = 0.9                   # image maxima: 0.9 (defective), 0.3 (defective), 0.5 (good)
    maps[1, 2, 2] = 0.3
    maps[2, 0, 0] = 0.5
    out = evaluate(maps, masks)
    assert set(out) == {"pixel_ap", "pro", "pixel_auroc", "image_auroc"}
    assert all(isinstance(v, float) for v in out.values())
    assert out["image_auroc"] == pytest.approx(0.5)  # 0.9 > 0.5 right, 0.3 < 0.5 wrong
    assert out["pixel_auroc"] == pytest.approx(pixel_auroc(maps, masks))
    # explicit image scores override the maxima
    assert evaluate(maps, masks, image_scores=np.array([1.0, 0.8, 0.2]))["image_auroc"] == 1.0
    with pytest.raises(ValueError, match="image scores"):
        evaluate(maps, masks, image_scores=np.array([1.0, 0.8]))


# ---------------------------------------------------------------------------------------------
# resize_masks
# ---------------------------------------------------------------------------------------------
def test_resize_masks_upsampling_keeps_a_one_pixel_speck():
    m = np.zeros((128, 128), np.uint8)
    m[10, 20] = 255
    out = resize_masks([m], 256)
    assert out.dtype == bool and out.shape == (1, 256, 256)
    assert np.array_equal(np.argwhere(out[0]), [[20, 40], [20, 41], [21, 40], [21, 41]])


def test_resize_masks_downsampling_thresholds_area_at_half():
    m = np.zeros((1024, 1024), bool)
    m[0:2, 0:2] = True        # 4 of the 16 px of output pixel (0, 0): 25% -> dropped
    m[8:11, 8:11] = True      # 9 of 16 px of output pixel (2, 2): 56% -> kept
    out = resize_masks(m, 256)
    assert out.shape == (1, 256, 256)
    assert np.array_equal(np.argwhere(out[0]), [[2, 2]])


def test_resize_masks_mixed_sizes_and_identity():
    a = np.zeros((256, 256), bool)
    a[5:9, 7:30] = True
    b = np.ones((64, 32), bool)
    out = resize_masks([a, b], 256)
    assert np.array_equal(out[0], a)
    assert out[1].all()
    with pytest.raises(ValueError):
        resize_masks([np.zeros((3, 3, 3))], 256)
