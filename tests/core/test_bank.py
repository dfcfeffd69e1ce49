"""Memory bank (method.md components 4 and 6): greedy coreset picks, exact search with squared
distances, leave-one-out exclusion by owner, persistence, and leave-one-out end to end."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.embedding.bank import MemoryBank, approximate_greedy_coreset, build_bank
from core.embedding.residuals import knn_residual, residual
from core.learning.trainset import neighbours


# ---------------------------------------------------------------------------------------------
# Approximate greedy coreset
# ---------------------------------------------------------------------------------------------
def _line(xs):
    """Points on the x axis of a 2-D space (d = 2, so proj_dim 0 or >= 2 means no projection)."""
    return torch.tensor([[x, 0.0] for x in xs])


@pytest.mark.parametrize("proj_dim", [0, 2, 128])
def test_coreset_hand_picks(proj_dim):
    # Points 0, 1 | 100, 101 | 1000; n_starts >= n, so every point is a start and the starting
    # minimum distance of each point is its mean distance to all five (no randomness left):
    #   x=0: (0+1+100+101+1000)/5 = 240.4     x=1: (1+0+99+100+999)/5 = 239.8
    #   x=100: (100+99+0+1+900)/5 = 220.0     x=101: (101+100+1+0+899)/5 = 220.2
    #   x=1000: (1000+999+900+899+0)/5 = 759.6
    # Pick 1: argmax -> x=1000 (index 4). Update min(mean, |x-1000|): 240.4, 239.8, 220, 220.2.
    # Pick 2: x=0 (index 0). Update min(., |x-0|): x=1 -> 1, x=100 -> 100, x=101 -> 101.
    # Pick 3: x=101 (index 3). Update: x=1 -> 1, x=100 -> 1.  Pick 4: a tie (1 and 1): x=1 or x=100.
    pts = _line([0, 1, 100, 101, 1000])
    assert approximate_greedy_coreset(pts, 1, proj_dim, n_starts=10).tolist() == [4]
    assert approximate_greedy_coreset(pts, 2, proj_dim, n_starts=10).tolist() == [0, 4]
    assert approximate_greedy_coreset(pts, 3, proj_dim, n_starts=10).tolist() == [0, 3, 4]
    four = approximate_greedy_coreset(pts, 4, proj_dim, n_starts=10).tolist()
    assert four in ([0, 1, 3, 4], [0, 2, 3, 4])


def test_coreset_one_pick_per_far_cluster_with_projection():
    # Four tight clusters (spread 0.01) 100 apart in 64-D, projected to 16-D: whatever the starts,
    # after the first pick the farthest point is always in an unvisited cluster.
    rng = np.random.default_rng(0)
    centres = np.eye(4, 64) * 100.0
    pts = np.concatenate([c + rng.normal(0, 0.01, (10, 64)) for c in centres])
    for seed in range(5):
        idx = approximate_greedy_coreset(torch.from_numpy(pts).float(), 4, proj_dim=16, n_starts=3, seed=seed)
        assert sorted(i // 10 for i in idx) == [0, 1, 2, 3]


def test_coreset_never_duplicates_identical_points():
    # All distances are 0: without the "never pick twice" rule argmax would return index 0 again.
    pts = torch.ones(6, 3)
    idx = approximate_greedy_coreset(pts, 4, proj_dim=0)
    assert len(set(idx.tolist())) == 4
    assert idx.tolist() == sorted(idx.tolist())


def test_coreset_select_all_or_more_returns_everything():
    pts = torch.rand(5, 3)
    assert approximate_greedy_coreset(pts, 5).tolist() == [0, 1, 2, 3, 4]
    assert approximate_greedy_coreset(pts, 50).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="positive"):
        approximate_greedy_coreset(pts, 0)


def test_coreset_deterministic_per_seed_and_reports_progress():
    pts = torch.from_numpy(np.random.default_rng(1).normal(size=(300, 200))).float()
    a = approximate_greedy_coreset(pts, 30, proj_dim=16, n_starts=5, seed=3)
    b = approximate_greedy_coreset(pts, 30, proj_dim=16, n_starts=5, seed=3)
    assert np.array_equal(a, b)
    assert len(set(a.tolist())) == 30 and a.min() >= 0 and a.max() < 300
    others = [approximate_greedy_coreset(pts, 30, proj_dim=16, n_starts=5, seed=s) for s in (4, 5, 6)]
    assert any(not np.array_equal(a, o) for o in others)   # the seed matters (projection, starts)
    ticks = []
    approximate_greedy_coreset(pts, 30, proj_dim=16, tick=lambda d, t: ticks.append((d, t)))
    assert ticks[-1] == (30, 30) and all(t == 30 for _, t in ticks)


# ---------------------------------------------------------------------------------------------
# MemoryBank.search
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def bank():
    # Given out of owner order; sorted by owner (stable) the bank is
    #   0: (0, 0) o0   1: (10, 0) o0   2: (0, 1) o1   3: (5, 5) o1   4: (0, 3) o2
    feats = np.array([[0, 3], [0, 0], [0, 1], [10, 0], [5, 5]], np.float32)
    owner = np.array([2, 0, 1, 0, 1])
    return MemoryBank(feats, owner)


def test_bank_sorted_by_owner(bank):
    assert bank.owner.tolist() == [0, 0, 1, 1, 2]
    assert bank.features.tolist() == [[0, 0], [10, 0], [0, 1], [5, 5], [0, 3]]
    assert bank.owner_range(0) == (0, 2) and bank.owner_range(1) == (2, 4) and bank.owner_range(2) == (4, 5)
    assert bank.owner_range(9) is None
    assert len(bank) == 5 and bank.dim == 2


def test_bank_search_exact_squared_distances(bank):
    # Query (0, 0.2): squared distances to the entries:
    #   0: 0.2^2 = 0.04   1: 10^2 + 0.2^2 = 100.04   2: 0.8^2 = 0.64   3: 5^2 + 4.8^2 = 48.04
    #   4: 2.8^2 = 7.84
    d, i = bank.search(np.array([[0, 0.2]], np.float32), 3)
    assert i.tolist() == [[0, 2, 4]]
    assert d[0].tolist() == pytest.approx([0.04, 0.64, 7.84], abs=1e-5)
    assert i.dtype == np.int64
    d, i = bank.search(np.array([[0, 0.2], [6, 5]], np.float32), 5)
    # Query (6, 5): 0: 36+25=61  1: 16+25=41  2: 36+16=52  3: 1  4: 36+4=40
    assert i.tolist() == [[0, 2, 4, 3, 1], [3, 4, 1, 2, 0]]
    assert d[1].tolist() == pytest.approx([1, 40, 41, 52, 61], abs=1e-4)


def test_bank_search_leave_one_out(bank):
    q = np.array([[0, 0.2]], np.float32)
    d, i = bank.search(q, 3, exclude_owner=0)      # entries 0, 1 gone: 2 (0.64), 4 (7.84), 3 (48.04)
    assert i.tolist() == [[2, 4, 3]]
    assert d[0].tolist() == pytest.approx([0.64, 7.84, 48.04], abs=1e-4)
    d, i = bank.search(q, 3, exclude_owner=1)      # entries 2, 3 gone: 0, 4, 1
    assert i.tolist() == [[0, 4, 1]]
    d, i = bank.search(q, 3, exclude_owner=7)      # not an owner: nothing excluded
    assert i.tolist() == [[0, 2, 4]]


def test_bank_own_identical_patch_returned_only_when_not_excluded(bank):
    own = np.array([[10, 0]], np.float32)           # exactly owner 0's entry 1
    d, i = bank.search(own, 1)
    assert i.tolist() == [[1]] and d[0, 0] == 0.0
    d, i = bank.search(own, 1, exclude_owner=0)
    # Next best outside owner 0: (5, 5): 25 + 25 = 50; (0, 1): 100 + 1 = 101; (0, 3): 109.
    assert i.tolist() == [[3]] and d[0, 0] == pytest.approx(50.0)
    assert set(bank.owner[bank.search(own, 3, exclude_owner=0)[1][0]]) == {1, 2}


def test_bank_search_too_few_entries(bank):
    with pytest.raises(ValueError, match="3 usable entries, 4 neighbours requested"):
        bank.search(np.zeros((1, 2), np.float32), 4, exclude_owner=0)
    with pytest.raises(ValueError, match="5 usable entries, 6 neighbours requested"):
        bank.search(np.zeros((1, 2), np.float32), 6)
    bank.search(np.zeros((1, 2), np.float32), 5)   # exactly enough


def test_bank_torch_search_matches_faiss(bank):
    # The CUDA code path is plain torch; run it on the CPU against faiss, with and without exclusion.
    q = np.array([[0, 0.2], [6, 5], [10, 0]], np.float32)
    for excl in (None, 0, 1, 2):
        d_f, i_f = bank.search(q, 3, exclude_owner=excl)
        rng = bank.owner_range(excl) if excl is not None else None
        d_t, i_t = bank._search_torch(torch.from_numpy(q), 3, rng, chunk=2)
        assert np.array_equal(i_f, i_t), excl
        np.testing.assert_allclose(d_f, d_t, atol=1e-4)


def test_bank_accepts_torch_queries_of_any_leading_shape(bank):
    q = torch.tensor([[[0, 0.2], [6, 5]]])          # (1, 2, d)
    d, i = bank.search(q, 1)
    assert i.tolist() == [[0], [3]]


def test_bank_state_round_trip(bank):
    again = MemoryBank.from_state(bank.state())
    assert np.array_equal(again.features, bank.features) and np.array_equal(again.owner, bank.owner)
    assert again.owner_range(1) == (2, 4)
    q = np.array([[0, 0.2], [6, 5]], np.float32)
    for excl in (None, 1):
        assert np.array_equal(again.search(q, 3, excl)[1], bank.search(q, 3, excl)[1])


# ---------------------------------------------------------------------------------------------
# build_bank and leave-one-out end to end
# ---------------------------------------------------------------------------------------------
def _three_images():
    """Three 2x2 "images" of d = 3 features: B = A + 0.1, C = A + 5 (per element)."""
    a = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32) * 10
    return [a, a + 0.1, a + 5.0]


def test_build_bank_keeps_owners():
    imgs = _three_images()
    b = build_bank(imgs, ratio=1.0, proj_dim=0, n_starts=10, max_patches=1000, seed=0)
    assert len(b) == 12
    assert b.owner.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    for o, img in enumerate(imgs):
        s, e = b.owner_range(o)
        assert sorted(map(tuple, b.features[s:e].tolist())) == sorted(map(tuple, img.tolist()))


def test_build_bank_coreset_ratio_and_subsample():
    rng = np.random.default_rng(0)
    imgs = [rng.normal(size=(20, 4)).astype(np.float32) + 10 * i for i in range(3)]
    b = build_bank(imgs, ratio=0.25, proj_dim=0, n_starts=5, max_patches=1000, seed=0)
    assert len(b) == 15                              # round(60 * 0.25)
    b = build_bank(imgs, ratio=0.5, proj_dim=0, n_starts=5, max_patches=40, seed=0)
    assert len(b) == 20                              # a random 40 first, then half of them
    # Every entry still carries the image it came from (images sit 10 apart per element).
    owner_from_value = np.round(b.features.mean(1) / 10).astype(int)
    assert np.array_equal(owner_from_value, b.owner)


def test_leave_one_out_residuals_use_other_images_only():
    imgs = _three_images()
    b = build_bank(imgs, ratio=1.0, proj_dim=0, n_starts=10, max_patches=1000, seed=0)
    bank_t = torch.from_numpy(b.features)
    feats_a = torch.from_numpy(imgs[0]).reshape(2, 2, 3)
    # Without leave-one-out image A finds itself: zero residuals (what component 6 forbids).
    nbr = neighbours(b, feats_a, 3, None)
    assert (b.owner[nbr[..., 0].numpy()] == 0).all()
    assert residual(feats_a, bank_t[nbr[..., 0]]).abs().max() == 0
    # With it, every neighbour is from B or C; the first is B's matching patch, 0.1 away per
    # element, so the squared residual is 0.1^2 = 0.01 everywhere.
    nbr = neighbours(b, feats_a, 3, 0)
    assert nbr.shape == (2, 2, 3)
    assert (b.owner[nbr.numpy()] != 0).all()
    assert (b.owner[nbr[..., 0].numpy()] == 1).all()
    torch.testing.assert_close(residual(feats_a, bank_t[nbr[..., 0]]), torch.full((2, 2, 3), 0.01),
                               rtol=1e-4, atol=1e-6)
    # K-NN augmented residuals (any rank) never use image A's entries either: all ranks are
    # other images' entries, so no residual is 0.
    g = torch.Generator().manual_seed(0)
    r = knn_residual(feats_a, bank_t, nbr, "square", 0.3, 0.6, 0.2, 0.223, g)
    assert (r.sum(-1) > 0.001).all()
    # Image C excluded: its nearest are B's patches (4.9 away per element -> 24.01).
    feats_c = torch.from_numpy(imgs[2]).reshape(2, 2, 3)
    nbr = neighbours(b, feats_c, 1, 2)
    assert (b.owner[nbr[..., 0].numpy()] == 1).all()
    torch.testing.assert_close(residual(feats_c, bank_t[nbr[..., 0]]), torch.full((2, 2, 3), 24.01))


# ---------------------------------------------------------------------------------------------
# Partitioned greedy (bank.coreset_cell): exactness, coverage, determinism, cancellation
# ---------------------------------------------------------------------------------------------
def _plain_greedy(x, n_select, n_starts, seed, cells=None):
    """Reference: PatchCore's greedy as core/embedding/bank.py had it before cells (every centre updates
    every point); with ``cells`` (a cell id per point), a centre updates only the points of its
    own cell. ``x`` is already projected; the generator is consumed as the real code does."""
    n = x.shape[0]
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randperm(n, generator=gen)[:max(1, min(n_starts, n))]
    sq = (x * x).sum(1)

    def dist_to(idx):
        return (sq[:, None] + sq[idx][None, :] - 2.0 * (x @ x[idx].T)).clamp_min_(0).sqrt_()

    min_d = dist_to(starts).mean(dim=1)
    chosen = []
    for _ in range(n_select):
        j = int(torch.argmax(min_d))
        chosen.append(j)
        d = dist_to(torch.tensor([j]))[:, 0]
        if cells is not None:
            d[cells != cells[j]] = float("inf")   # other cells do not see this centre
        min_d = torch.minimum(min_d, d)
        min_d[j] = -1.0
    return np.sort(chosen)


def _clusters(n=3000, dim=24, k=30, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (k, dim))
    sizes = rng.dirichlet(np.ones(k) * 0.5) * n   # uneven clusters, some tiny (the rare patches)
    lab = np.repeat(np.arange(k), np.maximum(1, sizes.astype(int)))
    return torch.from_numpy(centres[lab] + rng.normal(0, 1, (len(lab), dim))).float()


def _coverage(x, idx):
    d = torch.cdist(x, x[torch.from_numpy(idx)]).min(1).values
    return float(d.mean()), float(d.max())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_cell_is_exactly_the_plain_greedy(seed):
    x = torch.from_numpy(np.random.default_rng(seed).normal(size=(800, 16))).float()
    ref = _plain_greedy(x, 80, 10, seed)
    for cell in (0, 800, 10_000):   # 0 and >= N: one cell
        assert np.array_equal(approximate_greedy_coreset(x, 80, proj_dim=0, seed=seed, cell_size=cell), ref)


@pytest.mark.parametrize("seed", [0, 3])
def test_cells_are_the_greedy_where_a_point_sees_only_its_cell(seed):
    # The claim of the docstring: the same picks as the plain greedy with a centre's distance
    # counted only inside its own k-means cell (the cells rebuilt from the same generator state).
    from core.embedding.bank import _kmeans_cells
    x = _clusters(1200, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    torch.randperm(len(x), generator=gen)   # the starts, drawn before the cells
    order, bounds = _kmeans_cells(x, 200, gen)
    cells = torch.empty(len(x), dtype=torch.long)
    for c in range(len(bounds) - 1):
        cells[order[bounds[c]:bounds[c + 1]]] = c
    assert len(bounds) - 1 == 6 and len(torch.unique(cells)) > 1
    got = approximate_greedy_coreset(x, 120, proj_dim=0, seed=seed, cell_size=200)
    assert np.array_equal(got, _plain_greedy(x, 120, 10, seed, cells))
    assert not np.array_equal(got, _plain_greedy(x, 120, 10, seed))   # the cells did change picks


def test_cells_cover_clustered_data_nearly_as_well_as_plain_greedy():
    x = _clusters(3000)
    k = 150
    plain = _coverage(x, approximate_greedy_coreset(x, k, proj_dim=0, cell_size=0))
    cells = _coverage(x, approximate_greedy_coreset(x, k, proj_dim=0, cell_size=300))
    rand = _coverage(x, np.sort(np.random.default_rng(0).choice(len(x), k, replace=False)))
    assert cells[0] <= 1.10 * plain[0]
    assert cells[1] <= 1.25 * plain[1]
    assert rand[1] > 1.25 * plain[1]   # the bound is tight enough to tell a random subset apart


def test_cells_deterministic_per_seed_with_progress_and_cancellation():
    x = _clusters(2000)
    a = approximate_greedy_coreset(x, 100, proj_dim=8, seed=5, cell_size=250)
    assert np.array_equal(a, approximate_greedy_coreset(x, 100, proj_dim=8, seed=5, cell_size=250))
    assert len(set(a.tolist())) == 100 and a.max() < len(x)
    assert not np.array_equal(a, approximate_greedy_coreset(x, 100, proj_dim=8, seed=6, cell_size=250))
    ticks = []
    approximate_greedy_coreset(x, 100, cell_size=250, tick=lambda d, t: ticks.append((d, t)))
    assert ticks[0] == (1, 100) and ticks[-1] == (100, 100)

    class Cancelled(Exception):
        pass

    def cancel(done, total):
        if done > 10:
            raise Cancelled
    threads = torch.get_num_threads()
    with pytest.raises(Cancelled):
        approximate_greedy_coreset(x, 100, cell_size=250, tick=cancel)
    assert torch.get_num_threads() == threads   # the single-threaded steps gave the threads back


def test_build_bank_uses_cell_size():
    rng = np.random.default_rng(2)
    per_image = [rng.normal(size=(300, 12)).astype(np.float32) for _ in range(4)]
    feats = torch.from_numpy(np.concatenate(per_image))
    def rows(x):
        return sorted(map(tuple, x.tolist()))
    for cell in (0, 200):
        bank = build_bank(per_image, 0.1, 0, 10, 10**6, seed=1, cell_size=cell, plain_max=0)
        idx = approximate_greedy_coreset(feats, 120, 0, 10, 1, cell_size=cell)
        assert rows(bank.features) == rows(feats[idx])
    # up to plain_max patches (1200 here) the plain greedy runs whatever the cell size: small banks
    # (every PIPED class) stay PatchCore's exact ones
    plain = approximate_greedy_coreset(feats, 120, 0, 10, 1, cell_size=0)
    cells = approximate_greedy_coreset(feats, 120, 0, 10, 1, cell_size=200)
    assert rows(feats[plain]) != rows(feats[cells])
    bank = build_bank(per_image, 0.1, 0, 10, 10**6, seed=1, cell_size=200, plain_max=1200)
    assert rows(bank.features) == rows(feats[plain])


def test_config_rejects_negative_coreset_cell():
    from core.config import ConfigError, preset
    cfg = preset("cpu")
    cfg.bank.coreset_cell = -1
    with pytest.raises(ConfigError, match="bank.coreset_cell must be 0 .* got -1"):
        cfg.validate()


# ---- PosFAR (bank.search = posfar) ------------------------------------------------------------
def _clustered_bank(n_images=6, per=40, d=16, seed=0):
    """Images drawn around their own centre: image i's patches are near centre i."""
    from core.embedding.bank import build_bank
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 5, (n_images, d)).astype(np.float32)
    per_image = [(c + rng.normal(0, 1, (per, d))).astype(np.float32) for c in centres]
    return build_bank(per_image, 0.5, 0, 1, 10**6, 0), centres, rng


def _posfar(bank, images, pca=0.0):
    from core.config import BankConfig
    return bank.use(BankConfig(search="posfar", posfar_images=images, posfar_pca=pca))


def test_posfar_searches_only_the_most_similar_images_and_measures_exactly():
    bank, centres, rng = _clustered_bank()
    q = (centres[2] + rng.normal(0, 1, (30, centres.shape[1]))).astype(np.float32)
    exact_d, exact_i = bank.search(q, 2)
    _posfar(bank, 1)
    d, i = bank.search(q, 2)
    assert set(bank.owner[i].ravel()) == {2}             # one image searched: the query's own kind
    ref = ((bank.features[i] - q[:, None, :]) ** 2).sum(-1)
    np.testing.assert_allclose(d, ref, rtol=1e-5, atol=1e-4)   # true squared distances, best first
    assert (np.diff(d, axis=1) >= 0).all()
    # here the nearest entries all lie in that image: the same neighbours as the exact search
    assert (i[:, 0] == exact_i[:, 0]).mean() > 0.9
    np.testing.assert_allclose(d[:, 0], exact_d[:, 0], rtol=1e-4, atol=1e-3)


def test_posfar_with_every_image_is_the_exact_search_and_leaves_one_out():
    bank, centres, rng = _clustered_bank()
    q = (centres[4] + rng.normal(0, 1, (20, centres.shape[1]))).astype(np.float32)
    e_d, e_i = bank.search(q, 3, exclude_owner=4)
    _posfar(bank, 64)
    d, i = bank.search(q, 3, exclude_owner=4)
    np.testing.assert_array_equal(i, e_i)
    _posfar(bank, 2)
    d, i = bank.search(q, 1, exclude_owner=4)
    assert 4 not in set(bank.owner[i].ravel()) and len(set(bank.owner[i].ravel())) <= 2


def test_posfar_pca_ranks_in_fewer_dimensions_but_reports_full_distances():
    bank, centres, rng = _clustered_bank(d=32)
    _posfar(bank, 2, pca=0.95)
    assert bank._pca[1].shape[1] < 32
    q = (centres[1] + rng.normal(0, 1, (25, 32))).astype(np.float32)
    d, i = bank.search(q, 1)
    np.testing.assert_allclose(d[:, 0], ((bank.features[i[:, 0]] - q) ** 2).sum(-1), rtol=1e-5, atol=1e-4)


def test_posfar_batched_nearest_matches_per_image_and_old_banks_stay_exact():
    import torch
    from core.embedding.bank import MemoryBank
    bank, centres, rng = _clustered_bank()
    q = torch.from_numpy((centres[[0, 3]][:, None, None, :] + rng.normal(0, 1, (2, 4, 5, 16))).astype(np.float32))
    _posfar(bank, 1)
    d, i = bank.nearest(q)
    for b in range(2):
        d1, i1 = bank.nearest(q[b])
        np.testing.assert_array_equal(i[b], i1)
        assert set(bank.owner[i1].ravel()) == {[0, 3][b]}
    state = bank.state()
    assert "image_desc" in state and MemoryBank.from_state(state).image_desc.shape == (6, 16)
    old = {k: v for k, v in state.items() if k != "image_desc"}     # a bank saved before PosFAR
    assert _posfar(MemoryBank.from_state(old), 1).posfar_images == 0
