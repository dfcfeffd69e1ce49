"""Which image to label next (core/eval/nextlabel.py): each part of the ranking on constructed cases."""
from __future__ import annotations

import time

import numpy as np

from core.eval.nextlabel import Candidate, NextLabelWeights, block_uncertainty, embedding, rank_next


def _thumb(seed: int, stripes: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (48, 64)).astype(np.uint8)
    if stripes is not None:          # a strong pattern: images with the same one embed close
        img = ((np.arange(64)[None, :] // stripes % 2) * 200 + rng.integers(0, 20, (48, 64))).astype(np.uint8)
    return img


def _keys(ranked):
    return [r.key for r in ranked]


def test_embedding_ignores_brightness_and_sees_the_hot_patch():
    a = _thumb(0)
    e = embedding(a)
    assert e.shape == (16 * 16 + 8 * 8,)
    assert np.allclose(embedding(np.clip(a.astype(int) + 20, 0, 255).astype(np.uint8)), e, atol=0.05)
    hot_left, hot_right = np.zeros((6, 8)), np.zeros((6, 8))
    hot_left[3, 1], hot_right[3, 6] = 1, 1
    assert not np.allclose(embedding(a, hot_left), embedding(a, hot_right))
    assert np.allclose(embedding(a, hot_left)[:256], e[:256])
    rgb = np.stack([a] * 3, -1)
    assert np.allclose(embedding(rgb), e, atol=1e-3)


def test_uncertainty_prefers_scores_near_the_threshold_and_unsure_blocks():
    cands = [Candidate(k, embedding(_thumb(k)), s) for k, s in enumerate([0.05, 0.49, 0.95, 0.1, 0.9])]
    w = NextLabelWeights(novelty=0.0, diversity=0.0)
    assert _keys(rank_next(cands, threshold=0.5, weights=w))[0] == 1
    assert _keys(rank_next(cands, threshold=0.92, weights=w))[0] in (2, 4)
    sure, unsure = np.zeros((8, 8)), np.zeros((8, 8))
    unsure[2:4, 2:4] = 0.5
    assert block_uncertainty(unsure) > 0.9 > 0.01 > block_uncertainty(sure)
    blocks = [Candidate("sure", embedding(_thumb(1)), block_map=sure),
              Candidate("unsure", embedding(_thumb(2)), block_map=unsure)]
    assert _keys(rank_next(blocks, weights=w)) == ["unsure", "sure"]


def test_novelty_prefers_a_high_score_unlike_the_labelled_defects():
    known = [embedding(_thumb(100 + i, stripes=4)) for i in range(3)]   # labelled: stripes of 4 px
    like_known = Candidate("like", embedding(_thumb(7, stripes=4)), 0.9)
    new_type = Candidate("new", embedding(_thumb(8, stripes=13)), 0.9)
    low = Candidate("low", embedding(_thumb(9, stripes=13)), 0.1)
    w = NextLabelWeights(uncertainty=0.0, diversity=0.0)
    ranked = rank_next([like_known, new_type, low], threshold=None, labelled_defective=known, weights=w)
    assert _keys(ranked) == ["new", "like", "low"]
    assert ranked[0].novelty > ranked[1].novelty > ranked[2].novelty == 0.0
    # with no labelled defect a high score is novel whatever it looks like
    alone = rank_next([like_known, low], weights=w)
    assert alone[0].key == "like" and alone[0].novelty > 0.9


def test_diversity_spreads_the_top_of_the_list_over_different_images():
    # six near-copies listed first, and two different images, all as uncertain (score at threshold)
    copies = [Candidate(f"copy{i}", embedding(_thumb(i, stripes=4)), 0.5) for i in range(6)]
    others = [Candidate("other_a", embedding(_thumb(50, stripes=11)), 0.5),
              Candidate("other_b", embedding(_thumb(51, stripes=23)), 0.5)]
    w = NextLabelWeights(novelty=0.0)
    no_div = rank_next(copies + others, threshold=0.5, weights=NextLabelWeights(novelty=0.0, diversity=0.0))
    assert set(_keys(no_div)[:3]) <= {c.key for c in copies}
    div = rank_next(copies + others, threshold=0.5, weights=w)
    assert _keys(div)[0] == "copy0" and {"other_a", "other_b"} <= set(_keys(div)[:3])
    # a labelled image counts too: its copies go down
    lab = rank_next(copies + others, threshold=0.5, labelled=[copies[0].embedding], weights=w)
    assert _keys(lab)[0] in ("other_a", "other_b")
    assert sorted(_keys(lab)) == sorted(c.key for c in copies + others)     # every one, once


def test_without_a_model_it_walks_away_from_what_is_labelled_and_scales():
    near = Candidate("near", embedding(_thumb(1, stripes=4)))
    far = Candidate("far", embedding(_thumb(2, stripes=17)))
    ranked = rank_next([near, far], labelled=[embedding(_thumb(3, stripes=4))])
    assert _keys(ranked) == ["far", "near"]
    rng = np.random.default_rng(0)
    many = [Candidate(i, rng.standard_normal(320), float(rng.random()), rng.random((16, 16)))
            for i in range(3000)]
    t0 = time.perf_counter()
    out = rank_next(many, threshold=0.5, labelled=[rng.standard_normal(320) for _ in range(50)])
    assert len(out) == 3000 and len({r.key for r in out}) == 3000
    assert time.perf_counter() - t0 < 10
