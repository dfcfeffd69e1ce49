"""The memory bank of normal position-constrained features (method.md component 4, Eq. 4).

- :func:`approximate_greedy_coreset`: PatchCore's approximate greedy k-centre selection (random
  projection to ``coreset_dim`` dimensions, distances to ``coreset_starts`` random points as the
  starting minimum distances, then repeatedly take the farthest point), partitioned into k-means
  cells of ``coreset_cell`` points so that a step updates one cell, not every patch. Runs on the
  given device and reports progress / honours cancellation through ``tick``.
- :class:`MemoryBank`: the selected features plus the index of the training image each came from
  (its *owner*). Entries are sorted by owner, so the entries of one image form one contiguous range
  and leave-one-out (component 6) is a range exclusion in the exact search.
- Exact k-nearest-neighbour search: faiss ``IndexFlatL2`` on the CPU; on a CUDA device a chunked
  exact matrix-product search in torch (faiss-cpu has no GPU index). Both return squared L2
  distances and bank indices, best first.
- :class:`NearestEntry`: the same exact 1-NN search in traceable ops (one matmul and an argmin),
  the piece every bank method's exported graph shares (core/deploy/exportgraph.py).
"""
from __future__ import annotations

import math
from typing import Callable

import faiss
import numpy as np
import torch
from torch import nn

from ..config import BankConfig

Tick = Callable[[int, int], None]   # tick(done, total): progress + cancellation point


def approximate_greedy_coreset(features: torch.Tensor, n_select: int, proj_dim: int = 128,
                               n_starts: int = 10, seed: int = 0,
                               tick: Tick | None = None, cell_size: int = 0) -> np.ndarray:
    """Indices (sorted) of ``n_select`` rows of ``features`` (N, d) chosen by greedy k-centre.

    ``cell_size`` 0 (or >= N): PatchCore's greedy, where every new centre updates the minimum
    distance of all N points. Each step then streams every point through memory, which is what made
    400,000 patches take about 34 min on 2 cores. ``cell_size`` > 0: the *partitioned* greedy: the
    points are split into about N / cell_size k-means cells of the projected features and a centre
    only updates the points of its own cell; the next centre is still the point farthest from its
    cell's centres over all cells. This is exactly the greedy k-centre in which a point only sees the
    centres of its own cell (equivalently: each cell's greedy sequence, merged by distance), so one
    step costs one cell instead of all N points. Coverage (distance of every patch to the bank) is
    within a few per cent of the plain greedy on real features; see ``bench/coreset.py``.
    """
    n = features.shape[0]
    if n_select >= n:
        return np.arange(n)
    if n_select <= 0:
        raise ValueError("n_select must be positive")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = features.float()
    if proj_dim and x.shape[1] > proj_dim:
        # Johnson-Lindenstrauss projection, as PatchCore: distances survive, cost drops d/proj_dim-fold.
        proj = torch.randn(x.shape[1], proj_dim, generator=gen) / math.sqrt(proj_dim)
        x = x @ proj.to(x.device)
    starts = torch.randperm(n, generator=gen)[:max(1, min(n_starts, n))].to(x.device)
    sq = (x * x).sum(1)
    # Starting minimum distances: the mean distance to a few random points (PatchCore).
    d2 = sq[:, None] + sq[starts][None, :] - 2.0 * (x @ x[starts].T)
    min_d = d2.clamp_min_(0).sqrt_().mean(dim=1)
    del d2
    order, bounds = _kmeans_cells(x, cell_size, gen)
    if order is not None:   # points of one cell contiguous: a cell's update is one slice
        x, sq, min_d = x[order], sq[order], min_d[order]
    cell_of = torch.repeat_interleave(torch.arange(len(bounds) - 1, device=x.device),
                                      torch.tensor(np.diff(bounds), device=x.device))
    cell_max = torch.full((len(bounds) - 1,), -1.0, device=x.device).scatter_reduce_(
        0, cell_of, min_d, "amax")
    chosen = torch.empty(n_select, dtype=torch.long, device=x.device)
    every = max(1, n_select // 100)
    threads = torch.get_num_threads()
    if x.device.type == "cpu" and order is not None:
        # One step touches one cell (a few thousand rows): too little to share between threads, and
        # on a busy machine the threads' hand-offs stalled a step from 0.4 to 8 ms (measured).
        torch.set_num_threads(1)
    try:
        _greedy_steps(x, sq, min_d, bounds, cell_max, chosen, tick, every)
    finally:
        torch.set_num_threads(threads)
    if order is not None:
        chosen = order[chosen]
    return np.sort(chosen.cpu().numpy())


def _greedy_steps(x, sq, min_d, bounds, cell_max, chosen, tick, every) -> None:
    """The greedy picks, written into ``chosen`` (indices into ``x``, cells contiguous)."""
    n_select = len(chosen)
    for i in range(n_select):
        c = int(torch.argmax(cell_max))
        s, e = int(bounds[c]), int(bounds[c + 1])
        seg = min_d[s:e]
        j = s + int(torch.argmax(seg))
        chosen[i] = j
        d = (sq[s:e, None] + sq[j:j + 1][None, :] - 2.0 * (x[s:e] @ x[j:j + 1].T))[:, 0]
        torch.minimum(seg, d.clamp_min_(0).sqrt_(), out=seg)
        seg[j - s] = -1.0   # never pick the same point twice (ties with distance 0)
        cell_max[c] = seg.max()
        if tick is not None and (i % every == 0 or i == n_select - 1):
            tick(i + 1, n_select)


def _kmeans_cells(x: torch.Tensor, cell_size: int, gen: torch.Generator, iters: int = 8,
                  per_centre: int = 64) -> tuple[torch.Tensor | None, np.ndarray]:
    """(order, bounds): ``x[order]`` groups the points by k-means cell, cell c is rows
    ``bounds[c]:bounds[c + 1]``. ``order`` None: one cell (``cell_size`` 0 or >= N). Lloyd's
    k-means on a random sample of ``per_centre`` points per cell is enough: the cells only decide
    which centres a point sees, not which point is farthest."""
    n = x.shape[0]
    k = math.ceil(n / cell_size) if cell_size > 0 else 1
    if k <= 1:
        return None, np.array([0, n])
    sample = x[torch.randperm(n, generator=gen)[:min(n, per_centre * k)].to(x.device)]
    centres = sample[:k].clone()   # the sample is in random order: k random points
    for _ in range(iters):
        a = _nearest_centre(sample, centres)
        counts = torch.bincount(a, minlength=k)
        sums = torch.zeros_like(centres).index_add_(0, a, sample)
        filled = counts > 0   # an empty cell keeps its centre
        centres[filled] = sums[filled] / counts[filled, None].to(sums.dtype)
    a = _nearest_centre(x, centres)
    order = torch.argsort(a, stable=True)
    counts = torch.bincount(a, minlength=k).cpu().numpy()
    return order, np.concatenate([[0], np.cumsum(counts)])


def _nearest_centre(x: torch.Tensor, centres: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
    csq = (centres * centres).sum(1)
    return torch.cat([(csq[None, :] - 2.0 * (x[s:s + chunk] @ centres.T)).argmin(1)
                      for s in range(0, x.shape[0], chunk)])


class MemoryBank:
    """Bank features (T, d) float32 with their owner image index (T,), sorted by owner."""

    def __init__(self, features: np.ndarray, owner: np.ndarray, device: torch.device | str = "cpu",
                 image_desc: np.ndarray | None = None):
        order = np.argsort(owner, kind="stable")
        self.features = np.ascontiguousarray(features[order], dtype=np.float32)
        self.owner = np.ascontiguousarray(owner[order], dtype=np.int32)
        self._ranges: dict[int, tuple[int, int]] = {}
        if len(self.owner):
            uniq, first, counts = np.unique(self.owner, return_index=True, return_counts=True)
            self._ranges = {int(u): (int(f), int(f + c)) for u, f, c in zip(uniq, first, counts)}
        self.device = torch.device(device)
        self._index = None
        self._torch_bank = None
        # PosFAR (use()): the global descriptor of each owner image (the mean of all its features,
        # taken before the coreset), row i for owner i; None for banks saved before it existed.
        self.image_desc = None if image_desc is None else np.ascontiguousarray(image_desc, np.float32)
        self.posfar_images = 0
        self._pca = None

    def use(self, cfg: BankConfig) -> "MemoryBank":
        """Search as ``cfg`` says: ``search = "posfar"`` restricts every query image to the bank
        entries of its ``posfar_images`` most similar training images (WeakREST's PosFAR, as far as
        published: docs/decisions/0018), optionally compared in a PCA space keeping ``posfar_pca``
        of the variance; "exact" (the default) searches every entry."""
        self.posfar_images = 0
        self._pca = None
        if cfg.search == "posfar" and self.image_desc is not None and len(self):
            self.posfar_images = int(cfg.posfar_images)
            if cfg.posfar_pca:
                mean, basis = _pca_basis(self.features, cfg.posfar_pca)
                self._pca = (mean, basis, np.ascontiguousarray((self.features - mean) @ basis, np.float32))
        return self

    def __len__(self) -> int:
        return self.features.shape[0]

    @property
    def dim(self) -> int:
        return self.features.shape[1]

    def owner_range(self, owner: int) -> tuple[int, int] | None:
        return self._ranges.get(int(owner))

    def to(self, device: torch.device | str) -> "MemoryBank":
        self.device = torch.device(device)
        self._torch_bank = None
        return self

    # ---- search -----------------------------------------------------------------------------
    def search(self, queries: np.ndarray | torch.Tensor, k: int,
               exclude_owner: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(squared distances (N, k), bank indices (N, k)) of the k nearest entries, best first.

        ``exclude_owner``: leave-one-out; the entries of that training image are not candidates.
        """
        if isinstance(queries, torch.Tensor):
            q = queries.detach().float().reshape(-1, self.dim)
        else:
            q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim))
        excl = self.owner_range(exclude_owner) if exclude_owner is not None else None
        n_avail = len(self) - (excl[1] - excl[0] if excl else 0)
        if n_avail < k:
            raise ValueError(f"memory bank has {n_avail} usable entries, {k} neighbours requested")
        if self._posfar_applies(exclude_owner):
            return self._search_posfar(q, k, exclude_owner)
        if self.device.type == "cuda":
            return self._search_torch(q.to(self.device), k, excl)
        return self._search_faiss(q.cpu().numpy(), k, excl)

    def nearest(self, feats: np.ndarray | torch.Tensor, exclude_owner: int | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """``feats`` (..., d) -> (Euclidean distance to the nearest entry (...) float32, its bank
        index (...)): PatchCore's block score, and the neighbour SemiREST's residual is taken from."""
        shape = tuple(feats.shape[:-1])
        if len(shape) == 3 and self._posfar_applies(exclude_owner):   # a batch: PosFAR per image
            per = [self.nearest(f, exclude_owner) for f in feats]
            return np.stack([d for d, _ in per]), np.stack([i for _, i in per])
        d2, idx = self.search(feats, 1, exclude_owner=exclude_owner)
        return np.sqrt(np.maximum(d2[:, 0], 0)).reshape(shape).astype(np.float32), idx[:, 0].reshape(shape)

    def _search_faiss(self, q: np.ndarray, k: int, excl) -> tuple[np.ndarray, np.ndarray]:
        if self._index is None:
            self._index = faiss.IndexFlatL2(self.dim)
            self._index.add(self.features)
        params = None
        if excl is not None:
            # Keep Python references to both selectors for the duration of the search: older faiss
            # releases do not keep the inner selector alive on their own.
            inner = faiss.IDSelectorRange(*excl)
            outer = faiss.IDSelectorNot(inner)
            params = faiss.SearchParameters(sel=outer)
        d, i = self._index.search(np.ascontiguousarray(q), k, params=params)
        return d, i.astype(np.int64)

    def _search_torch(self, q: torch.Tensor, k: int, excl, chunk: int = 8192):
        if self._torch_bank is None:
            self._torch_bank = torch.from_numpy(self.features).to(self.device)
            self._torch_sq = (self._torch_bank ** 2).sum(1)
        bank, bsq = self._torch_bank, self._torch_sq
        ds, is_ = [], []
        for s in range(0, q.shape[0], chunk):
            qq = q[s:s + chunk]
            d2 = (qq ** 2).sum(1, keepdim=True) + bsq[None] - 2.0 * qq @ bank.T
            if excl is not None:
                d2[:, excl[0]:excl[1]] = float("inf")
            d, i = torch.topk(d2.clamp_min_(0), k, dim=1, largest=False)
            ds.append(d)
            is_.append(i)
        return torch.cat(ds).cpu().numpy(), torch.cat(is_).cpu().numpy().astype(np.int64)

    # ---- PosFAR: the query image's most similar training images first ------------------------
    def _posfar_applies(self, exclude_owner) -> bool:
        n_owners = len(self._ranges) - (exclude_owner is not None and int(exclude_owner) in self._ranges)
        return 0 < self.posfar_images < n_owners

    def _search_posfar(self, q: torch.Tensor, k: int, exclude_owner) -> tuple[np.ndarray, np.ndarray]:
        """``q``: the features of ONE image (N, d). Its descriptor (their mean) picks the
        ``posfar_images`` nearest training images; only their entries are searched. Distances are
        exact in the full space (with PCA, the candidates are ranked in the reduced space and the k
        kept ones re-measured)."""
        qn = q.cpu().numpy()
        desc = qn.mean(0)
        owners = np.array(sorted(self._ranges))
        if exclude_owner is not None:
            owners = owners[owners != int(exclude_owner)]
        dd = ((self.image_desc[owners] - desc) ** 2).sum(1)
        top = owners[np.argsort(dd, kind="stable")[:self.posfar_images]]
        cand = np.concatenate([np.arange(*self._ranges[int(o)]) for o in np.sort(top)])
        if len(cand) < k:
            return self._search_faiss(qn, k, self.owner_range(exclude_owner) if exclude_owner is not None else None)
        space = self.features if self._pca is None else self._pca[2]   # the bank, PCA-projected once
        index = faiss.IndexFlatL2(space.shape[1])        # BLAS-backed, as the exact search
        index.add(np.ascontiguousarray(space[cand]))
        qs = qn if self._pca is None else (qn - self._pca[0]) @ self._pca[1]
        _, part = index.search(np.ascontiguousarray(qs, dtype=np.float32), k)
        idx = cand[part]
        exact = ((self.features[idx] - qn[:, None, :]) ** 2).sum(-1)     # (N, k) in the full space
        o = np.argsort(exact, axis=1, kind="stable")
        return np.take_along_axis(exact, o, 1).astype(np.float32), np.take_along_axis(idx, o, 1).astype(np.int64)

    # ---- persistence ------------------------------------------------------------------------
    def state(self) -> dict:
        out = {"features": torch.from_numpy(self.features), "owner": torch.from_numpy(self.owner)}
        if self.image_desc is not None:
            out["image_desc"] = torch.from_numpy(self.image_desc)
        return out

    @classmethod
    def from_state(cls, state: dict, device="cpu") -> "MemoryBank":
        desc = state.get("image_desc")
        return cls(state["features"].numpy(), state["owner"].numpy(), device,
                   None if desc is None else desc.numpy())


class NearestEntry(nn.Module):
    """:meth:`MemoryBank.nearest` as a module that traces into ONNX, for one image's queries.

    (n, d) queries -> (Euclidean distance to the nearest bank entry (n,), its index (n,), the entry
    (n, d)). The ranking is |b|^2 - 2 q.b, which orders the bank as |q - b|^2 does (|q|^2 is the same
    for every entry); the distance of the chosen entry is then computed from the difference q - b,
    which keeps the digits that expansion cancels. Two entries equally near to float32 rounding may
    resolve to another index than faiss' (README, export)."""

    def __init__(self, features: np.ndarray):
        super().__init__()
        bank = torch.from_numpy(np.asarray(features, np.float32)).clone()
        self.register_buffer("bank", bank)
        self.register_buffer("bank_sq", (bank * bank).sum(1))

    def forward(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = torch.argmin(self.bank_sq[None] - 2.0 * (q @ self.bank.T), dim=1)
        nb = self.bank[idx]
        diff = q - nb
        return (diff * diff).sum(1).sqrt(), idx, nb


def _pca_basis(x: np.ndarray, keep: float) -> tuple[np.ndarray, np.ndarray]:
    """(mean, basis (d, m)): the fewest principal axes of ``x`` holding ``keep`` of its variance."""
    mean = x.mean(0)
    cov = np.cov((x - mean).T)
    vals, vecs = np.linalg.eigh(cov)
    vals, vecs = vals[::-1], vecs[:, ::-1]
    m = int(np.searchsorted(np.cumsum(vals) / max(vals.sum(), 1e-12), keep) + 1)
    return mean.astype(np.float32), np.ascontiguousarray(vecs[:, :min(m, x.shape[1])], np.float32)


def build_bank(per_image: list[np.ndarray], ratio: float, proj_dim: int, n_starts: int,
               max_patches: int, seed: int, device: torch.device | str = "cpu",
               tick: Tick | None = None, cell_size: int = BankConfig.coreset_cell,
               plain_max: int = BankConfig.coreset_plain_max) -> MemoryBank:
    """Bank from per-image PCF arrays (each (rows*cols, d)); owner = position in ``per_image``.
    ``cell_size``: see :func:`approximate_greedy_coreset` (``bank.coreset_cell``); up to
    ``plain_max`` patches the plain greedy runs whatever ``cell_size`` says."""
    desc = np.stack([f.mean(0) for f in per_image]).astype(np.float32)   # PosFAR's image descriptors
    feats = np.concatenate(per_image).astype(np.float32, copy=False)   # no second copy of 400k patches
    owner = np.concatenate([np.full(len(f), i, np.int32) for i, f in enumerate(per_image)])
    rng = np.random.default_rng(seed)
    if len(feats) > max_patches:   # spec: a random max_patches first, then the coreset
        keep = np.sort(rng.choice(len(feats), max_patches, replace=False))
        feats, owner = feats[keep], owner[keep]
    n_select = max(1, int(round(len(feats) * ratio)))
    idx = approximate_greedy_coreset(torch.from_numpy(feats).to(device), n_select, proj_dim,
                                     n_starts, seed, tick, cell_size if len(feats) > plain_max else 0)
    return MemoryBank(feats[idx], owner[idx], device, desc)
