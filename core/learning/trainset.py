"""Training material in token space: everything the Swin Transformer trains and validates on.

Built once per run, before the optimisation steps:

1. PCFs of the training normals (component 2-3) -> the memory bank (component 4);
2. synthetic anomalies made from the training normals (component 10), labelled per block with
   Eq. 14 (eps+ 50%, eps- 8%);
3. real labelled defective images, labelled per block from their masks / blocks / boxes / tags
   (components 9, 15, 16), and their labelled regions pasted onto other training normals
   (``train.paste_per_label``, core/synthetic/labelpaste.py);
4. the validation split: held-out normals plus synthetic defects made from them (component 19)
   by a *different* generator (REB's DefectMaker), so that checkpoint choice rewards models that
   generalise to unseen defect types rather than ones that learnt MemSeg's look;
5. for every image, the indices of its K nearest bank entries, with leave-one-out for images that
   came from a bank image (component 6): a normal's own patches, and those of the normal a
   synthetic image was made from, are not its neighbours.

Each image is kept as its PCF tensor (float16, to halve memory) plus its neighbour indices; the
residuals themselves are computed on the fly per step (component 5).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..config import Config
from ..data.geometry import BlockGrid
from ..data.labels import BLOCK_NORMAL, block_labels_from_mask
from ..embedding.bank import MemoryBank, build_bank
from ..embedding.features import Encoder
from ..embedding.residuals import residual
from ..eval.anomaly_map import CONTRAST_LABEL_KINDS, grey_levels
from ..progress import Reporter
from ..synthetic.defectmaker import DefectMaker
from ..synthetic.labelpaste import Labelled, paste_labelled
from ..synthetic.memseg import AnomalySynthesizer, load_textures, min_component_pixels


@dataclass
class TokenImage:
    feats: torch.Tensor            # (rows, cols, d) PCF, float16, CPU
    nbr: torch.Tensor              # (rows, cols, K) bank indices, best first
    targets: torch.Tensor          # (rows, cols) int8 block labels (labels.BLOCK_*)
    kind: str                      # normal | synthetic | defective
    name: str
    mask: np.ndarray | None = None  # bool pixel mask at model-input size (validation only)
    label_kind: str | None = None   # for defective images: mask | blocks | boxes | tag
    grey: np.ndarray | None = None  # uint8 grey levels at model-input size (validation only: the
                                    # map's pixel-contrast refinement is chosen on them, decision 0028)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.feats.shape[:2])


@dataclass
class Material:
    bank: MemoryBank
    normals: list[TokenImage]
    synthetic: list[TokenImage]
    val: list[TokenImage]
    defective: list[TokenImage] = field(default_factory=list)
    residual_scale: float = 1.0
    backbone: str = ""
    feature_dim: int = 0
    # labelled defective images held out of training to validate on real defects (core/eval/realval.py)
    val_real: list[TokenImage] = field(default_factory=list)
    # round -> a fresh pool of synthetic images (same generator, other random draws), for
    # synthesis.refresh_every; round 0 is the pool built here
    refresh: Callable[[int], list[TokenImage]] | None = None


def neighbours(bank: MemoryBank, feats: torch.Tensor, k: int, exclude_owner: int | None) -> torch.Tensor:
    rows, cols, d = feats.shape
    _, idx = bank.search(feats.reshape(-1, d), k, exclude_owner=exclude_owner)
    return torch.from_numpy(idx.astype(np.int64)).reshape(rows, cols, k)


def _n_synthetic(per_normal: float, rng: np.random.Generator) -> int:
    base = int(np.floor(per_normal))
    return base + int(rng.random() < per_normal - base)


def make_synthetic(images: list[np.ndarray], cfg: Config, seed: int, report: Reporter,
                   generator: str = "memseg", per_normal: float | None = None,
                   ) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(source index, anomalous image, pixel mask), about ``per_normal`` per image.

    ``generator``: "memseg" (training defects, component 10) or "defectmaker" (REB's shapes and
    fills; the validation split's defects, so that checkpoint choice measures generalisation to a
    defect type the training never saw).
    """
    per = cfg.synthesis.per_normal if per_normal is None else per_normal
    if generator == "memseg":
        textures = load_textures(cfg.synthesis.texture_dir) if cfg.synthesis.texture_dir else None
        synth = AnomalySynthesizer(cfg.synthesis, textures)
    elif generator == "defectmaker":
        shape = images[0].shape[:2] if images else (512, 512)
        synth = DefectMaker(min_component_pixels(cfg.synthesis, shape))
    else:
        raise ValueError(f"unknown defect generator {generator!r}")
    out = []
    for i, img in enumerate(images):
        rng = np.random.default_rng([seed, i])
        for _ in range(_n_synthetic(per, rng)):
            aimg, mask = synth(img, rng)
            out.append((i, aimg, mask))
        report("synthesis", i + 1, len(images), generator)
    return out


def build_material(cfg: Config, encoder: Encoder, device: torch.device, train_imgs: list[np.ndarray],
                   train_names: list[str], val_imgs: list[np.ndarray], val_names: list[str],
                   labelled: list[Labelled], report: Reporter,
                   bank: MemoryBank | None = None,
                   labelled_val: list[Labelled] | None = None) -> Material:
    """Everything in the module docstring. ``labelled``: real images with defect labels, at the
    model input size (``labelled_val``: those held out to validate on, core/eval/realval.py)."""
    t, k, seed = cfg.train, cfg.bank.neighbours, cfg.train.seed

    report.log(f"backbone: {encoder.backbone_name} ({encoder.extractor.description}), "
               f"d_f = {encoder.dim}, input {train_imgs[0].shape[1]}x{train_imgs[0].shape[0]} px")
    pcf = encoder.encode(train_imgs, tick=report.tick("features", "training normals"))
    if bank is None:
        bank = build_bank([f.reshape(-1, f.shape[-1]).numpy() for f in pcf], cfg.bank.coreset_ratio,
                          cfg.bank.coreset_dim, cfg.bank.coreset_starts, cfg.bank.max_patches, seed,
                          device, tick=report.tick("coreset", "approximate greedy coreset"),
                          cell_size=cfg.bank.coreset_cell, plain_max=cfg.bank.coreset_plain_max)
    bank.to(device).use(cfg.bank)
    report.log(f"memory bank: {len(bank)} entries of {sum(f.shape[0] * f.shape[1] for f in pcf)} "
               f"patches ({cfg.bank.coreset_ratio:.1%})")

    def token_image(img_feats, owner, targets, kind, name, mask=None, label_kind=None, image=None):
        return TokenImage(img_feats.half(), neighbours(bank, img_feats, k, owner), targets, kind, name,
                          mask, label_kind, None if image is None else grey_levels(image))

    def normal_targets(f):
        return torch.full(f.shape[:2], BLOCK_NORMAL, dtype=torch.int8)

    total = len(pcf)
    normals = []
    for i, (f, name) in enumerate(zip(pcf, train_names)):
        normals.append(token_image(f, i, normal_targets(f), "normal", name))
        report("neighbours", i + 1, total, "training normals (leave-one-out)")

    synthetic = _synthetic_items(cfg, encoder, train_imgs, train_names, seed, report, token_image,
                                 leave_one_out=True)
    val = []
    if val_imgs:
        vf = encoder.encode(val_imgs, tick=report.tick("features", "validation normals"))
        for f, img, name in zip(vf, val_imgs, val_names):
            val.append(token_image(f, None, normal_targets(f), "normal", name,
                                   mask=np.zeros(img.shape[:2], bool), image=img))
        val += _synthetic_items(cfg, encoder, val_imgs, val_names, seed + 10_000, report, token_image,
                                leave_one_out=False, keep_mask=True, generator=t.val_generator,
                                per_normal=t.val_defects_per_normal)

    defective = []
    if labelled:
        lf = encoder.encode([x.image for x in labelled], tick=report.tick("features", "labelled images"))
        for f, x in zip(lf, labelled):
            if tuple(x.targets.shape) != tuple(f.shape[:2]):
                raise ValueError(f"{x.name}: block targets {x.targets.shape} do not match features {f.shape[:2]}")
            defective.append(token_image(f, None, torch.from_numpy(x.targets), "defective", x.name,
                                         label_kind=x.kind))
        # label paste (core/synthetic/labelpaste.py): each labelled defect on other training normals too
        pasted = paste_labelled(labelled, train_imgs, t.paste_per_label, seed, t.eps_pos_real, t.eps_neg,
                                t.box_unknown, t.paste_feather_px, t.box_band)
        if pasted:
            pf = encoder.encode([x.image for _, x in pasted], tick=report.tick("features", "pasted labelled defects"))
            for f, (owner, x) in zip(pf, pasted):
                # the normal it was pasted on is in the bank: leave it out, as for synthetic defects
                defective.append(token_image(f, owner, torch.from_numpy(x.targets), "defective", x.name,
                                             label_kind=x.kind))
            report.log(f"label paste: {len(pasted)} images from {len(labelled)} labelled ones")

    val_real = []
    if labelled_val:
        vf = encoder.encode([x.image for x in labelled_val], tick=report.tick("features", "held-out labelled images"))
        for f, x in zip(vf, labelled_val):
            # a held-out mask, block cells or box keeps its pixels: the map's pixel-contrast refinement can be
            # chosen on real defects (decision 0028)
            exact = x.kind in CONTRAST_LABEL_KINDS and x.region is not None
            val_real.append(token_image(f, None, torch.from_numpy(x.targets), "defective", x.name,
                                        mask=x.region if exact else None, label_kind=x.kind,
                                        image=x.image if exact else None))

    # Scalar input scale: the mean leave-one-out residual of normal tokens, so the Swin sees inputs
    # of order 1 whatever the backbone (Wide-ResNet and EfficientNet features differ in scale).
    bank_t = torch.from_numpy(bank.features)
    acc = [residual(n.feats.float(), bank_t[n.nbr[..., 0]], cfg.bank.residual).mean() for n in normals]
    scale = float(torch.stack(acc).mean().clamp_min(1e-8))

    def refresh(round_: int) -> list[TokenImage]:
        quiet = Reporter(None, report.cancel_event)   # no progress bars mid-training; cancel still works
        return _synthetic_items(cfg, encoder, train_imgs, train_names, seed + 7919 * round_, quiet, token_image,
                                leave_one_out=True)

    return Material(bank, normals, synthetic, val, defective, scale, encoder.backbone_name, encoder.dim,
                    val_real=val_real, refresh=refresh)


def _synthetic_items(cfg, encoder, images, names, seed, report, token_image, leave_one_out, keep_mask=False,
                     generator="memseg", per_normal=None):
    made = make_synthetic(images, cfg, seed, report, generator, per_normal)
    if not made:
        return []
    feats = encoder.encode([m[1] for m in made], tick=report.tick("features", "synthetic anomalies"))
    out = []
    for j, ((src, aimg, mask), f) in enumerate(zip(made, feats)):
        targets = block_labels_from_mask(mask, BlockGrid.at_input_size(aimg), cfg.train.eps_pos, cfg.train.eps_neg)
        out.append(token_image(f, src if leave_one_out else None, torch.from_numpy(targets), "synthetic",
                               f"synthetic-{j}-of-{names[src]}", mask=mask if keep_mask else None,
                               image=aimg if keep_mask else None))
        report("neighbours", j + 1, len(made), "synthetic anomalies")
    return out
