"""core/learning/fusion.py: the fused block score and the validation choice of its weight."""
from __future__ import annotations

import math

import numpy as np
import pytest

from core.learning.fusion import choose_weight, distance_reference, fuse


def _to_map(block, hw):
    return np.kron(block, np.ones((2, 2)))[:hw[0], :hw[1]]


def test_fuse_hand_values():
    p = np.array([[0.2, 0.8]])
    d = np.array([[1.0, 3.0]])
    np.testing.assert_allclose(fuse(p, d, 0.0, 2.0), p)
    np.testing.assert_allclose(fuse(p, d, 1.0, 2.0), [[(0.2 + 0.5) / 2, (0.8 + 1.5) / 2]])
    np.testing.assert_allclose(fuse(p, d, math.inf, 2.0), [[0.5, 1.5]])


def test_distance_reference_is_the_99th_percentile_of_normals():
    d = [np.arange(100, dtype=float).reshape(10, 10), np.arange(100, 200, dtype=float).reshape(10, 10)]
    assert distance_reference(d) == pytest.approx(np.quantile(np.arange(200), 0.99))
    assert distance_reference([]) == 1.0


def test_choose_weight_follows_the_validation_split():
    rng = np.random.default_rng(0)
    masks, probs, dists = [], [], []
    for i in range(6):
        m = np.zeros((4, 4), bool)
        if i % 2:
            m[1, 2] = True
        masks.append(np.kron(m, np.ones((2, 2), bool)))
        dists.append(rng.random((4, 4)) + 3.0 * m)          # the distance finds every defect
        probs.append(rng.random((4, 4)))                      # the Swin is guessing
    w, aps = choose_weight(probs, dists, masks, 1.0, _to_map)
    assert w > 0 and aps[str(w)] == max(aps.values()) and aps["0.0"] < aps[str(w)]
    # and when the Swin is right and the distance is noise, the plain map stays
    w2, aps2 = choose_weight(dists, probs, masks, 1.0, _to_map)
    assert w2 == 0.0
    # no defect pixel in validation: nothing to choose on
    assert choose_weight(probs, dists, [np.zeros((8, 8), bool)] * 6, 1.0, _to_map) == (0.0, {})
