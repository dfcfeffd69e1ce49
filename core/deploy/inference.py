"""Inference: image -> block map -> heatmap -> image score (method.md components 1-8, 18).

Per image: resize to the model input, backbone features + position code, exact nearest neighbour
in the bank, squared residual, bagged sliding-window Swin -> (rows, cols) block probabilities.
The block map is sharpened at its local maxima (output.sharpness, decision 0026), upsampled to
the output size (output.upsample) and smoothed with a Gaussian of sigma 4 pixels *at the evaluation
size* (256), i.e. sigma scales with the output size, as PatchCore does.

Image score rule: the maximum of the smoothed anomaly map (the Gaussian is the local average).

Timings are taken per stage (backbone, neighbour search, Swin, post-processing), synchronising
CUDA so that GPU times are real.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.datasets import prepare_image
from ..eval.anomaly_map import image_map
from ..methods import detector_class
from .modelfile import ModelBundle
from .precision import DEFAULT_PRECISION, check_precision


@dataclass
class Prediction:
    block_map: np.ndarray          # (rows, cols) anomaly probability per block
    anomaly_map: np.ndarray        # (H, W) smoothed map at the requested output size
    score: float                   # image score
    timings_ms: dict = field(default_factory=dict)


class _Timer:
    def __init__(self, device):
        self.device = device
        self.times: dict[str, float] = {}

    def __call__(self, name):
        timer = self

        class _Ctx:
            def __enter__(self):
                if timer.device.type == "cuda":
                    torch.cuda.synchronize(timer.device)
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                if timer.device.type == "cuda":
                    torch.cuda.synchronize(timer.device)
                timer.times[name] = timer.times.get(name, 0.0) + (time.perf_counter() - self.t) * 1000

        return _Ctx()


class Predictor:
    """Runs a trained model on images of any size, whatever its method (``config.method``, scored by
    that method's :class:`core.methods.detector.Detector`): resizing, batching by input size, the
    method's block maps, post-processing, image scores and per-stage timings."""

    def __init__(self, bundle: ModelBundle, device: torch.device | str = "cpu", bagging: bool | None = None,
                 precision: str = DEFAULT_PRECISION):
        self.bundle = bundle
        self.cfg = bundle.config
        self.device = torch.device(device)
        self.method = self.cfg.method
        self.encoder = bundle.encoder(self.device)
        if self.device.type == "cpu":
            # Measured on the CPU (bench/speed.py): the backbone is slower per image in batches
            # (8 images' activations leave the cache) and faster with channels_last weights (the
            # convolutions then run in oneDNN), with the same features bit for bit.
            self.encoder.batch_size = 1
            self.encoder.extractor.net.to(memory_format=torch.channels_last)
        self.bagging = self.cfg.swin.bagging if bagging is None else bagging
        self.precision = check_precision(precision, self.device)    # core/deploy/precision.py
        self.detector = detector_class(self.method)(bundle, self.device, self.encoder, self.bagging,
                                                    self.precision)

    def block_map(self, img: np.ndarray, timer: _Timer | None = None) -> np.ndarray:
        return self.block_maps([img], timer)[0]

    @torch.inference_mode()
    def block_maps(self, imgs: list[np.ndarray], timer: _Timer | None = None) -> list[np.ndarray]:
        """Block maps of ``imgs`` (uint8 RGB, any sizes). Images that share a model-input size go
        through each stage together (backbone, one neighbour search, one Swin forward); the
        timer sums each stage over all images."""
        timer = timer or _Timer(self.device)
        xs = [prepare_image(im, self.cfg.features.image_size, self.cfg.features.size_multiple)
              for im in imgs]
        groups: dict[tuple, list[int]] = {}
        for i, x in enumerate(xs):
            groups.setdefault(x.shape, []).append(i)
        out: list[np.ndarray | None] = [None] * len(imgs)
        for idxs in groups.values():
            for i, m in zip(idxs, self._group_maps([xs[i] for i in idxs], timer)):
                out[i] = m
        return out  # type: ignore[return-value]

    def _group_maps(self, xs: list[np.ndarray], timer: _Timer) -> list[np.ndarray]:
        """Model-input images of one size -> their block maps: the method's own scoring."""
        return self.detector.group_maps(xs, timer)

    def predict(self, img: np.ndarray, out_hw: tuple[int, int] | None = None) -> Prediction:
        """``img``: uint8 RGB at its own size. ``out_hw``: map size (default: the evaluation size)."""
        return self.predict_batch([img], None if out_hw is None else [out_hw])[0]

    def predict_batch(self, imgs: list[np.ndarray],
                      out_hws: list[tuple[int, int] | None] | None = None) -> list[Prediction]:
        """:meth:`predict` for several images at once (any sizes; those of one model-input size are
        batched). Each result's ``timings_ms`` is the batch's time per stage divided by the number
        of images, i.e. the time per image at this batch size."""
        if not imgs:
            return []
        out_hws = out_hws or [None] * len(imgs)
        timer = _Timer(self.device)
        blocks = self.block_maps(imgs, timer)
        preds = []
        with timer("post"):
            for img, block, out_hw in zip(imgs, blocks, out_hws):
                amap, score = image_map(block, img.shape[:2], self.cfg.output, out_hw, img)
                preds.append(Prediction(block, amap, score))
        per_image = {k: v / len(imgs) for k, v in timer.times.items()}
        for p in preds:
            p.timings_ms = dict(per_image)
        return preds
