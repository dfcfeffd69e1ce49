"""The residual Swin Transformer and its sliding windows (method.md components 7-8, Eq. 7-10).

Tokens are residual vectors (patch size rho = 1, so one token = one 8x8-pixel block); a linear
embedding, ``depth`` Swin blocks alternating regular and shifted ``window`` x ``window`` attention
(with relative position bias), a LayerNorm and a linear head give two logits per token.

Inference covers a token map of any size with mu x mu windows at step s and averages each token's
anomaly probability over every window that covers it (Eq. 10, "bagging"). ``bagging=False`` runs
one pass over the whole map instead (the paper: -0.9 AP, 2.7x faster). A map smaller than mu is one
window (mu shrinks to the map).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import SwinConfig


class DropPath(nn.Module):
    """Stochastic depth per sample."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device) >= self.p
        return x * keep / (1.0 - self.p)


def window_partition(x: torch.Tensor, w: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, w*w, C)."""
    b, h, wd, c = x.shape
    x = x.view(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, c)


def window_reverse(x: torch.Tensor, w: int, h: int, wd: int) -> torch.Tensor:
    """(B * nW, w*w, C) -> (B, H, W, C)."""
    c = x.shape[-1]
    b = x.shape[0] // ((h // w) * (wd // w))
    x = x.view(b, h // w, wd // w, w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, wd, c)


class WindowAttention(nn.Module):
    def __init__(self, dim: int, window: int, heads: int):
        super().__init__()
        self.window, self.heads = window, heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.rel_bias = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.rel_bias, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer("rel_index", rel[..., 0] * (2 * window - 1) + rel[..., 1], persistent=False)
        # inference only: the attention bias built for one (batch, mask, dtype), see _bias
        self._bias_cache: dict[tuple, tuple] = {}

    def _make_bias(self, n: int, bw: int, mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        bias = self.rel_bias[self.rel_index.view(-1)].view(n, n, -1).permute(2, 0, 1)[None]
        if mask is not None:   # (nW, n, n) of 0 / -inf, repeated over the batch
            nw = mask.shape[0]
            bias = (bias + mask[:, None]).repeat(bw // nw, 1, 1, 1)
        return bias.to(dtype)

    def _bias(self, n: int, bw: int, mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """The relative position bias plus the shift mask, (bw or 1, heads, n, n). Without
        gradients it is kept per (batch, mask, dtype) and rebuilt only when the bias parameter
        changes (its version counter moves with every optimiser step or load): inference then
        skips the gather, the add, the repeat over the batch and the cast at every forward, about a
        tenth of the bfloat16 Swin's time at batch 1 (decision 0024, last section)."""
        if torch.is_grad_enabled() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return self._make_bias(n, bw, mask, dtype)   # training, and exports build it in the graph
        p = self.rel_bias
        key = (n, bw, dtype, None if mask is None else mask.data_ptr())
        hit = self._bias_cache.get(key)
        # the entry holds the very mask and parameter storage it was built from, at that version
        if (hit is not None and hit[0] is mask and hit[1] is p
                and hit[2:4] == (p.data_ptr(), p._version)):
            return hit[4]
        if len(self._bias_cache) >= 16:     # a few map sizes and batch sizes at a time
            self._bias_cache.clear()
        bias = self._make_bias(n, bw, mask, dtype)
        self._bias_cache[key] = (mask, p, p.data_ptr(), p._version, bias)
        return bias

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        bw, n, c = x.shape
        qkv = self.qkv(x).view(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self._bias(n, bw, mask, q.dtype))
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class SwinBlock(nn.Module):
    def __init__(self, dim: int, heads: int, window: int, shift: int, mlp_ratio: float, drop_path: float):
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self._masks: dict[tuple, torch.Tensor] = {}

    def _shifts(self, h: int, w: int) -> tuple[int, int]:
        """Shift per axis: none along an axis that is a single window (as Swin's reference code)."""
        return (self.shift if h > self.window else 0), (self.shift if w > self.window else 0)

    def _shift_mask(self, h: int, w: int, device) -> torch.Tensor | None:
        sh, sw = self._shifts(h, w)
        if sh == 0 and sw == 0:
            return None
        key = (h, w, str(device))
        if key not in self._masks:
            img = torch.zeros(1, h, w, 1, device=device)
            ws = self.window

            def slices(s):
                return (slice(0, -ws), slice(-ws, -s), slice(-s, None)) if s else (slice(0, None),)
            cnt = 0
            for hs in slices(sh):
                for wsl in slices(sw):
                    img[:, hs, wsl, :] = cnt
                    cnt += 1
            win = window_partition(img, ws).squeeze(-1)
            m = win[:, None, :] - win[:, :, None]
            self._masks[key] = m.masked_fill(m != 0, float("-inf")).masked_fill(m == 0, 0.0)
        return self._masks[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        sh, sw = self._shifts(h, w)
        y = self.norm1(x)
        if sh or sw:
            y = torch.roll(y, (-sh, -sw), dims=(1, 2))
        y = window_partition(y, self.window)
        y = self.attn(y, self._shift_mask(h, w, x.device))
        y = window_reverse(y, self.window, h, w)
        if sh or sw:
            y = torch.roll(y, (sh, sw), dims=(1, 2))
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ResidualSwin(nn.Module):
    """(B, H, W, d_in) residual tokens -> (B, H, W, 2) logits (normal, anomalous)."""

    def __init__(self, in_dim: int, cfg: SwinConfig):
        super().__init__()
        self.cfg = cfg
        self.in_dim = in_dim
        self.embed = nn.Linear(in_dim, cfg.embed_dim)
        self.embed_norm = nn.LayerNorm(cfg.embed_dim) if cfg.embed_norm else nn.Identity()
        dpr = torch.linspace(0, cfg.drop_path, cfg.depth).tolist()
        self.blocks = nn.ModuleList([
            SwinBlock(cfg.embed_dim, cfg.num_heads, cfg.window, 0 if i % 2 == 0 else cfg.window // 2,
                      cfg.mlp_ratio, dpr[i]) for i in range(cfg.depth)])
        self.norm = nn.LayerNorm(cfg.embed_dim)
        self.head = nn.Linear(cfg.embed_dim, 2)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.cfg.window
        if x.shape[1] % w or x.shape[2] % w:
            raise ValueError(f"token map {tuple(x.shape[1:3])} must be a multiple of the window {w}")
        x = self.embed_norm(self.embed(x))
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x))


# --------------------------------------------------------------------------------------------
# Sliding windows and bagging
# --------------------------------------------------------------------------------------------
def build_model(in_dim: int, cfg, residual_scale: float) -> ResidualSwin:
    model = ResidualSwin(in_dim, cfg.swin)
    model.register_buffer("input_scale", torch.tensor(float(residual_scale)))
    return model


def model_tokens(model: ResidualSwin, r: torch.Tensor) -> torch.Tensor:
    """Residuals -> model input (divided by the per-model scale)."""
    return r / model.input_scale


def window_starts(length: int, mu: int, step: int) -> list[int]:
    """Start offsets of windows of size ``mu`` at ``step`` covering [0, length); the last one ends flush."""
    if mu < 1:
        raise ValueError(f"window size must be positive, got {mu}")
    if length <= mu:
        return [0]
    if not 1 <= step <= mu:
        # A step beyond mu leaves gaps no window covers (their bagged average would be 0/0).
        raise ValueError(f"sliding step {step} must be between 1 and the window size {mu}")
    starts = list(range(0, length - mu + 1, step))
    if starts[-1] != length - mu:
        starts.append(length - mu)
    return starts


def sliding_windows(rows: int, cols: int, mu: int, step: int) -> list[tuple[int, int, int, int]]:
    """(r0, c0, mu_r, mu_c) of every window; a side shorter than mu is one window of that side."""
    mr, mc = min(mu, rows), min(mu, cols)
    return [(r, c, mr, mc) for r in window_starts(rows, mr, step) for c in window_starts(cols, mc, step)]


@torch.no_grad()
def predict_map(model: ResidualSwin, tokens: torch.Tensor, mu: int, step: int, bagging: bool = True,
                max_batch: int = 64) -> torch.Tensor:
    """(H, W, d) residual tokens of one image -> (H, W) anomaly probability (Eq. 10)."""
    h, w, _ = tokens.shape
    if not bagging:
        return model(tokens[None]).softmax(-1)[0, :, :, 1]
    wins = sliding_windows(h, w, mu, step)
    acc = torch.zeros(h, w, device=tokens.device)
    cnt = torch.zeros(h, w, device=tokens.device)
    for s in range(0, len(wins), max_batch):
        group = wins[s:s + max_batch]
        batch = torch.stack([tokens[r:r + mr, c:c + mc] for r, c, mr, mc in group])
        prob = model(batch).softmax(-1)[..., 1]
        for p, (r, c, mr, mc) in zip(prob, group):
            acc[r:r + mr, c:c + mc] += p
            cnt[r:r + mr, c:c + mc] += 1
    return acc / cnt


# --------------------------------------------------------------------------------------------
# Fast inference: every window of every image in one forward (predict_map is the reference)
# --------------------------------------------------------------------------------------------
class WindowPlan:
    """The sliding windows of an (h, w) token map as index tensors, built once per map size:
    ``index`` (nW, mr*mc) holds the flat token positions of each window in the order
    :func:`sliding_windows` lists them, ``count`` (h*w,) how many windows cover each token."""

    def __init__(self, h: int, w: int, mu: int, step: int):
        wins = sliding_windows(h, w, mu, step)
        self.h, self.w = h, w
        self.mr, self.mc = wins[0][2], wins[0][3]
        self.starts = [(r, c) for r, c, _, _ in wins]
        r0 = torch.tensor([r for r, _ in self.starts])[:, None, None]
        c0 = torch.tensor([c for _, c in self.starts])[:, None, None]
        rr = torch.arange(self.mr)[None, :, None]
        cc = torch.arange(self.mc)[None, None, :]
        self.index = ((r0 + rr) * w + (c0 + cc)).reshape(len(wins), -1)
        self.count = torch.zeros(h * w).index_add_(0, self.index.flatten(),
                                                   torch.ones(self.index.numel()))
        self._on: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return self.index.shape[0]

    def aligned(self, window: int) -> bool:
        """True when every window starts on the attention-window grid and spans whole attention
        windows: then an unshifted Swin block sees the same attention windows in each sliding
        window as on the whole map, and can run once on the whole map."""
        return (self.mr % window == 0 and self.mc % window == 0
                and all(r % window == 0 and c % window == 0 for r, c in self.starts))

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = str(device)
        if key not in self._on:
            self._on[key] = (self.index.to(device), self.count.to(device))
        return self._on[key]


_PLANS: dict[tuple[int, int, int, int], WindowPlan] = {}


def window_plan(h: int, w: int, mu: int, step: int) -> WindowPlan:
    key = (h, w, mu, step)
    if key not in _PLANS:
        _PLANS[key] = WindowPlan(h, w, mu, step)
    return _PLANS[key]


def _shared_stem(model: nn.Module, plan: WindowPlan) -> int:
    """How many leading stages of ``model`` can run once on the whole map instead of once per
    sliding window: the token-wise embedding and, on aligned windows, the first (unshifted) Swin
    block. 0 for any other model (the generic path)."""
    if not isinstance(model, ResidualSwin):
        return 0
    if model.blocks and model.blocks[0].shift == 0 and plan.aligned(model.cfg.window):
        return 2
    return 1


def even_chunks(n: int, most: int) -> list[slice]:
    """[0, n) in as few pieces of at most ``most`` as possible, their sizes within one of each
    other: 9 windows at most 8 a piece are 5 + 4, not 8 + 1 (a forward of one window costs nearly
    what a forward of several does)."""
    k = max(1, -(-n // max(1, most)))
    sizes = [n // k + (i < n % k) for i in range(k)]
    starts = [sum(sizes[:i]) for i in range(k)]
    return [slice(a, a + z) for a, z in zip(starts, sizes) if z]


# Tokens per forward on the CPU. Measured (one thread, width-192 Swin, 32 x 32 tokens, mu 16,
# step 8: 9 windows an image): all 9 windows of one image in one forward are 5% (float32) and 9%
# (bfloat16) faster than 8 + 1; at 8 images, forwards of 8 or 16 windows are equal and 36 or more
# are slower in both precisions (they leave the cache).
CPU_TOKENS = 4096


@torch.inference_mode()
def predict_maps(model: nn.Module, tokens: torch.Tensor, mu: int, step: int, bagging: bool = True,
                 max_windows: int | None = None) -> torch.Tensor:
    """(B, H, W, d) residual tokens of B images of one size -> (B, H, W) anomaly probability.

    Equals :func:`predict_map` per image (up to float rounding) and is faster: the windows are
    gathered with one index (no Python loop per window), the windows of every image run through
    the model together (``max_windows`` at a time, in even pieces; by default 64 on a GPU and at
    most :data:`CPU_TOKENS` tokens' worth on the CPU; without bagging, whole maps likewise), the
    embedding and the first unshifted Swin
    block, which do not depend on where a window starts when windows lie on the attention grid,
    run once on the whole map (the paper's overlapping windows would otherwise compute them up to
    (mu/step)^2 times), and the average over windows is one index_add."""
    b, h, w, _ = tokens.shape
    if not bagging:
        per = b if tokens.device.type == "cuda" else max(1, CPU_TOKENS // (h * w))
        return torch.cat([model(tokens[part]).softmax(-1)[..., 1] for part in even_chunks(b, per)])
    plan = window_plan(h, w, mu, step)
    index, count = plan.on(tokens.device)
    stem = _shared_stem(model, plan)
    x = tokens
    if stem:
        if x.shape[1] % model.cfg.window or x.shape[2] % model.cfg.window:
            raise ValueError(f"token map {(h, w)} must be a multiple of the window {model.cfg.window}")
        x = model.embed_norm(model.embed(x))
        if stem == 2:
            x = model.blocks[0](x)
    c = x.shape[-1]
    wins = x.reshape(b, h * w, c)[:, index].reshape(b * len(plan), plan.mr, plan.mc, c)
    if max_windows is None:
        max_windows = 64 if tokens.device.type == "cuda" else max(1, CPU_TOKENS // (plan.mr * plan.mc))
    probs = []
    for piece in even_chunks(wins.shape[0], max_windows):
        part = wins[piece]
        if stem:
            for blk in model.blocks[stem - 1:]:
                part = blk(part)
            logits = model.head(model.norm(part))
        else:
            logits = model(part)
        probs.append(logits.softmax(-1)[..., 1])
    prob = torch.cat(probs).reshape(b, -1)
    acc = torch.zeros(b, h * w, device=tokens.device, dtype=prob.dtype)
    acc.index_add_(1, index.flatten(), prob)
    return (acc / count).reshape(b, h, w)
