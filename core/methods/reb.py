"""REB (Lyu, Mo, Wong, "REB: Reducing Biases in Representation for Industrial Anomaly Detection";
docs/method.md, REB) as a method users train: settings in ``Config.reb``.

1. DefectMaker self-supervised fine-tuning of the backbone (``reb.finetune``;
   core/methods/defect_finetune.py): reduces the *domain bias* of ImageNet features. Off in the
   ``cpu`` preset (it takes minutes of backpropagation on a CPU): the plain-features variant.
2. A memory bank of (adapted) features of every training normal, built exactly as PatchCore's
   (same features, same coreset of ``bank.coreset_ratio``; core/methods/patchcore.py).
3. Local-Density KNN (core/methods/ldknn.py) reduces the *local density bias*: the score of a block is its
   distance to the nearest bank entry minus ``reb.ldknn_lambda`` times that entry's mean distance
   to its ``reb.ldknn_k`` nearest bank neighbours. The densities are computed once here and stored
   with the bank (``bank["density"]`` of the model file); the adapted backbone weights, when
   fine-tuned, are stored as the model file's ``backbone_state`` (tensors only) and used by predict.

The map and image score are PatchCore's (nearest upsampling, Gaussian, maximum); REB's own image
score (maximum of a 3x3 average pool of the block map) is not used, so every method of this project
shares one map-to-score rule. Calibration (display scale, thresholds) as PatchCore's: training
normals scored leave-one-out (their own bank entries excluded; the densities stay those of the full
bank) and DefectMaker defects pasted on them. Learns from normal images only.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..data.datasets import prepare_image, read_images
from ..embedding.features import Encoder
from ..errors import InputError
from .detector import Detector, FitJob, normals_from_labels
from .ldknn import ldknn, local_density
from .patchcore import DistanceHead, PatchCore, save_bank_model


class Reb(PatchCore):
    """PatchCore's bank with LDKNN scoring (the bank's densities kept beside it)."""

    def __init__(self, cfg, encoder: Encoder):
        super().__init__(cfg, encoder)
        self.density: np.ndarray | None = None

    def fit(self, images: list[np.ndarray], tick=None, density_tick=None) -> "Reb":
        super().fit(images, tick)
        self.density = local_density(self.bank, self.cfg.reb.ldknn_k, density_tick)
        return self

    def block_map(self, feats: torch.Tensor, exclude_owner: int | None = None) -> np.ndarray:
        return ldknn(self.bank, self.density, feats, self.cfg.reb.ldknn_lambda, exclude_owner)

    def state(self) -> dict:
        return {**self.bank.state(), "density": torch.from_numpy(self.density)}


class LdknnHead(DistanceHead):
    """REB's block map for the exported graph (Detector.graph_head): :func:`core.methods.ldknn.ldknn`
    in traceable ops, the distance to the nearest bank entry minus lambda times that entry's stored
    density."""

    def __init__(self, bank_features: np.ndarray, density: np.ndarray, lam: float, rows: int, cols: int):
        super().__init__(bank_features, rows, cols)
        self.register_buffer("density", torch.from_numpy(np.asarray(density, np.float32)).clone())
        self.lam = float(np.float32(lam))       # as ldknn: lambda in float32

    def score(self, dist: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return dist - self.lam * self.density[idx]


class RebDetector(Detector):
    """REB as a method (core/methods/__init__.py): fit = optional DefectMaker fine-tuning, a bank of every
    training normal (plus the images tagged normal) with LDKNN densities, calibrated leave-one-out;
    score = LDKNN."""

    name = "reb"

    def __init__(self, bundle, device, encoder, bagging=None, precision="float32"):
        super().__init__(bundle, device, encoder, bagging, precision)   # encoder: with the adapted weights
        self.bank = bundle.bank(device)
        density = bundle.bank_state.get("density")
        if density is None:
            raise InputError(None, "this REB model has no LDKNN densities in its bank (a damaged or "
                                   "hand-made model file?); train it again with --method reb")
        self.density = density.numpy()

    def group_maps(self, xs: list[np.ndarray], timer) -> list[np.ndarray]:
        with timer("backbone"):
            f = torch.stack(self.encoder.encode(xs, with_position=False))
        with timer("search"):
            return list(ldknn(self.bank, self.density, f, self.cfg.reb.ldknn_lambda))

    def graph_head(self, rows: int, cols: int) -> nn.Module:
        return LdknnHead(self.bank.features, self.density, self.cfg.reb.ldknn_lambda, rows, cols)

    def export_info(self) -> dict:
        return {"ldknn_lambda": self.cfg.reb.ldknn_lambda, "finetuned_backbone": bool(self.bundle.backbone_state)}

    @classmethod
    def fit(cls, job: FitJob):
        from . import BY_NAME
        from .defect_finetune import finetune_backbone
        cfg, report, r = job.cfg, job.report, job.cfg.reb
        paths = normals_from_labels(job, BY_NAME[cls.name].labels_note)
        images = read_images(paths)
        report.log(f"device: {job.dev}; REB from {len(images)} normal images, "
                   + (f"backbone fine-tuned on DefectMaker defects first ({r.finetune_steps} steps of "
                      f"{r.finetune_batch} images)" if r.finetune else
                      "plain ImageNet features (reb.finetune off)"))
        encoder = Encoder(cfg.features, job.dev)
        backbone_state, tuned = {}, {}
        if r.finetune:
            f = cfg.features
            xs = [prepare_image(i, f.image_size, f.size_multiple) for i in images]
            backbone_state, tuned = finetune_backbone(encoder.extractor, xs, r, cfg.synthesis,
                                                      cfg.train.seed, report)
            report.log(f"fine-tuned in {tuned['seconds']:.0f} s: loss {tuned['first_loss']:.3f} -> "
                       f"{tuned['loss']:.3f}, accuracy {tuned['accuracy']:.2f} over the 7 classes")
        model = Reb(cfg, encoder).fit(images, tick=report.tick("coreset", "greedy coreset"),
                                      density_tick=report.tick("density", "LDKNN local densities"))
        report.log(f"memory bank: {len(model.bank)} entries; LDKNN K={r.ldknn_k}, lambda="
                   f"{r.ldknn_lambda:g}, median local density {float(np.median(model.density)):.4g}")
        return save_bank_model(job, encoder, model, images, paths, backbone_state,
                               train_seconds=tuned.get("seconds", 0.0), steps=tuned.get("steps", 0),
                               finetune=tuned)
