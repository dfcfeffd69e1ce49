"""The inference path as one traceable module for a fixed input size (core/deploy/export.py exports it).

Predictor's computation (core/deploy/inference.py) for one input size: the model's own pieces (backbone,
bank, Swin, residual, position code) are reused; only the bagging loop, the fusion formula and the
post-processing are written here in graph form, and tests/core/test_export.py checks them against
:class:`core.deploy.inference.Predictor`.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn as nn

from ..embedding.residuals import residual
from ..errors import ExportError
from ..eval.anomaly_map import postprocess
from ..learning.model import model_tokens, sliding_windows
from .modelfile import ModelBundle


def postprocess_matrices(rows: int, cols: int, out_hw: tuple[int, int], sigma: float,
                         upsample: str) -> tuple[np.ndarray, np.ndarray]:
    """(My (H, rows), Mx (W, cols)) with ``postprocess(B) == My @ B @ Mx.T``.

    Upsampling (nearest or bilinear) and the Gaussian with mirrored borders are linear and act on
    rows and columns separately, so the graph does two small matmuls instead of a resize and a
    33-tap blur. The matrices are read off :func:`core.eval.anomaly_map.postprocess` itself (a block map
    of one block row of ones gives that row's column of My, since every row of Mx sums to 1), so
    they follow OpenCV's exact index and border rules; a random map checks the result."""
    h, w = out_hw
    my = np.zeros((h, rows), np.float64)
    mx = np.zeros((w, cols), np.float64)
    for i in range(rows):
        b = np.zeros((rows, cols), np.float32)
        b[i] = 1.0
        my[:, i] = postprocess(b, out_hw, sigma, upsample)[:, 0]
    for j in range(cols):
        b = np.zeros((rows, cols), np.float32)
        b[:, j] = 1.0
        mx[:, j] = postprocess(b, out_hw, sigma, upsample)[0, :]
    probe = np.random.default_rng(0).random((rows, cols)).astype(np.float32)
    err = float(np.abs(my @ probe @ mx.T - postprocess(probe, out_hw, sigma, upsample)).max())
    if err > 1e-5:
        raise ExportError(f"the post-processing ({upsample} upsampling, Gaussian sigma {sigma}) "
                          f"is not separable into two matrix products (error {err:.2g})")
    return my.astype(np.float32), mx.astype(np.float32)


def _pool_matrix(c: int, out: int) -> torch.Tensor:
    """(c, out) weights of adaptive average pooling along channels (torch's bins)."""
    m = torch.zeros(c, out)
    for i in range(out):
        s, e = (i * c) // out, -((-(i + 1) * c) // out)
        m[s:e, i] = 1.0 / (e - s)
    return m


@contextlib.contextmanager
def traceable_channel_pool():
    """While tracing: channel pooling as a matmul. ``adaptive_avg_pool1d`` has no ONNX form when
    the channel counts do not divide (e.g. EfficientNet's 112 channels pooled to 76); the weights
    are the same bins, so the values agree to float rounding."""
    from ..embedding import features
    original = features.channel_pool

    def pool(x: torch.Tensor, out_channels: int) -> torch.Tensor:
        c = x.shape[1]
        if c == out_channels:
            return x
        return torch.einsum("bchw,co->bohw", x, _pool_matrix(c, out_channels).to(x))

    features.channel_pool = pool
    try:
        yield
    finally:
        features.channel_pool = original


class InferenceGraph(nn.Module):
    """Predictor's computation (core/deploy/inference.py) for one input size, in traceable ops."""

    def __init__(self, bundle: ModelBundle, input_wh: tuple[int, int], map_hw: tuple[int, int],
                 bagging: bool | None = None):
        super().__init__()
        cfg = bundle.config
        self.method = cfg.method
        w_in, h_in = input_wh
        self.rows, self.cols = h_in // 8, w_in // 8
        encoder = bundle.encoder("cpu")
        self.extractor = encoder.extractor.eval()
        self.register_buffer("bank", torch.from_numpy(np.asarray(bundle.bank_state["features"].numpy(),
                                                                 np.float32)).clone())
        self.register_buffer("bank_sq", (self.bank * self.bank).sum(1))
        fusion = bundle.calibration.get("fusion") or {}
        self.fusion_weight = float(fusion.get("weight", 0.0)) if self.method == "semirest" else 0.0
        self.fusion_ref = float(fusion.get("d_ref", 1.0))
        self.use_swin = self.method == "semirest" and not math.isinf(self.fusion_weight)
        pos = None
        if self.method == "semirest" and cfg.features.lambda_pe:
            # the same product Encoder.add_position adds: lambda_pe * code
            pos = cfg.features.lambda_pe * encoder.position(self.rows, self.cols)
        self.register_buffer("pos", pos)
        self.residual_kind = cfg.bank.residual
        self.swin = bundle.swin("cpu") if self.use_swin else None
        self.bagging = cfg.swin.bagging if bagging is None else bagging
        if self.use_swin and self.bagging:
            wins = sliding_windows(self.rows, self.cols, cfg.swin.mu, cfg.swin.step)
            grid = torch.arange(self.rows * self.cols).view(self.rows, self.cols)
            index = torch.stack([grid[r:r + mr, c:c + mc] for r, c, mr, mc in wins])
            self.register_buffer("win_index", index)                 # (nW, mr, mc) token indices
            self.register_buffer("win_count", torch.bincount(index.reshape(-1),
                                                             minlength=self.rows * self.cols).float())
        my, mx = postprocess_matrices(self.rows, self.cols, map_hw, cfg.output.gaussian_sigma,
                                      cfg.output.upsample)
        self.register_buffer("post_y", torch.from_numpy(my))
        self.register_buffer("post_x", torch.from_numpy(mx))

    def _bagged(self, tokens: torch.Tensor) -> torch.Tensor:
        """Eq. 10 as core.learning.model.predict_map: every window in one batch, each token's probability
        averaged over the windows that cover it (a scatter-add and a constant count)."""
        d = tokens.shape[-1]
        flat = tokens.reshape(-1, d)
        prob = self.swin(flat[self.win_index]).softmax(-1)[..., 1]
        acc = torch.zeros(self.rows * self.cols, dtype=prob.dtype).scatter_add(
            0, self.win_index.reshape(-1), prob.reshape(-1))
        return (acc / self.win_count).view(self.rows, self.cols)

    def forward(self, image: torch.Tensor):
        x = image.permute(0, 3, 1, 2).float() / 255.0        # core.embedding.features.to_tensor
        f = self.extractor(x)[0]                               # (rows, cols, d)
        if self.pos is not None:
            f = f + self.pos
        d = f.shape[-1]
        q = f.reshape(-1, d)
        # exact nearest neighbour: |b|^2 - 2 q.b ranks the bank as |q - b|^2 does
        idx = torch.argmin(self.bank_sq[None] - 2.0 * (q @ self.bank.T), dim=1)
        nb = self.bank[idx]
        diff = q - nb
        dist = (diff * diff).sum(1).sqrt().view(self.rows, self.cols)
        if self.method == "patchcore":
            block = dist
        else:
            nd = dist / max(self.fusion_ref, 1e-12)           # core.learning.fusion.fuse
            if not self.use_swin:
                block = nd
            else:
                tokens = model_tokens(self.swin, residual(f, nb.view(f.shape), self.residual_kind))
                if self.bagging:
                    p = self._bagged(tokens)
                else:
                    p = self.swin(tokens[None]).softmax(-1)[0, :, :, 1]
                w = self.fusion_weight
                block = p if w == 0 else (p + w * nd) / (1.0 + w)
        amap = self.post_y @ block @ self.post_x.T
        return amap[None], amap.max().reshape(1), block[None]
