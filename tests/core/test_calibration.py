"""Calibration from the validation split: the F1-optimal threshold and the display scale."""
from __future__ import annotations

import math

import numpy as np
import pytest

from core.eval.calibration import best_f1_threshold, calibrate


def test_best_f1_threshold_hand_example():
    # Ranked scores with labels: 0.9 D, 0.8 N, 0.7 D, 0.6 D, 0.2 N (3 defects).
    # F1 = 2 TP / (TP + FP + P) at each threshold "score >= t":
    #   t = 0.9: TP 1, FP 0 -> 2/4 = 0.5
    #   t = 0.8: TP 1, FP 1 -> 2/5 = 0.4
    #   t = 0.7: TP 2, FP 1 -> 4/6 = 0.667
    #   t = 0.6: TP 3, FP 1 -> 6/7 = 0.857   <- best
    #   t = 0.2: TP 3, FP 2 -> 6/8 = 0.75
    scores = np.array([0.7, 0.2, 0.9, 0.6, 0.8])
    labels = np.array([1, 0, 1, 1, 0])
    t, f1 = best_f1_threshold(scores, labels)
    assert t == pytest.approx(0.6) and f1 == pytest.approx(6 / 7)


def test_best_f1_threshold_ties_are_one_threshold():
    # Two equal scores, one defect one normal: "score >= 0.5" takes both (F1 = 2/3); a threshold
    # "between" them does not exist. Evaluating after the first of the tie would claim F1 = 1.
    t, f1 = best_f1_threshold(np.array([0.5, 0.5, 0.1]), np.array([True, False, False]))
    assert t == 0.5 and f1 == pytest.approx(2 / 3)
    t, f1 = best_f1_threshold(np.array([0.5, 0.5, 0.1]), np.array([False, True, False]))
    assert t == 0.5 and f1 == pytest.approx(2 / 3)


def test_best_f1_threshold_perfect_and_undefined():
    t, f1 = best_f1_threshold(np.array([[0.1, 0.3], [0.35, 0.8]]), np.array([[0, 0], [1, 1]]))
    assert t == pytest.approx(0.35) and f1 == 1.0
    # One class only: F1 undefined (NaN), threshold the median score.
    t, f1 = best_f1_threshold(np.array([0.1, 0.2, 0.9]), np.array([0, 0, 0]))
    assert t == pytest.approx(0.2) and math.isnan(f1)
    t, f1 = best_f1_threshold(np.array([0.1, 0.3]), np.array([1, 1]))
    assert t == pytest.approx(0.2) and math.isnan(f1)


def test_calibrate_hand_example():
    # Two normal maps (max 0.2, 0.3) and two defect maps (max 0.6, 0.9).
    m = [np.array([[0.1, 0.2]]), np.array([[0.3, 0.0]]), np.array([[0.6, 0.1]]), np.array([[0.2, 0.9]])]
    k = [np.zeros((1, 2), bool), np.zeros((1, 2), bool), np.array([[True, False]]), np.array([[False, True]])]
    cal = calibrate(m, k)
    # Image scores 0.2 N, 0.3 N, 0.6 D, 0.9 D: threshold 0.6 separates them, F1 = 1.
    assert cal["image_threshold"] == pytest.approx(0.6) and cal["image_f1"] == 1.0
    # Pixels: defects 0.6, 0.9; the best normal is 0.3 -> threshold 0.6, F1 = 1.
    assert cal["pixel_threshold"] == pytest.approx(0.6) and cal["pixel_f1"] == 1.0
    # Display scale: the 90% quantile of the defect image scores: 0.6 + 0.9 * (0.9 - 0.6) = 0.87.
    assert cal["map_scale"] == pytest.approx(0.87)
    assert cal["normal_image_scores"] == [0.2, 0.3] and cal["defect_image_scores"] == [0.6, 0.9]
    # Display floor: the 99th percentile of the normal maps' pixels (0.1, 0.2, 0.3, 0.0) = 0.297,
    # under 0.8 of the scale (0.696), so it is kept.
    assert cal["map_floor"] == pytest.approx(np.quantile([0.1, 0.2, 0.3, 0.0], 0.99))
    assert calibrate([], [])["map_scale"] == 1.0


def test_display_floor_makes_normal_parts_calm():
    from core.eval.anomaly_map import colorize, display_values
    # normals sit near 0.5 (the demo's old yellow wash), defects near 0.9
    m = [np.full((4, 4), 0.5) + 0.01 * i for i in range(3)] + [np.array([[0.5, 0.95], [0.5, 0.5]])]
    k = [np.zeros((4, 4), bool)] * 3 + [np.array([[False, True], [False, False]])]
    cal = calibrate(m, k)
    assert 0.5 <= cal["map_floor"] <= 0.53
    v = display_values(np.array([0.5, 0.95]), cal["map_scale"], cal["map_floor"])
    assert v[0] == 0.0 and v[1] == 1.0
    # with no floor the same normal value shows at half the scale (the wash)
    assert display_values(np.array([0.5]), cal["map_scale"])[0] > 0.5
    assert colorize(np.array([[0.5]]), cal["map_scale"], floor=cal["map_floor"]).shape == (1, 1, 3)
    # a floor can never swallow the defects: it stays at most 0.8 of the scale
    assert calibrate([np.full((2, 2), 0.9), np.array([[0.95, 0.1]])],
                     [np.zeros((2, 2), bool), np.array([[True, False]])])["map_floor"] <= 0.8 * 0.95 + 1e-9


def test_eval_mask_is_at_the_evaluation_size_of_its_own_shape():
    """Calibration scores maps at the evaluation size (longest side eval_size, aspect kept): the
    mask must come to the same size, a pixel defective when more than half of it is."""
    from core.eval.anomaly_map import eval_hw, eval_mask
    mask = np.zeros((60, 200), bool)
    mask[:, :100] = True                 # left half defective
    out = eval_mask(mask, 100)
    assert out.shape == eval_hw(200, 60, 100) == (30, 100)
    assert out.dtype == bool
    assert out[:, :49].all() and not out[:, 51:].any()
    # a downscale counts coverage: a 3 x 3 speck covers over half of one 4 x 4 target pixel only
    # where it sits inside it (cv2's bilinear would sample two source pixels and keep or drop it
    # by phase)
    for y, x, kept in ((200, 200, True), (201, 201, True), (202, 202, False)):
        speck = np.zeros((400, 400), bool)
        speck[y:y + 3, x:x + 3] = True
        out = eval_mask(speck, 100)
        assert out.any() == kept, (y, x)
    speck = np.zeros((400, 400), bool)
    speck[200:204, 200:204] = True       # the 4 x 4 cell of target pixel (50, 50)
    assert np.argwhere(eval_mask(speck, 100)).tolist() == [[50, 50]]
    # at 2x (the paper preset's 512 px against eval_size 256) area and bilinear agree
    import cv2
    rng = np.random.default_rng(0)
    m = rng.random((512, 384)) > 0.7
    assert (eval_mask(m, 256) == (cv2.resize(m.astype(np.float32), (192, 256)) > 0.5)).all()
