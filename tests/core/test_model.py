"""The residual Swin Transformer and bagging over sliding windows (method.md components 7-8, Eq. 8-10)."""
from __future__ import annotations

import math

import pytest
import torch

from core.config import SwinConfig
from core.learning.model import ResidualSwin, SwinBlock, predict_map, sliding_windows, window_starts


# ---------------------------------------------------------------------------------------------
# Window placement
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("length,mu,step,expected", [
    (5, 8, 2, [0]),                   # map smaller than mu: one window
    (8, 8, 2, [0]),                   # equal: one window
    (20, 8, 4, [0, 4, 8, 12]),        # 12 = 20 - 8: the last window is already flush
    (21, 8, 4, [0, 4, 8, 12, 13]),    # non-multiple: a last window flush with the end (13 = 21 - 8)
    (64, 32, 8, [0, 8, 16, 24, 32]),  # the paper's mu 32, s 8 on a 512-px input
    (40, 32, 8, [0, 8]),
    (44, 32, 8, [0, 8, 12]),
    (9, 8, 8, [0, 1]),
])
def test_window_starts(length, mu, step, expected):
    assert window_starts(length, mu, step) == expected


def test_sliding_windows():
    # 6 x 20 map, mu 8, step 4: the 6-row side is one window of 6 rows; columns [0, 4, 8, 12].
    assert sliding_windows(6, 20, 8, 4) == [(0, 0, 6, 8), (0, 4, 6, 8), (0, 8, 6, 8), (0, 12, 6, 8)]
    # 12 x 13, mu 8, step 4: rows [0, 4], cols [0, 4, 5].
    wins = sliding_windows(12, 13, 8, 4)
    assert wins == [(r, c, 8, 8) for r in (0, 4) for c in (0, 4, 5)]
    assert sliding_windows(8, 8, 32, 8) == [(0, 0, 8, 8)]
    # Every token is covered.
    cover = torch.zeros(12, 13)
    for r, c, mr, mc in wins:
        cover[r:r + mr, c:c + mc] += 1
    assert (cover >= 1).all()
    assert cover[0, 0] == 1 and cover[5, 5] == 2 * 3 and cover[11, 12] == 1


# ---------------------------------------------------------------------------------------------
# predict_map: Eq. 10 averaging
# ---------------------------------------------------------------------------------------------
class WindowMeanModel:
    """Stands in for the Swin: every token of a window gets anomaly probability
    (mean of the window's channel 0) / 10. Records the batch shapes it was called with."""

    def __init__(self):
        self.calls = []

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(batch.shape))
        q = batch[..., 0].mean(dim=(1, 2)) / 10                    # (n,)
        out = torch.zeros(*batch.shape[:3], 2)
        out[..., 1] = torch.log(q / (1 - q))[:, None, None]        # softmax(0, logit q)[1] = q
        return out


def test_predict_map_averages_overlapping_windows_1d():
    # 8 x 12 map, channel 0 = column index; mu 8, step 4: windows at columns 0 and 4.
    #   window c0 = 0: mean column 3.5 -> 0.35;   window c0 = 4: mean column 7.5 -> 0.75
    #   cols 0-3: 0.35 (one window), cols 4-7: (0.35 + 0.75) / 2 = 0.55, cols 8-11: 0.75
    tokens = torch.arange(12.0).view(1, 12, 1).expand(8, 12, 3).clone()
    model = WindowMeanModel()
    out = predict_map(model, tokens, mu=8, step=4)
    assert out.shape == (8, 12)
    expected = torch.tensor([0.35] * 4 + [0.55] * 4 + [0.75] * 4).expand(8, 12)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    assert model.calls == [(2, 8, 8, 3)]                            # both windows in one batch


def test_predict_map_averages_overlapping_windows_2d():
    # 12 x 12 map, channel 0 = (row + col) / 2; windows at (r0, c0) in {0, 4}^2; a window's mean is
    # (r0 + 3.5 + c0 + 3.5) / 2 -> probabilities (0,0) 0.35, (0,4) 0.55, (4,0) 0.55, (4,4) 0.75.
    r = torch.arange(12.0).view(12, 1)
    c = torch.arange(12.0).view(1, 12)
    tokens = ((r + c) / 2)[..., None]
    out = predict_map(WindowMeanModel(), tokens, mu=8, step=4)
    assert out[0, 0].item() == pytest.approx(0.35)                              # window (0,0) only
    assert out[0, 5].item() == pytest.approx((0.35 + 0.55) / 2)                 # (0,0), (0,4)
    assert out[5, 5].item() == pytest.approx((0.35 + 0.55 + 0.55 + 0.75) / 4)  # all four
    assert out[10, 2].item() == pytest.approx(0.55)                              # (4,0) only
    assert out[11, 11].item() == pytest.approx(0.75)
    # Batching windows in groups of one gives the same map, one call per window.
    model = WindowMeanModel()
    torch.testing.assert_close(predict_map(model, tokens, 8, 4, max_batch=1), out)
    assert len(model.calls) == 4 and all(s[0] == 1 for s in model.calls)


def test_predict_map_flush_last_window():
    # 8 x 13 map (channel 0 = column): windows at columns 0, 4, 5 (the last flush with the end):
    #   means 3.5, 7.5, 8.5 -> 0.35, 0.75, 0.85
    #   col 0-3: 0.35; col 4: (0.35 + 0.75)/2 = 0.55; cols 5-7: (0.35+0.75+0.85)/3 = 0.65;
    #   cols 8-11: (0.75 + 0.85)/2 = 0.8; col 12: 0.85
    tokens = torch.arange(13.0).view(1, 13, 1).expand(8, 13, 1).clone()
    out = predict_map(WindowMeanModel(), tokens, mu=8, step=4)
    expected = [0.35] * 4 + [0.55] + [0.65] * 3 + [0.8] * 4 + [0.85]
    assert out[3].tolist() == pytest.approx(expected, abs=1e-6)


def test_predict_map_small_map_and_no_bagging():
    tokens = torch.arange(12.0).view(1, 12, 1).expand(8, 12, 2).clone()
    # mu larger than the map: one window of the whole map, mean column 5.5 -> 0.55 everywhere.
    model = WindowMeanModel()
    out = predict_map(model, tokens, mu=32, step=8)
    assert model.calls == [(1, 8, 12, 2)]
    torch.testing.assert_close(out, torch.full((8, 12), 0.55), rtol=0, atol=1e-6)
    # bagging=False: one pass over the whole map even where windows would overlap.
    model = WindowMeanModel()
    out = predict_map(model, tokens, mu=8, step=4, bagging=False)
    assert model.calls == [(1, 8, 12, 2)]
    torch.testing.assert_close(out, torch.full((8, 12), 0.55), rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# ResidualSwin
# ---------------------------------------------------------------------------------------------
SMALL = SwinConfig(embed_dim=16, depth=2, num_heads=2, window=4, mlp_ratio=2.0, drop_path=0.0, mu=8, step=4)


def test_residual_swin_shapes_and_errors():
    torch.manual_seed(0)
    model = ResidualSwin(5, SMALL).eval()
    assert model(torch.rand(2, 8, 12, 5)).shape == (2, 8, 12, 2)
    assert model(torch.rand(1, 4, 4, 5)).shape == (1, 4, 4, 2)     # one window: no shift
    with pytest.raises(ValueError, match=r"token map \(8, 6\) must be a multiple of the window 4"):
        model(torch.rand(1, 8, 6, 5))
    with pytest.raises(ValueError, match="multiple of the window"):
        model(torch.rand(1, 5, 8, 5))
    # Blocks alternate regular and shifted windows (shift = window / 2).
    assert [b.shift for b in model.blocks] == [0, 2]


def test_predict_map_with_real_model():
    torch.manual_seed(0)
    model = ResidualSwin(3, SMALL).eval()
    tokens = torch.rand(8, 12, 3)
    out = predict_map(model, tokens, mu=8, step=4)
    assert out.shape == (8, 12) and ((out > 0) & (out < 1)).all()
    # mu covering the whole map: bagging is one window, the same as one pass.
    torch.testing.assert_close(predict_map(model, tokens, mu=32, step=8),
                               predict_map(model, tokens, mu=8, step=4, bagging=False))
    # Columns 0-3 are covered by the window at column 0 only: its probabilities, exactly.
    first = model(tokens[None, :, 0:8]).softmax(-1)[0, :, :, 1]
    torch.testing.assert_close(out[:, :4], first[:, :4])


def _block(shift: int) -> SwinBlock:
    torch.manual_seed(0)
    blk = SwinBlock(dim=8, heads=2, window=4, shift=shift, mlp_ratio=2.0, drop_path=0.0)
    with torch.no_grad():   # larger weights so that attention visibly mixes tokens
        for p in blk.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.5)
        blk.attn.rel_bias.normal_(0, 0.5)
    return blk.eval()


def _changed(blk, pos):
    x = torch.randn(1, 8, 8, 8, generator=torch.Generator().manual_seed(1))
    y0 = blk(x)
    x2 = x.clone()
    # Not a constant shift: LayerNorm would remove that before attention.
    x2[0, pos[0], pos[1]] += 3.0 * torch.randn(8, generator=torch.Generator().manual_seed(2))
    diff = (blk(x2) - y0).abs().amax(-1)[0]
    assert ((diff > 1e-4) | (diff < 1e-6)).all()     # clearly changed or not at all
    return {(r, c) for r in range(8) for c in range(8) if diff[r, c] > 1e-4}


def _square(rows, cols):
    return {(r, c) for r in rows for c in cols}


def test_regular_windows_do_not_mix():
    # Shift 0 on an 8 x 8 map with window 4: a token affects exactly its own 4 x 4 window.
    blk = _block(0)
    assert _changed(blk, (0, 0)) == _square(range(4), range(4))
    assert _changed(blk, (5, 2)) == _square(range(4, 8), range(4))


def test_shifted_window_mask():
    # Shift 2: the map is rolled by -2, so rolled position = (old - 2) mod 8, and windows are taken
    # at rolled [0:4) and [4:8). Old rows/cols 2..5 form the interior window; the corner window
    # rolled [4:8) holds old 6, 7, 0, 1, where old 6-7 and old 0-1 are not neighbours (they met by
    # wrapping round) and the mask keeps them apart.
    blk = _block(2)
    # Old (2, 2) -> rolled (0, 0): the interior window, old rows/cols 2..5, all mutually visible.
    assert _changed(blk, (2, 2)) == _square(range(2, 6), range(2, 6))
    # Old (0, 0) -> rolled (6, 6): corner window; only its own region, old rows/cols 0..1
    # (without the mask old rows/cols 6-7 would change too).
    assert _changed(blk, (0, 0)) == _square(range(2), range(2))
    # Old (7, 7) -> rolled (5, 5): the other region of the same window, old rows/cols 6..7.
    assert _changed(blk, (7, 7)) == _square(range(6, 8), range(6, 8))
    # Old (0, 5) -> rolled (6, 3): rows wrapped (old 0..1), columns interior (old 2..5).
    assert _changed(blk, (0, 5)) == _square(range(2), range(2, 6))


def test_shift_mask_is_minus_inf_across_regions():
    blk = _block(2)
    mask = blk._shift_mask(8, 8, torch.device("cpu"))
    assert mask.shape == (4, 16, 16)                    # 4 windows of 4 x 4 tokens
    assert (mask[0] == 0).all()                         # interior window: one region
    # Last window (rolled rows/cols 4..7): regions split at 6 in both directions -> 4 regions of
    # 2 x 2 tokens; each token sees 4 tokens (its region), the other 12 are -inf.
    visible = (mask[3] == 0).sum(-1)
    assert visible.tolist() == [4] * 16
    assert torch.isinf(mask[3]).sum() == 16 * 12 and (mask[3][torch.isinf(mask[3])] < 0).all()
    # Windows 1 and 2 (one direction wrapped): two regions of 8 tokens.
    assert (mask[1] == 0).sum(-1).tolist() == [8] * 16
    assert blk._shift_mask(4, 4, torch.device("cpu")) is None   # a single window is never shifted
    assert math.isinf(float(mask.min()))


def test_attention_bias_kept_for_inference_follows_the_weights():
    # Without gradients the bias + shift mask is built once per (batch, mask, dtype) and kept; it
    # must give what building it afresh gives, and be rebuilt after the weights change (an
    # optimiser step, a loaded state), never served stale.
    blk = _block(2)
    x = torch.randn(3, 8, 8, 8, generator=torch.Generator().manual_seed(3))

    def fresh(inp):                    # with gradients on, the bias is built every call
        return blk(inp).detach()

    with torch.no_grad():
        kept = blk(x)
        assert blk.attn._bias_cache                        # it was kept
        assert torch.equal(blk(x), kept)                   # and reused
        assert torch.allclose(kept, fresh(x), atol=1e-6)
        assert torch.allclose(blk(x[:1]), fresh(x[:1]), atol=1e-6)   # another batch size
    opt = torch.optim.SGD([blk.attn.rel_bias], lr=1.0)
    (blk(x) * torch.randn_like(x)).sum().backward()
    opt.step()                                             # moves rel_bias in place
    with torch.no_grad():
        assert not torch.allclose(blk(x), kept, atol=1e-3)
        assert torch.allclose(blk(x), fresh(x), atol=1e-6)
        state = {k: v.clone() for k, v in blk.state_dict().items()}
        state["attn.rel_bias"].normal_(0, 0.5)
        blk.load_state_dict(state)                         # copies into the same parameter
        assert torch.allclose(blk(x), fresh(x), atol=1e-6)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = blk(x)
    assert any(k[2] == torch.bfloat16 for k in blk.attn._bias_cache)   # kept per dtype
    assert torch.allclose(low.float(), fresh(x), atol=0.05 * float(fresh(x).abs().max()))


# ---------------------------------------------------------------------------------------------
# Windows always cover the map (regression: a step larger than mu left tokens uncovered -> NaN)
# ---------------------------------------------------------------------------------------------
def test_window_starts_cover_every_token():
    for mu in (1, 4, 8, 32):
        for step in range(1, mu + 1):
            for length in range(1, 70):
                starts = window_starts(length, mu, step)
                size = min(mu, length)
                assert starts[0] == 0 and starts[-1] == length - size          # first and last flush
                assert all(b > a for a, b in zip(starts, starts[1:]))          # increasing
                assert all(b - a <= step for a, b in zip(starts, starts[1:]))  # at most one step apart
                covered = set()
                for s in starts:
                    covered.update(range(s, s + size))
                assert covered == set(range(length))


def test_step_larger_than_window_is_refused():
    # mu 8, step 16 on 40 tokens would place windows at 0, 16, 32 and leave 8-15 and 24-31 uncovered
    # (predict_map then divided by a zero count: NaN).
    with pytest.raises(ValueError, match="step 16 must be between 1 and the window size 8"):
        window_starts(40, 8, 16)
    with pytest.raises(ValueError, match="step 0"):
        window_starts(40, 8, 0)
    with pytest.raises(ValueError, match="window size"):
        window_starts(40, 0, 1)
    with pytest.raises(ValueError, match="step 16"):
        predict_map(WindowMeanModel(), torch.rand(8, 40, 3) + 1, mu=8, step=16)
    assert window_starts(8, 8, 16) == [0]            # one window needs no step
    assert sliding_windows(8, 12, 32, 64) == [(0, 0, 8, 12)]   # map smaller than mu: one window


def test_config_refuses_bad_mu_and_step():
    from core.config import preset
    from core.errors import ConfigError
    cfg = preset("cpu").updated({"swin": {"mu": 32}})
    with pytest.raises(ConfigError, match="swin.step 64 must be between 1 and swin.mu 32"):
        cfg.updated({"swin": {"step": 64}}).validate()
    with pytest.raises(ConfigError, match="swin.step 0"):
        cfg.updated({"swin": {"step": 0}}).validate()
    with pytest.raises(ConfigError, match="swin.mu 0 and swin.window 8 must be positive"):
        cfg.updated({"swin": {"mu": 0}}).validate()
    cfg.updated({"swin": {"step": 32}}).validate()   # step = mu: windows side by side, allowed
