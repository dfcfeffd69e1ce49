"""The inference path as one traceable module for a fixed input size (core/deploy/export.py exports it).

Predictor's computation (core/deploy/inference.py) for one input size, composed of three parts:
the backbone (the model's own feature extractor), the method's head (``Detector.graph_head`` of
core/methods/detector.py: the block map from the features, each method's scoring in traceable
ops) and the post-processing written here: the sharpening at local maxima as a 3 x 3 max-pool, then
upsampling and blur as two matrix products. tests/core/test_export.py
checks every method's graph against :class:`core.deploy.inference.Predictor`.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ExportError
from ..eval.anomaly_map import postprocess
from ..methods import detector_class
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


def sharpen_graph(block: torch.Tensor, gamma: float) -> torch.Tensor:
    """:func:`core.eval.anomaly_map.sharpen` in traceable ops: the 3 x 3 maximum is a max-pool,
    whose implicit -inf padding ignores the border as the dilation's replicated border does."""
    if gamma == 0:
        return block
    pos = block.clamp_min(0.0)
    peak = F.max_pool2d(block[None, None], 3, stride=1, padding=1)[0, 0]
    return block - pos * (1.0 - (pos / peak.clamp_min(1e-12)) ** gamma)


class InferenceGraph(nn.Module):
    """Predictor's computation (core/deploy/inference.py) for one input size, in traceable ops: the
    backbone, the method's own head (``Detector.graph_head``: features -> block map) and the
    post-processing, the same for every method."""

    def __init__(self, bundle: ModelBundle, input_wh: tuple[int, int], map_hw: tuple[int, int],
                 bagging: bool | None = None):
        super().__init__()
        cfg = bundle.config
        w_in, h_in = input_wh
        rows, cols = h_in // 8, w_in // 8
        encoder = bundle.encoder("cpu")                  # with the model's adapted weights, if any
        self.extractor = encoder.extractor.eval()
        # the method's detector, as Predictor builds it: its head reuses the loaded model pieces
        self.detector = detector_class(cfg.method)(bundle, torch.device("cpu"), encoder, bagging)
        self.head = self.detector.graph_head(rows, cols).eval()
        my, mx = postprocess_matrices(rows, cols, map_hw, cfg.output.gaussian_sigma, cfg.output.upsample)
        self.register_buffer("post_y", torch.from_numpy(my))
        self.register_buffer("post_x", torch.from_numpy(mx))
        self.sharpness = float(cfg.output.sharpness)

    def forward(self, image: torch.Tensor):
        x = image.permute(0, 3, 1, 2).float() / 255.0        # core.embedding.features.to_tensor
        block = self.head(self.extractor(x)[0])              # (rows, cols)
        amap = self.post_y @ sharpen_graph(block, self.sharpness) @ self.post_x.T
        return amap[None], amap.max().reshape(1), block[None]
