"""Which image to label next, from what the project stores (no Qt): the ranking of
core/eval/nextlabel.py over the review model's scores and block maps and the images' thumbnails.

Embeddings are cached per (image, model): the ranking is recomputed at each request (labels
change between two requests, and a new label moves what is novel and what is redundant), but each
thumbnail and block map is decoded once per session.
"""
from __future__ import annotations

import cv2
import numpy as np

from core.eval.nextlabel import Candidate, embedding, rank_next

from ..project.store import Store
from ..project.runs import ModelRow


def block_probabilities(block_map: np.ndarray, model: ModelRow) -> np.ndarray:
    """Block values as a probability of "defect": 0.5 at the pixel threshold, 0 at the model's
    floor (where normal parts sit), 1 at its scale, linear in between; so entropy peaks where the
    model cannot tell. The stored map is not a probability (a fused map passes 1, core/learning/fusion.py)."""
    v = np.asarray(block_map, np.float64)
    thr, lo, hi = model.pixel_threshold, model.map_floor, model.map_scale
    below = 0.5 * (v - lo) / max(1e-6, thr - lo)
    above = 0.5 + 0.5 * (v - thr) / max(1e-6, hi - thr)
    return np.clip(np.where(v < thr, below, above), 0.0, 1.0)


class NextLabelRanker:
    def __init__(self, store: Store):
        self.store = store
        self._cache: dict[tuple[int, int | None], tuple[np.ndarray, np.ndarray | None]] = {}

    def _item(self, image_id: int, model: ModelRow | None) -> tuple[np.ndarray, np.ndarray | None]:
        key = (image_id, None if model is None else model.id)
        hit = self._cache.get(key)
        if hit is None:
            png = self.store.thumbnail(image_id)
            thumb = None if png is None else cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
            if thumb is None:            # no thumbnail (or a broken one): a flat one, ranked by score alone
                thumb = np.zeros((8, 8), np.uint8)
            pred = None if model is None else self.store.runs.prediction(model.id, image_id)
            probs = None if pred is None else block_probabilities(pred[1], model)
            hit = self._cache[key] = (embedding(thumb, None if pred is None else pred[1]), probs)
        return hit

    def rank(self, candidates: list[int], model: ModelRow | None, scores: dict[int, float]) -> list[int]:
        """``candidates`` (image ids), best to label first. Labelled images of the whole project
        count for diversity, its labelled defective ones for novelty."""
        rows = {r.id: r for r in self.store.images()}
        labelled = [i for i, r in rows.items() if r.status != "unlabelled"]
        defective = [i for i in labelled if rows[i].status == "defective"]
        cands = []
        for i in candidates:
            emb, probs = self._item(i, model)
            cands.append(Candidate(i, emb, scores.get(i), probs))
        ranked = rank_next(cands, None if model is None else model.image_threshold,
                           labelled=[self._item(i, model)[0] for i in labelled],
                           labelled_defective=[self._item(i, model)[0] for i in defective])
        return [r.key for r in ranked]
