"""Local-Density KNN (LDKNN), REB's anomaly score (Lyu, Mo, Wong; docs/method.md, REB).

Some regions of a memory bank of normal features are naturally sparse (rare but normal texture),
so a plain nearest-neighbour distance calls their queries anomalous. LDKNN subtracts the local
spread of the bank around the matched entry:

    score(q) = d(q, m*) - lambda * density(m*),   density(m) = mean_{k=1..K} d(m, n_k(m))

with m* the bank entry nearest to q, n_k(m) the K nearest *other* bank entries of m and d the
Euclidean distance. Sign: a sparse neighbourhood (large mean distance) *lowers* the score, as the
paper's formula and its reference code (``ld_dist * ld_coefficient`` subtracted) do. Two choices of
ours, said where they differ from the reference code: d is the Euclidean distance (the project's
PatchCore score) where the code subtracts faiss' squared distances, and the density is taken among
the bank entries themselves (the coreset when there is one) where the code searches all training
features before the coreset.

The densities are computed once when the bank is built and stored with it (``bank["density"]`` in
the model file); scoring is then one exact 1-NN search plus a lookup.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..embedding.bank import MemoryBank

Tick = Callable[[int, int], None]


def local_density(bank: MemoryBank, k: int, tick: Tick | None = None, chunk: int = 4096) -> np.ndarray:
    """(T,) float32: each bank entry's mean Euclidean distance to its ``k`` nearest other entries.

    One exact search of the bank against itself (faiss on the CPU, a matmul on CUDA), in chunks of
    ``chunk`` entries so that ``tick(done, total)`` reports progress and can cancel. The entry
    itself is dropped by index, not by position: with duplicate features it need not come first."""
    n = len(bank)
    if n <= k:
        raise ValueError(f"LDKNN needs more than K={k} bank entries to measure densities, the bank "
                         f"has {n}: lower reb.ldknn_k or train on more images")
    out = np.empty(n, np.float32)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        d2, idx = bank.search(bank.features[s:e], k + 1)
        own = idx == np.arange(s, e)[:, None]
        keep = ~own
        # rows whose own index is not among the k+1 found (ties with duplicates): drop the farthest
        keep[~own.any(axis=1), -1] = False
        d = np.sqrt(np.maximum(d2[keep].reshape(e - s, k), 0.0))
        out[s:e] = d.mean(axis=1)
        if tick is not None:
            tick(e, n)
    return out


def ldknn(bank: MemoryBank, density: np.ndarray | torch.Tensor, feats: np.ndarray | torch.Tensor,
          lam: float, exclude_owner: int | None = None) -> np.ndarray:
    """``feats`` (..., d) -> LDKNN scores (...) float32 (see the module docstring).
    ``exclude_owner``: leave-one-out, that training image's entries are not candidates."""
    dist, idx = bank.nearest(feats, exclude_owner)
    dens = density.numpy() if isinstance(density, torch.Tensor) else np.asarray(density)
    return (dist - np.float32(lam) * dens[idx]).astype(np.float32)
