"""PatchCore, the baseline every benchmark shows beside SemiREST, and a method users can train.

At parity with anomalib's ``PatchcoreModel`` on the same weights (docs/decisions/0013): same
backbone stages, ImageNet normalisation, 3x3 aggregation counting the zero padding, stride-16 map
bilinearly resized to stride 8, *no* position code, a coreset of ``bank.coreset_ratio``; the score of
a block is the Euclidean distance to its nearest bank entry; the map is that block map upsampled
(nearest) and smoothed with a Gaussian of sigma 4 at the evaluation size; the image score is the
map's maximum. The bank holds every training normal (no validation hold-out is needed to train).

Calibration (display scale, default thresholds) needs maps of normals and of defects the bank has
not seen: a few training normals are scored leave-one-out against the bank (their own entries
excluded), and DefectMaker defects pasted on them are scored the same way. No test image is used.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import nn

from ..config import Config
from ..data.datasets import prepare_image, read_images
from ..embedding.bank import MemoryBank, NearestEntry, build_bank
from ..embedding.features import Encoder
from ..eval.anomaly_map import eval_mask, grey_levels, image_map
from ..eval.calibration import calibrate, choose_contrast, contrast_maps
from ..eval.metrics import pooled_pixel_ap
from .detector import Detector, FitJob, label_record, normals_from_labels, training_record

CALIBRATION_IMAGES = 6   # training normals scored leave-one-out for calibration


class PatchCore:
    def __init__(self, cfg: Config, encoder: Encoder):
        self.cfg = cfg
        self.encoder = encoder
        self.bank: MemoryBank | None = None

    def _features(self, x: np.ndarray) -> torch.Tensor:
        return self.encoder.encode([x], with_position=False)[0]

    def fit(self, images: list[np.ndarray], tick=None) -> "PatchCore":
        """``images``: training normals, uint8 RGB at their own size."""
        f = self.cfg.features
        x = [prepare_image(i, f.image_size, f.size_multiple) for i in images]
        feats = self.encoder.encode(x, with_position=False)
        b = self.cfg.bank
        self.bank = build_bank([q.reshape(-1, q.shape[-1]).numpy() for q in feats], b.coreset_ratio,
                               b.coreset_dim, b.coreset_starts, b.max_patches, self.cfg.train.seed,
                               self.encoder.device, tick, b.coreset_cell, b.coreset_plain_max).use(b)
        return self

    def block_map(self, feats: torch.Tensor, exclude_owner: int | None = None) -> np.ndarray:
        """(rows, cols, d) features -> (rows, cols) distance to the nearest bank entry."""
        return self.bank.nearest(feats, exclude_owner)[0]

    def state(self) -> dict:
        """What the model file keeps of this scorer (its ``bank`` field)."""
        return self.bank.state()

    def calibration(self, images: list[np.ndarray], seed: int = 0) -> dict:
        """Calibration from training normals scored leave-one-out, and defects made from them."""
        from ..synthetic.defectmaker import DefectMaker
        from ..synthetic.memseg import min_component_pixels
        f, out = self.cfg.features, self.cfg.output
        n = len(images)
        pick = np.random.default_rng(seed).choice(n, min(CALIBRATION_IMAGES, n), replace=False)
        maps, masks, greys, grids = [], [], [], []
        plain = replace(out, contrast=0.0)     # refined below, once the beta is known (decision 0028)
        for i in pick:
            x = prepare_image(images[int(i)], f.image_size, f.size_multiple)
            maker = DefectMaker(min_component_pixels(self.cfg.synthesis, x.shape[:2]))
            variants = [(x, np.zeros(x.shape[:2], bool))]
            rng = np.random.default_rng([seed, int(i)])
            variants += [maker(x, rng) for _ in range(2)]
            for img, mask in variants:
                block = self.block_map(self._features(img), exclude_owner=int(i))
                maps.append(image_map(block, img.shape[:2], plain)[0])
                masks.append(eval_mask(mask, out.eval_size))
                greys.append(grey_levels(img))
                grids.append(block.shape)
        contrast = {"beta": float(out.contrast), "choice": out.contrast_choice}
        if out.contrast_choice == "validation":
            contrast["beta"], contrast["val_pixel_ap"] = choose_contrast(maps, greys, grids, masks, out)
        maps = contrast_maps(maps, greys, grids, out.contrast_radius, contrast["beta"])
        # the same maps are the method's validation: synthetic defects, never a test image
        self.val_pixel_ap = pooled_pixel_ap(maps, masks)
        return {**calibrate(maps, masks), "contrast": contrast}


class DistanceHead(nn.Module):
    """PatchCore's block map for the exported graph (Detector.graph_head): each block's Euclidean
    distance to its nearest bank entry. ``score`` turns (distance, entry index) into the block's
    score; bank methods with another score (REB's LDKNN) override it."""

    def __init__(self, bank_features: np.ndarray, rows: int, cols: int):
        super().__init__()
        self.rows, self.cols = rows, cols
        self.nearest = NearestEntry(bank_features)

    def score(self, dist: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return dist

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        dist, idx, _ = self.nearest(feats.reshape(-1, feats.shape[-1]))
        return self.score(dist, idx).view(self.rows, self.cols)


class PatchCoreDetector(Detector):
    """PatchCore as a method users train (core/methods/__init__.py): fit = a bank of every training normal
    (plus the images tagged normal), calibrated leave-one-out; score = distance to the bank."""

    name = "patchcore"

    def __init__(self, bundle, device, encoder, bagging=None, precision="float32"):
        super().__init__(bundle, device, encoder, bagging, precision)
        self.bank = bundle.bank(device)

    def group_maps(self, xs: list[np.ndarray], timer) -> list[np.ndarray]:
        with timer("backbone"):
            f = torch.stack(self.encoder.encode(xs, with_position=False))
        with timer("search"):
            return list(self.bank.nearest(f)[0])

    def graph_head(self, rows: int, cols: int) -> nn.Module:
        return DistanceHead(self.bank.features, rows, cols)

    @classmethod
    def fit(cls, job: FitJob):
        from . import BY_NAME
        cfg, report = job.cfg, job.report
        paths = normals_from_labels(job, BY_NAME[cls.name].labels_note)
        images = read_images(paths)
        report.log(f"device: {job.dev}; PatchCore bank from {len(images)} normal images")
        encoder = Encoder(cfg.features, job.dev)
        pc = PatchCore(cfg, encoder).fit(images, tick=report.tick("coreset", "greedy coreset"))
        report.log(f"memory bank: {len(pc.bank)} entries")
        return save_bank_model(job, encoder, pc, images, paths)


def save_bank_model(job: FitJob, encoder: Encoder, model: PatchCore, images: list[np.ndarray],
                    paths: list, backbone_state: dict | None = None, train_seconds: float = 0.0,
                    steps: int = 0, **record):
    """The model file of a bank method (PatchCore, REB): its bank state (``model.state()``), the
    calibration from training normals scored leave-one-out, the training record (plus the
    method's ``record`` entries) and, when the method adapted it, the backbone's weights."""
    from ..deploy.modelfile import ModelBundle
    cfg = job.cfg
    calib = model.calibration(images, cfg.train.seed)
    if "contrast" in calib:     # the refinement its calibration chose is the saved model's setting
        cfg = cfg.updated({"output": {"contrast": calib["contrast"]["beta"]}})
    bundle = ModelBundle(
        config=cfg, backbone=encoder.backbone_name, feature_dim=encoder.dim,
        bank_state=model.state(), swin_state={}, residual_scale=1.0,
        validation={"val_pixel_ap": model.val_pixel_ap}, calibration=calib,
        training=training_record(job, train_seconds=train_seconds, steps=steps,
                                 normal_images=len(images), val_images=0,
                                 bank_images=[p.name for p in paths], **label_record([]), **record),
        backbone_state=backbone_state or {})
    bundle.save(job.out)
    job.report("done", 1, 1, f"saved {job.out}")
    return bundle
