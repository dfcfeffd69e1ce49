"""Which image to label next: rank unlabelled images by how much a label would help (no torch).

Works on what a project already stores: each image's score and block map from the review model,
and a cheap embedding (:func:`embedding`: the image's thumbnail, and the patch around its hottest
block). Three parts, each in [0, 1]:

- **uncertainty**: the model cannot tell. The image score near the image threshold (a Gaussian
  bump whose width is the robust spread of the candidates' scores), and the entropy of the most
  uncertain block probabilities (the top 5 % of blocks: a defect is small, and the mean over all
  blocks is the confident background's). A label there moves the decision boundary.
- **novelty**: a high score far from known defects. The score's percentile among the candidates,
  times how far the image's embedding is from the nearest labelled defective image's (relative to
  the candidates' typical nearest-neighbour distance). A defect type nobody labelled yet teaches
  more than one more of a known type; with no labelled defect, any high score is novel.
- **diversity**: a greedy pass (farthest-point style) that takes the best value, then lowers the
  value of images close to it and to every labelled image, so the top of the list is not ten
  views of the same part.

value = w_u * uncertainty + w_n * novelty - w_d * exp(-d / d_ref), with d the distance to the
nearest labelled or already ranked image. Without a model (no scores), only diversity is left: the
ranking is a farthest-point walk away from what is labelled.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Sequence

import cv2
import numpy as np

THUMB_SIDE = 16          # embedding of the whole image: 16 x 16 grey levels
PATCH_SIDE = 8           # ... and of the patch around the hottest block: 8 x 8
PATCH_FRACTION = 0.25    # the patch's side, as a fraction of the thumbnail's longer side
TOP_BLOCKS = 0.05        # block entropy: mean over this fraction of the most uncertain blocks


@dataclass(frozen=True)
class NextLabelWeights:
    uncertainty: float = 1.0
    novelty: float = 1.0
    diversity: float = 1.0
    greedy_top: int = 300       # the greedy diversity pass runs over this many best candidates


@dataclass(frozen=True)
class Candidate:
    key: Hashable                       # the caller's id of the image
    embedding: np.ndarray               # 1-D, from :func:`embedding`
    score: float | None = None          # image score (None: not scored)
    block_map: np.ndarray | None = None  # block probabilities (rows, cols)


@dataclass(frozen=True)
class Ranked:
    key: Hashable
    value: float
    uncertainty: float
    novelty: float
    redundancy: float                   # exp(-d / d_ref) when it was ranked


def _unit(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.float64).ravel()
    v = v - v.mean()
    n = np.linalg.norm(v)
    return v / n if n > 1e-9 else np.zeros_like(v)


def embedding(thumb: np.ndarray, block_map: np.ndarray | None = None) -> np.ndarray:
    """A cheap embedding of an image: its thumbnail (any size, grey or colour) at 16 x 16, and the
    patch of the thumbnail around the block map's maximum at 8 x 8 (zeros without a map); each
    part zero-mean and unit-length, so brightness and contrast do not count, only the pattern."""
    g = thumb if thumb.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(thumb[..., :3]), cv2.COLOR_RGB2GRAY)
    g = g.astype(np.float32)
    whole = _unit(cv2.resize(g, (THUMB_SIDE, THUMB_SIDE), interpolation=cv2.INTER_AREA))
    patch = np.zeros(PATCH_SIDE * PATCH_SIDE)
    if block_map is not None and np.size(block_map):
        bm = np.asarray(block_map, np.float32)
        r, c = np.unravel_index(int(np.argmax(bm)), bm.shape)
        h, w = g.shape
        cy, cx = (r + 0.5) / bm.shape[0] * h, (c + 0.5) / bm.shape[1] * w
        half = max(2, int(round(PATCH_FRACTION * max(h, w) / 2)))
        y0, x0 = int(np.clip(cy - half, 0, max(0, h - 2 * half))), int(np.clip(cx - half, 0, max(0, w - 2 * half)))
        crop = g[y0:y0 + 2 * half, x0:x0 + 2 * half]
        patch = _unit(cv2.resize(crop, (PATCH_SIDE, PATCH_SIDE), interpolation=cv2.INTER_AREA))
    return np.concatenate([whole, patch])


def _entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-6, 1 - 1e-6)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def block_uncertainty(block_map: np.ndarray) -> float:
    """Mean binary entropy (bits, 0..1) of the most uncertain :data:`TOP_BLOCKS` of the blocks."""
    h = np.sort(_entropy(np.asarray(block_map)).ravel())[::-1]
    k = max(1, int(math.ceil(TOP_BLOCKS * h.size)))
    return float(h[:k].mean())


def _min_dist(x: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """Distance of each row of ``x`` to its nearest row of ``refs`` (inf with no refs)."""
    if len(refs) == 0:
        return np.full(len(x), np.inf)
    d2 = (x * x).sum(1)[:, None] + (refs * refs).sum(1)[None, :] - 2 * x @ refs.T
    return np.sqrt(np.maximum(d2, 0.0)).min(1)


def _spread(scores: np.ndarray) -> float:
    q75, q25 = np.percentile(scores, [75, 25])
    s = (q75 - q25) / 1.349                       # the IQR of a normal distribution is 1.349 sigma
    return float(s) if s > 1e-6 else float(np.std(scores)) or 1e-3


def rank_next(candidates: Sequence[Candidate], threshold: float | None = None,
              labelled: Sequence[np.ndarray] = (), labelled_defective: Sequence[np.ndarray] = (),
              weights: NextLabelWeights = NextLabelWeights()) -> list[Ranked]:
    """Every candidate, best to label first. ``labelled``: embeddings of every labelled image
    (diversity keeps away from them); ``labelled_defective``: those of the defective ones
    (novelty is distance from them)."""
    n = len(candidates)
    if n == 0:
        return []
    X = np.stack([np.asarray(c.embedding, np.float64) for c in candidates])
    L = np.stack([np.asarray(e, np.float64) for e in labelled]) if len(labelled) else np.zeros((0, X.shape[1]))
    D = (np.stack([np.asarray(e, np.float64) for e in labelled_defective]) if len(labelled_defective)
         else np.zeros((0, X.shape[1])))
    # d_ref: the typical distance between a candidate and its nearest other candidate
    if n > 1:
        S = X[np.unique(np.linspace(0, n - 1, min(n, 1000)).astype(int))]   # bounded memory: <= 1000^2
        d2 = (S * S).sum(1)[:, None] + (S * S).sum(1)[None, :] - 2 * S @ S.T
        np.fill_diagonal(d2, np.inf)
        d_ref = float(np.median(np.sqrt(np.maximum(d2.min(1), 0.0))))
    else:
        d_ref = 0.0
    d_ref = d_ref if d_ref > 1e-9 else 1.0

    scored = np.array([c.score is not None and math.isfinite(c.score) for c in candidates])
    scores = np.array([c.score if s else np.nan for c, s in zip(candidates, scored)], np.float64)
    unc, nov = np.zeros(n), np.zeros(n)
    if scored.any():
        s = scores[scored]
        if threshold is not None and math.isfinite(threshold):
            unc_img = np.exp(-0.5 * ((s - threshold) / _spread(s)) ** 2)
        else:
            unc_img = np.zeros_like(s)
        pct = (np.argsort(np.argsort(s)) / max(1, len(s) - 1)) if len(s) > 1 else np.ones(1)
        far = _min_dist(X[scored], D)
        far = np.ones_like(far) if len(D) == 0 else far / (far + d_ref)
        nov[scored] = pct * far
        unc[scored] = unc_img
    for i, c in enumerate(candidates):
        if c.block_map is not None and np.size(c.block_map):
            bu = block_uncertainty(c.block_map)
            unc[i] = 0.5 * (unc[i] + bu) if scored[i] and threshold is not None else bu
    base = weights.uncertainty * unc + weights.novelty * nov

    near = _min_dist(X, L)                          # distance to the nearest labelled or ranked
    pool = list(np.argsort(-base, kind="stable")[:max(1, weights.greedy_top)])
    out: list[Ranked] = []
    while pool:
        red = np.exp(-near[pool] / d_ref)
        value = base[pool] - weights.diversity * red
        j = int(np.argmax(value))
        i = pool.pop(j)
        out.append(Ranked(candidates[i].key, float(value[j]), float(unc[i]), float(nov[i]), float(red[j])))
        near = np.minimum(near, np.sqrt(((X - X[i]) ** 2).sum(1)))
    # past the greedy pool: the rest by value against everything ranked so far (the whole greedy
    # pass is O(n^2); past a few hundred nobody labels in one sitting)
    taken = {r.key for r in out}
    rest = [i for i in range(n) if candidates[i].key not in taken]
    red = np.exp(-near[rest] / d_ref) if rest else np.zeros(0)
    tail = sorted(((base[i] - weights.diversity * r, i, r) for i, r in zip(rest, red)), key=lambda t: -t[0])
    out += [Ranked(candidates[i].key, float(v), float(unc[i]), float(nov[i]), float(r)) for v, i, r in tail]
    return out
