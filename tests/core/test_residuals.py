"""Residuals (method.md components 5, 13, 14): Eq. 5-6, the K-NN augmentation (Eq. 12) and PCR dropout
(Eq. 13)."""
from __future__ import annotations

import math

import pytest
import torch

from core.embedding.residuals import choose_neighbour, knn_noise, knn_residual, pcr_dropout, residual


# ---------------------------------------------------------------------------------------------
# residual (Eq. 5-6)
# ---------------------------------------------------------------------------------------------
def test_residual_square_and_abs():
    f = torch.tensor([1.0, 2.0, -1.0])
    m = torch.tensor([3.0, 0.5, 1.0])
    # f - m = (-2, 1.5, -2)
    assert residual(f, m, "square").tolist() == [4.0, 2.25, 4.0]
    assert residual(f, m, "abs").tolist() == [2.0, 1.5, 2.0]
    assert residual(f, m).tolist() == [4.0, 2.25, 4.0]     # square is the default (Eq. 6)


def test_residual_abs_square_concatenates_and_pools():
    # d = 3, f - m = (1, -2, 3): |.| = (1, 2, 3), (.)^2 = (1, 4, 9); concatenated (1, 2, 3, 1, 4, 9)
    # and average-pooled along channels 6 -> 3 in pairs: (1.5, 2, 6.5).
    f = torch.tensor([[[1.0, -2.0, 3.0], [0.0, 0.0, 0.0]]])   # (1, 2, 3): a second token of zeros
    m = torch.zeros_like(f)
    r = residual(f, m, "abs_square")
    assert r.shape == f.shape
    assert r[0, 0].tolist() == [1.5, 2.0, 6.5]
    assert r[0, 1].tolist() == [0.0, 0.0, 0.0]                   # tokens stay apart
    # d = 2, f - m = (1, -3): (1, 3, 1, 9) -> (2, 5)
    assert residual(torch.tensor([1.0, -3.0]), torch.zeros(2), "abs_square").tolist() == [2.0, 5.0]


def test_residual_unknown_kind():
    with pytest.raises(ValueError, match="unknown residual kind 'cube'"):
        residual(torch.zeros(2), torch.zeros(2), "cube")


# ---------------------------------------------------------------------------------------------
# choose_neighbour / knn_noise (Eq. 12)
# ---------------------------------------------------------------------------------------------
def test_choose_neighbour_thresholds(monkeypatch):
    # tau <= a1 -> 0, a1 < tau <= a2 -> 1, tau > a2 -> 2, with tau fed in by hand.
    tau = torch.tensor([0.0, 0.25, 0.5, 0.625, 0.75, 0.875, 0.999])
    monkeypatch.setattr(torch, "rand", lambda shape, generator=None, device=None: tau.clone())
    assert choose_neighbour((7,), 0.5, 0.75).tolist() == [0, 0, 0, 1, 1, 2, 2]


def test_choose_neighbour_frequencies():
    g = torch.Generator().manual_seed(0)
    rank = choose_neighbour((200, 500), 0.5, 0.8, g)
    assert rank.shape == (200, 500) and rank.dtype == torch.long
    freq = torch.bincount(rank.flatten(), minlength=3).double() / rank.numel()
    # P(0) = a1 = 0.5, P(1) = a2 - a1 = 0.3, P(2) = 1 - a2 = 0.2; 100k draws: sd < 0.0016.
    assert freq.tolist() == pytest.approx([0.5, 0.3, 0.2], abs=0.01)


def test_choose_neighbour_edge_cases():
    g = torch.Generator().manual_seed(1)
    assert (choose_neighbour((10_000,), 1.0, 1.0, g) == 0).all()     # a1 = a2 = 1: always the 1st
    assert (choose_neighbour((10_000,), 0.0, 1.0, g) == 1).all()     # (0, 1]: always the 2nd
    assert (choose_neighbour((10_000,), 0.0, 0.0, g) == 2).all()     # always the 3rd
    a = choose_neighbour((50,), 0.5, 0.8, torch.Generator().manual_seed(7))
    b = choose_neighbour((50,), 0.5, 0.8, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_knn_noise_bounds():
    lo, hi = math.exp(-0.223), math.exp(0.223)          # 0.80011, 1.24985
    g = torch.Generator().manual_seed(0)
    d = knn_noise((100_000,), 0.2, 0.223, g)
    assert d.min() >= lo - 1e-6 and d.max() <= hi + 1e-6
    z = d.log()
    assert abs(z.mean().item()) < 0.005                 # z ~ N(0, 0.2^2), symmetric clip
    # Clipping at a = 0.223 / 0.2 = 1.115 sigma: Var = P(|X|<a) - 2 a phi(a) + a^2 P(|X|>a)
    # = 0.735 - 2 * 1.115 * 0.2143 + 1.243 * 0.265 = 0.586 (in sigma^2), sd = 0.766 * 0.2 = 0.153.
    assert 0.145 < z.std().item() < 0.16
    # A huge sigma: almost everything is clipped, to exactly e^-clip or e^clip.
    d = knn_noise((1000,), 100.0, 0.5, g)
    assert d.min().item() == pytest.approx(math.exp(-0.5)) and d.max().item() == pytest.approx(math.exp(0.5))
    assert ((d - math.exp(0.5)).abs() < 1e-6).sum() > 400 and ((d - math.exp(-0.5)).abs() < 1e-6).sum() > 400
    assert torch.equal(knn_noise((5,), 0.0, 0.2), torch.ones(5))


# ---------------------------------------------------------------------------------------------
# knn_residual (Eq. 12)
# ---------------------------------------------------------------------------------------------
def _setup():
    bank = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    f = torch.tensor([[[1.0, 1.0], [2.0, -1.0]]])          # (1, 2, 2): two tokens
    nbr = torch.tensor([[[1, 0, 2], [3, 1, 0]]])           # (1, 2, K=3) bank indices, best first
    return f, bank, nbr


def test_knn_residual_first_neighbour_exactly():
    f, bank, nbr = _setup()
    r = knn_residual(f, bank, nbr, "square", 1.0, 1.0, 0.0, 0.223, torch.Generator().manual_seed(0))
    # token 0 - bank[1] = (0, 1) -> (0, 1); token 1 - bank[3] = (-1, -4) -> (1, 16)
    assert r.tolist() == [[[0.0, 1.0], [1.0, 16.0]]]


def test_knn_residual_second_and_third_neighbour():
    f, bank, nbr = _setup()
    r = knn_residual(f, bank, nbr, "square", 0.0, 1.0, 0.0, 0.223)
    # 2nd: token 0 - bank[0] = (1, 1) -> (1, 1); token 1 - bank[1] = (1, -1) -> (1, 1)
    assert r.tolist() == [[[1.0, 1.0], [1.0, 1.0]]]
    r = knn_residual(f, bank, nbr, "abs", 0.0, 0.0, 0.0, 0.223)
    # 3rd: token 0 - bank[2] = (1, -1) -> (1, 1); token 1 - bank[0] = (2, -1) -> (2, 1)
    assert r.tolist() == [[[1.0, 1.0], [2.0, 1.0]]]
    # Only two neighbours known: rank 2 is clamped to the 2nd.
    r = knn_residual(f, bank, nbr[..., :2], "square", 0.0, 0.0, 0.0, 0.223)
    assert r.tolist() == [[[1.0, 1.0], [1.0, 1.0]]]


def test_knn_residual_mixes_ranks_and_noise_per_element():
    f = torch.zeros(20, 20, 2)
    bank = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    nbr = torch.tensor([0, 1, 2]).expand(20, 20, 3)
    g = torch.Generator().manual_seed(0)
    r = knn_residual(f, bank, nbr, "square", 0.5, 0.8, 0.0, 0.223, g)
    # Without noise every token's residual is exactly 1, 4 or 9 (which neighbour was chosen).
    vals = r[..., 0]
    assert set(vals.unique().tolist()) == {1.0, 4.0, 9.0}
    assert torch.equal(r[..., 0], r[..., 1])
    # With noise: r / plain within [e^-clip, e^clip], and the two elements of a token differ.
    r = knn_residual(f, bank, nbr, "square", 1.0, 1.0, 0.2, 0.223, g)
    assert (r >= math.exp(-0.223) - 1e-6).all() and (r <= math.exp(0.223) + 1e-6).all()
    assert (r[..., 0] != r[..., 1]).float().mean() > 0.9


# ---------------------------------------------------------------------------------------------
# PCR dropout (Eq. 13)
# ---------------------------------------------------------------------------------------------
def _tokens(b=3, h=4, w=4, d=2):
    # Every token non-zero, so a zero token can only come from the dropout.
    return torch.arange(1.0, 1 + b * h * w * d).view(b, h, w, d)


@pytest.mark.parametrize("ratio,expected", [(0.25, 4), (0.3, 5), (0.5, 8), (0.05, 1), (1.0, 16)])
def test_pcr_dropout_drops_exact_count_per_window(ratio, expected):
    # 4 x 4 = 16 tokens per window: round(16 * ratio) = 4, round(4.8) = 5, 8, round(0.8) = 1, 16.
    x = _tokens()
    out, keep = pcr_dropout(x, ratio, torch.Generator().manual_seed(0))
    assert keep.shape == (3, 4, 4) and keep.dtype == torch.bool
    assert (~keep).sum(dim=(1, 2)).tolist() == [expected] * 3
    zero = (out == 0).all(-1)
    assert torch.equal(zero, ~keep)                         # zeroed exactly where not kept
    assert torch.equal(out[keep], x[keep])                  # the rest untouched
    assert torch.equal(x, _tokens())                        # input not modified in place


def test_pcr_dropout_zero_ratio_and_randomness():
    x = _tokens()
    out, keep = pcr_dropout(x, 0.0)
    assert keep.all() and torch.equal(out, x)
    out, keep = pcr_dropout(x, 0.01)                        # round(0.16) = 0 tokens
    assert keep.all()
    g = torch.Generator().manual_seed(3)
    _, keep = pcr_dropout(_tokens(b=8), 0.25, g)
    assert len({tuple(k.flatten().tolist()) for k in keep}) > 1    # each window draws its own
    # Over many windows every position is dropped about a quarter of the time.
    _, keep = pcr_dropout(torch.ones(4000, 4, 4, 1), 0.25, g)
    rate = (~keep).float().mean(0)
    assert torch.allclose(rate, torch.full((4, 4), 0.25), atol=0.03)
