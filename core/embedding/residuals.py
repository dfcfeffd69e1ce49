"""Position-constrained residuals and their two augmentations (method.md components 5, 13, 14).

- :func:`residual`: r = S(f - m) with S the element-wise square (Eq. 5-6), or abs, or abs and
  square concatenated and pooled back to d_f.
- :func:`knn_residual`: Eq. 12, the K-NN augmentation: the residual against the 1st, 2nd or 3rd
  neighbour (chosen per token with probabilities a1, a2 - a1, 1 - a2), times delta = e^z,
  z ~ N(0, sigma^2) clipped to +-clip, drawn per element.
- :func:`pcr_dropout`: Eq. 13, zero a random fraction of tokens (MAE-style masking: exactly
  round(ratio * n) tokens per window); the returned keep-mask says which tokens carry loss.

Residuals are computed on the fly from features and neighbour indices, never cached on disk
(the research code writes about 17 MB per image per neighbour).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def residual(f: torch.Tensor, m: torch.Tensor, kind: str = "square") -> torch.Tensor:
    """Residual of features ``f`` against neighbours ``m`` (same shape (..., d))."""
    diff = f - m
    if kind == "square":
        return diff * diff
    if kind == "abs":
        return diff.abs()
    if kind == "abs_square":
        d = diff.shape[-1]
        both = torch.cat([diff.abs(), diff * diff], dim=-1).reshape(-1, 1, 2 * d)
        return F.adaptive_avg_pool1d(both, d).reshape(diff.shape)
    raise ValueError(f"unknown residual kind {kind!r}")


def choose_neighbour(shape: tuple[int, ...], a1: float, a2: float,
                     generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """Per-token neighbour rank in {0, 1, 2} (Eq. 12): tau <= a1 -> 0, a1 < tau <= a2 -> 1, else 2."""
    tau = torch.rand(shape, generator=generator, device=device)
    return (tau > a1).long() + (tau > a2).long()


def knn_noise(shape: tuple[int, ...], sigma: float, clip: float,
              generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """delta = e^z, z ~ N(0, sigma^2) clipped to [-clip, clip] (so delta in [0.8, 1.25] by default)."""
    z = torch.randn(shape, generator=generator, device=device) * sigma
    return torch.exp(z.clamp_(-clip, clip))


def knn_residual(f: torch.Tensor, bank: torch.Tensor, nbr: torch.Tensor, kind: str, a1: float,
                 a2: float, sigma: float, clip: float,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Eq. 12 for tokens ``f`` (..., d): ``nbr`` (..., K) holds each token's K nearest bank indices,
    best first, into ``bank`` (T, d). Only the chosen neighbour is gathered (memory stays O(d))."""
    rank = choose_neighbour(f.shape[:-1], a1, a2, generator, f.device).clamp_max_(nbr.shape[-1] - 1)
    idx = torch.gather(nbr, -1, rank[..., None])[..., 0]
    r = residual(f, bank[idx], kind)
    if sigma > 0:
        r = r * knn_noise(r.shape, sigma, clip, generator, f.device)
    return r


def pcr_dropout(tokens: torch.Tensor, ratio: float,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 13 on (B, H, W, d) tokens: zero round(ratio*H*W) random tokens per window.

    Returns (tokens, keep) with ``keep`` a bool (B, H, W) mask of tokens left intact; dropped tokens
    carry no loss (as in MAE, only what the model can see is scored).
    """
    b, h, w, _ = tokens.shape
    n = h * w
    n_drop = int(round(ratio * n))
    if n_drop <= 0:
        return tokens, torch.ones(b, h, w, dtype=torch.bool, device=tokens.device)
    noise = torch.rand(b, n, generator=generator, device=tokens.device)
    drop_idx = noise.argsort(dim=1)[:, :n_drop]
    keep = torch.ones(b, n, dtype=torch.bool, device=tokens.device)
    keep.scatter_(1, drop_idx, False)
    keep = keep.view(b, h, w)
    return tokens * keep[..., None], keep
