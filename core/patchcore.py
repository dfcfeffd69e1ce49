"""PatchCore, the baseline every benchmark shows beside SemiREST (docs: other-methods.md).

Same backbone, aggregation and channel pooling as SemiREST (components 2 and 4), *no* position
code, coreset of the same ratio; the anomaly score of a block is the Euclidean distance to its
nearest bank entry. Post-processing (upsample, Gaussian sigma 4, image score = map maximum) is the
same as SemiREST's, so the two differ only in what happens after the nearest-neighbour search.
"""
from __future__ import annotations

import numpy as np
import torch

from .bank import MemoryBank, build_bank
from .config import Config
from .datasets import prepare_image
from .features import Encoder
from .inference import Prediction, _Timer, eval_hw, postprocess


class PatchCore:
    def __init__(self, cfg: Config, encoder: Encoder):
        self.cfg = cfg
        self.encoder = encoder
        self.bank: MemoryBank | None = None

    def fit(self, images: list[np.ndarray], tick=None) -> "PatchCore":
        """``images``: training normals, uint8 RGB at their own size."""
        f = self.cfg.features
        x = [prepare_image(i, f.image_size, f.size_multiple) for i in images]
        feats = self.encoder.encode(x, with_position=False)
        b = self.cfg.bank
        self.bank = build_bank([q.reshape(-1, q.shape[-1]).numpy() for q in feats], b.coreset_ratio,
                               b.coreset_dim, b.coreset_starts, b.max_patches, self.cfg.train.seed,
                               self.encoder.device, tick)
        return self

    def predict(self, img: np.ndarray) -> Prediction:
        timer = _Timer(self.encoder.device)
        f = self.cfg.features
        x = prepare_image(img, f.image_size, f.size_multiple)
        with timer("backbone"):
            q = self.encoder.encode([x], with_position=False)[0]
        with timer("search"):
            d2, _ = self.bank.search(q.reshape(-1, q.shape[-1]), 1)
            block = np.sqrt(np.maximum(d2[:, 0], 0)).reshape(q.shape[:2])
        with timer("post"):
            amap = postprocess(block, eval_hw(img.shape[1], img.shape[0], self.cfg.output.eval_size),
                               self.cfg.output.gaussian_sigma)
        return Prediction(block, amap, float(amap.max()), dict(timer.times))
