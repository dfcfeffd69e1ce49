"""SemiREST (the paper's method, docs/method.md): a bank of normal features, residuals to the
nearest normal feature at each position, and a Swin that classifies 8x8-pixel blocks, trained on
synthetic defects and on whatever the user labelled.

Training stages (``SemiREST.fit``): stage 1 trains with Eq. 11 on normals, synthetic anomalies
and fully labelled images (masks, block maps, normal tags); boxes then teach through pseudo-masks
(decision 0015); defective tags fine-tune with ResMixMatch (Algorithm 1). Scoring
(``SemiREST.group_maps``): backbone, one neighbour search, residuals, the bagged sliding-window
Swin, and the fused nearest-neighbour distance (core/learning/fusion.py).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from .. import preflight
from ..config import SELECTION_METRICS, Config, plan_line
from ..data.datasets import prepare_image, read_images, split_train_val
from ..data.geometry import BlockGrid
from ..data.images import read_image
from ..data.labels import BLOCK_UNKNOWN, ImageLabel
from ..deploy.modelfile import ModelBundle
from ..deploy.precision import PRECISIONS, low_precision, resolve_precision
from ..embedding.bank import NearestEntry, build_bank
from ..embedding.features import Encoder
from ..embedding.residuals import residual
from ..errors import ConfigError, LabelError
from ..eval.anomaly_map import eval_mask, output_map
from ..eval.calibration import calibrate, choose_contrast, contrast_maps
from ..eval.realval import split_labelled
from ..learning.fusion import combine, fuse, normalised
from ..learning.known_defects import closeness, exemplars, is_defective_tag, with_known
from ..learning.model import build_model, model_tokens, predict_maps, sliding_windows
from ..learning.training import Trainer, block_maps, nearest_distance
from ..learning.trainset import build_material
from ..synthetic.labelpaste import Labelled
from .detector import Detector, FitJob, label_record, training_record


def checkpoint_path(out: Path) -> Path:
    """Where a run's resumable checkpoint lives while it trains (removed once the model is saved)."""
    return out.with_name(out.name + ".ckpt")


class SemiREST(Detector):
    name = "semirest"
    # the Swin blocks' linear layers (SemiRestHead.swin.blocks): most of the inference time, and
    # int8 there kept a dev class's pixel AP to the digit; the bank search and the residual's
    # embedding are left float32 (quantising them cost 14 points: decision 0021)
    int8_layers = ("/head/swin/blocks.",)
    precisions = PRECISIONS      # the Swin runs under autocast; backbone and search stay float32

    def __init__(self, bundle, device, encoder, bagging=None, precision="float32"):
        super().__init__(bundle, device, encoder, bagging, precision)
        self.model = bundle.swin(device)
        self.bank = bundle.bank(device)
        self.bank_t = torch.from_numpy(self.bank.features).to(device)
        fusion = bundle.calibration.get("fusion") or {}     # core/learning/fusion.py; absent: the Swin alone
        self.fusion_weight = float(fusion.get("weight", 0.0))
        self.fusion_ref = float(fusion.get("d_ref", 1.0))
        # the blocks the user labelled defective (core/learning/known_defects.py); absent: none
        known = bundle.method_state.get("known_defects")
        self.known_weight = float((bundle.calibration.get("known_defects") or {}).get("weight", 0.0))
        self.known = (NearestEntry(known.numpy()).to(device)
                      if known is not None and len(known) and self.known_weight else None)

    def group_maps(self, xs: list[np.ndarray], timer) -> list[np.ndarray]:
        with timer("backbone"):
            f = torch.stack(self.encoder.encode(xs))          # (n, rows, cols, d)
        with timer("search"):
            dist, idx = self.bank.nearest(f)                  # one search for the whole group
            if self.known is not None:
                dk = self.known(f.to(self.device).reshape(-1, f.shape[-1]))[0].view(f.shape[:3]).cpu().numpy()
        maps = self._swin_maps(f, dist, idx, timer)
        if self.known is not None:
            return [with_known(m, closeness(d, k), self.known_weight).astype(np.float32)
                    for m, d, k in zip(maps, dist, dk)]
        return maps

    def _swin_maps(self, f: torch.Tensor, dist: np.ndarray, idx: np.ndarray, timer) -> list[np.ndarray]:
        """The Swin's block maps, fused with the nearest-neighbour distance (core/learning/fusion.py)."""
        n = len(f)
        if math.isinf(self.fusion_weight):     # the distance alone was best on validation: no Swin
            return [fuse(np.zeros_like(d), d, self.fusion_weight, self.fusion_ref) for d in dist]
        with timer("swin"):
            fd = f.to(self.device)
            nb = self.bank_t[torch.from_numpy(idx).to(self.device)]
            r = residual(fd, nb, self.cfg.bank.residual)
            with low_precision(self.device, self.precision):
                m = predict_maps(self.model, model_tokens(self.model, r), self.cfg.swin.mu,
                                 self.cfg.swin.step, self.bagging)
            maps = m.float().cpu().numpy()
        if self.fusion_weight:
            return [fuse(mp, d, self.fusion_weight, self.fusion_ref) for mp, d in zip(maps, dist)]
        return [maps[i] for i in range(n)]

    def graph_head(self, rows: int, cols: int) -> nn.Module:
        return SemiRestHead(self, rows, cols)

    def export_info(self) -> dict:
        return {"bagging": None if math.isinf(self.fusion_weight) else bool(self.bagging),
                "fusion_weight": str(self.fusion_weight),
                "known_defects": {"entries": 0 if self.known is None else int(self.known.bank.shape[0]),
                                  "weight": self.known_weight if self.known is not None else 0.0}}

    @classmethod
    def state_problem(cls, bundle) -> str | None:
        known = bundle.method_state.get("known_defects")
        if known is not None and (known.ndim != 2 or known.shape[1] != bundle.feature_dim):
            return (f"its known-defect blocks must be a (n, {bundle.feature_dim}) tensor, got shape "
                    f"{tuple(known.shape)}")
        return None

    @classmethod
    def fit(cls, job: FitJob) -> ModelBundle:
        cfg, out, dev, device, report, t0 = job.cfg, job.out, job.dev, job.device, job.report, job.t0
        normal_paths, labels, resume, init_from = job.normal_paths, job.labels, job.resume, job.init_from
        report.log(plan_line(cfg, dev.type))
        precision = resolve_precision(cfg.train.precision, dev)
        report.log(f"training precision: {precision}" + (" (auto: what this device multiplies fastest)"
                                                        if cfg.train.precision == "auto" else ""))
        ckpt = checkpoint_path(out)
        if not resume:
            ckpt.unlink(missing_ok=True)
        if preflight.needed(cfg, normal_paths) and not ckpt.exists():
            preflight.dry_run(normal_paths, labels or [], cfg, device, report)   # a resumed run passed it
        fcfg = cfg.features
        train_p, val_p = split_train_val(normal_paths, cfg.train.val_fraction, cfg.train.val_min_images,
                                         cfg.train.seed)
        report.log(f"device: {dev}; {len(train_p)} normal images for the bank, {len(val_p)} held out "
                   f"for validation")
        train_imgs = [prepare_image(i, fcfg.image_size, fcfg.size_multiple) for i in read_images(train_p)]
        val_imgs = [prepare_image(i, fcfg.image_size, fcfg.size_multiple) for i in read_images(val_p)]
        labelled = labelled_items(labels or [], cfg)
        labelled, labelled_val = split_labelled(labelled, cfg.train.real_val_fraction,
                                                cfg.train.real_val_min_labelled, cfg.train.seed)
        if labelled_val:
            report.log(f"{len(labelled_val)} of {len(labelled) + len(labelled_val)} labelled defective images "
                       f"held out to validate on real defects: {', '.join(x.name for x in labelled_val)}")
        init = (init_from if isinstance(init_from, ModelBundle) or init_from is None
                else ModelBundle.load(init_from))
        bank_names = [p.name for p in train_p]
        bank = None
        if init is not None:
            if init.config.features != fcfg:
                raise ConfigError(f"init model {init_from}: its feature settings differ from this run's")
            if init.training.get("bank_images") == bank_names:
                bank = init.bank(dev)
            else:
                report.log("the init model's bank was built from other normal images: building a new bank")
        encoder = Encoder(fcfg, dev, backbone=init.backbone if init else None)
        material = build_material(cfg, encoder, dev, train_imgs, bank_names, val_imgs,
                                  [p.name for p in val_p], labelled, report, bank=bank,
                                  labelled_val=labelled_val)
        if init is not None:
            material.residual_scale = init.residual_scale
        pseudo_record = None      # the boxes' pseudo-masks, when there are boxes (decision 0015)
        has_hard = any(not (d.targets == BLOCK_UNKNOWN).any() for d in material.defective)
        has_unknown = any((d.targets == BLOCK_UNKNOWN).any() for d in material.defective)
        fp = _fingerprint(cfg, normal_paths, labels or [], init_from)
        trainer = Trainer(cfg, material, dev, report, checkpoint=ckpt,
                          init_state=init.swin_state if init else None, fingerprint=fp)
        trainers = [trainer]
        trainer.fit_started = t0
        if init is None or has_hard or not has_unknown:
            result = trainer.run()
        else:
            result = trainer.start_point()
        if has_unknown and cfg.semi.boxes == "pseudo_mask" and any(d.label_kind == "boxes" for d in material.defective):
            from ..learning.pseudomask import (PseudoMaskTrainer, pseudo_mask_record,   # decision 0015
                                                pseudo_masks)
            start = build_model(material.feature_dim, cfg, material.residual_scale).to(dev)
            start.load_state_dict(result.state)
            boxed = [(d.targets == BLOCK_UNKNOWN).numpy() for d in material.defective if d.label_kind == "boxes"]
            n = pseudo_masks(start, material, cfg, dev, cfg.semi.pseudo_threshold)
            pseudo_record = pseudo_mask_record(boxed, material)
            report.log(f"boxes: pseudo-masks for {n} images from the start model")
            boxes = PseudoMaskTrainer(cfg, material, dev, report, checkpoint=ckpt.with_suffix(".boxes.ckpt"),
                                      init_state=result.state, fingerprint=fp)
            boxes.fit_started = t0
            trainers.append(boxes)
            result = boxes.run(previous=result)
        # what is still unknown after the boxes' pseudo-masks: left to ResMixMatch
        unknown_kinds = {d.label_kind for d in material.defective if (d.targets == BLOCK_UNKNOWN).any()}
        if unknown_kinds == {"tag"} and not labelled_val and not cfg.semi.unchecked_tags:
            # Decision 0023: tags never beat their start where held-out tags checked them, and unchecked
            # (too few to hold any out) they lost up to 3.6 points: do not train on them unchecked.
            report.log(f"tags: {sum(d.label_kind == 'tag' for d in material.defective)} defective tag(s), "
                       f"too few for any to be held out (train.real_val_min_labelled = "
                       f"{cfg.train.real_val_min_labelled}): not trained on; the model keeps its start "
                       f"(semi.unchecked_tags: true trains on them anyway)")
            unknown_kinds = set()
        if unknown_kinds:
            from ..learning.resmixmatch import ResMixMatchTrainer   # boxes / defective tags: Algorithm 1
            semi = ResMixMatchTrainer(cfg, material, dev, report, checkpoint=ckpt.with_suffix(".semi.ckpt"),
                                      init_state=result.state, fingerprint=fp)
            semi.fit_started = t0
            trainers.append(semi)
            result = semi.run(previous=result)
        swin = trainer.model
        swin.load_state_dict(result.state)
        swin.eval()
        # decision 0025: the blocks labelled defective, at most train.known_defects_per_image an image,
        # those farthest from the normals (boxes: of their pseudo-masks; defective tags: the trained
        # model's highest blocks), held-out images too
        bank_t = torch.from_numpy(material.bank.features).to(dev)
        # the validation split's (probability, distance) maps, once: the tags' floor and calibration
        val_maps = [block_maps(swin, it, bank_t, cfg, dev) for it in material.val]
        known = np.zeros((0, material.feature_dim), np.float32)
        if cfg.train.known_defects_weight:
            def score(it):
                return block_maps(swin, it, bank_t, cfg, dev)[0]
            tagged = any(is_defective_tag(it) for it in material.defective + material.val_real)
            # a tag's block counts only above every held-out normal's blocks (core/learning/known_defects.py)
            floor = max((float(p.max()) for it, (p, _) in zip(material.val, val_maps) if it.kind == "normal"),
                        default=np.inf) if tagged else np.inf
            def farthest(it):       # distance to the nearest normal: the least normal-looking blocks first
                return nearest_distance(it, bank_t, dev)
            known = exemplars(material.defective + material.val_real, cfg.train.known_defects_max, cfg.train.seed,
                              score=score, per_tag=cfg.train.known_defects_per_tag, tag_floor=floor,
                              rank=farthest, per_image=cfg.train.known_defects_per_image)
        if len(known):
            report.log(f"known defects: {len(known)} blocks of the labelled defective images score new "
                       f"images by nearness (weight {cfg.train.known_defects_weight:g})")
        calib = _calibrate(material, cfg, dev, known, val_maps, swin)
        # the refinement validation chose is the saved model's setting (inference reads the config)
        cfg = cfg.updated({"output": {"contrast": calib["contrast"]["beta"]}})
        bank_state = material.bank.state()
        if cfg.bank.include_val and val_imgs:
            # The hold-outs chose the checkpoint and calibrated; now they join the bank, so that
            # test images are compared with every normal the user gave (as PatchCore's bank is).
            every = encoder.encode(train_imgs + val_imgs, tick=report.tick("features", "bank of every normal"))
            b = cfg.bank
            bank_state = build_bank([f.reshape(-1, f.shape[-1]).numpy() for f in every], b.coreset_ratio,
                                    b.coreset_dim, b.coreset_starts, b.max_patches, cfg.train.seed, dev,
                                    tick=report.tick("coreset", "bank of every normal"),
                                    cell_size=b.coreset_cell, plain_max=b.coreset_plain_max).state()
            bank_names = bank_names + [p.name for p in val_p]
        bundle = ModelBundle(
            config=cfg, backbone=material.backbone, feature_dim=material.feature_dim,
            bank_state=bank_state, swin_state={k: v.cpu() for k, v in result.state.items()},
            residual_scale=material.residual_scale,
            validation={**_chosen_validation(result), "step": result.best_step, "history": result.history,
                        "real_defect_images": [x.name for x in labelled_val]},
            calibration=calib,
            method_state={"known_defects": torch.from_numpy(known)} if len(known) else {},
            training=training_record(
                job,
                # every process of a resumed run, not only the last one
                seconds=max(x.earlier_fit_seconds for x in trainers) + time.perf_counter() - t0,
                train_seconds=result.seconds, steps=result.steps, precision=precision,
                normal_images=len(train_p), val_images=len(val_p), bank_images=bank_names,
                init_from=str(init_from) if isinstance(init_from, (str, Path)) else None,
                synthetic_images=len(material.synthetic), **label_record(labels),
                **({"pseudo_masks": pseudo_record} if pseudo_record else {})))
        bundle.save(out)
        ckpt.unlink(missing_ok=True)
        ckpt.with_suffix(".semi.ckpt").unlink(missing_ok=True)
        ckpt.with_suffix(".boxes.ckpt").unlink(missing_ok=True)
        report("done", 1, 1, f"saved {out}", val_pixel_ap=result.best_metric)
        return bundle


class SemiRestHead(nn.Module):
    """:meth:`SemiREST.group_maps` for one image in traceable ops, for the exported graph
    (Detector.graph_head): position code, nearest bank entry, residual, the Swin, fusion.

    Bagging (Eq. 10) as core.learning.model.predict_map: every sliding window of the map in one
    batch, each token's probability averaged over the windows that cover it (a scatter-add and a
    constant count). Fusion as core.learning.fusion.combine; with an infinite weight (the distance
    alone) no Swin is in the graph."""

    def __init__(self, det: SemiREST, rows: int, cols: int):
        super().__init__()
        cfg = det.cfg
        self.rows, self.cols = rows, cols
        self.nearest = NearestEntry(det.bank.features)
        self.fusion_weight, self.fusion_ref = det.fusion_weight, det.fusion_ref
        self.known = None if det.known is None else NearestEntry(det.known.bank.cpu().numpy())
        self.known_weight = det.known_weight
        self.use_swin = not math.isinf(self.fusion_weight)
        # the same product Encoder.add_position adds: lambda_pe * code
        pos = cfg.features.lambda_pe * det.encoder.position(rows, cols) if cfg.features.lambda_pe else None
        self.register_buffer("pos", pos)
        self.residual_kind = cfg.bank.residual
        self.swin = det.model if self.use_swin else None
        self.bagging = det.bagging
        if self.use_swin and self.bagging:
            wins = sliding_windows(rows, cols, cfg.swin.mu, cfg.swin.step)
            grid = torch.arange(rows * cols).view(rows, cols)
            index = torch.stack([grid[r:r + mr, c:c + mc] for r, c, mr, mc in wins])
            self.register_buffer("win_index", index)                 # (nW, mr, mc) token indices
            self.register_buffer("win_count", torch.bincount(index.reshape(-1), minlength=rows * cols).float())

    def _bagged(self, tokens: torch.Tensor) -> torch.Tensor:
        flat = tokens.reshape(-1, tokens.shape[-1])
        prob = self.swin(flat[self.win_index]).softmax(-1)[..., 1]
        acc = torch.zeros(self.rows * self.cols, dtype=prob.dtype).scatter_add(
            0, self.win_index.reshape(-1), prob.reshape(-1))
        return (acc / self.win_count).view(self.rows, self.cols)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        f = feats if self.pos is None else feats + self.pos
        dist, _, nb = self.nearest(f.reshape(-1, f.shape[-1]))
        dist = dist.view(self.rows, self.cols)
        nd = normalised(dist, self.fusion_ref)
        if not self.use_swin:
            s = nd
        else:
            tokens = model_tokens(self.swin, residual(f, nb.view(f.shape), self.residual_kind))
            p = self._bagged(tokens) if self.bagging else self.swin(tokens[None]).softmax(-1)[0, :, :, 1]
            s = combine(p, nd, self.fusion_weight)
        if self.known is None:
            return s
        dk = self.known(f.reshape(-1, f.shape[-1]))[0].view(self.rows, self.cols)
        return with_known(s, closeness(dist, dk), self.known_weight)


def labelled_items(labels: list[ImageLabel], cfg: Config) -> list[Labelled]:
    """Read each labelled image, check the label against it, map the label to block targets and
    to the labelled pixels at the model input size (what label paste copies)."""
    f, t = cfg.features, cfg.train
    out = []
    for lab in labels:
        if lab.kind is None:
            continue
        if not Path(lab.image).exists():
            raise LabelError(lab.image, "a label refers to this image, which does not exist")
        img = read_image(lab.image)
        h, w = img.shape[:2]
        if lab.width is not None and (lab.width, lab.height) != (w, h):
            raise LabelError(lab.image, f"label is for a {lab.width}x{lab.height} image but the file is {w}x{h}")
        lab.width, lab.height = w, h
        lab.validate()
        grid = BlockGrid.for_image(w, h, f.image_size, 8, f.size_multiple)
        targets = lab.block_targets(grid, t.eps_pos_real, t.eps_neg, t.box_unknown, t.box_band)
        x = prepare_image(img, f.image_size, f.size_multiple)
        out.append(Labelled(x, targets, lab.kind, Path(lab.image).name, label_region(lab, x.shape[:2])))
    return out


def label_region(lab: ImageLabel, hw: tuple[int, int]) -> np.ndarray | None:
    """The pixels a label marks, at the model input size ``hw``: the mask, the block cells or the
    inside of the boxes; None for tags."""
    from ..data.labels import rasterize_boxes
    k = lab.kind
    if k == "mask":
        m = lab.mask
    elif k == "blocks":
        m = lab.blocks.to_mask(lab.width, lab.height)
    elif k == "boxes":
        m = rasterize_boxes(lab.boxes, lab.width, lab.height)
    else:
        return None
    return cv2.resize(np.asarray(m, np.uint8), (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST) > 0


def _chosen_validation(result) -> dict:
    """The validation metrics of the kept state (synthetic pixel AP; real-defect block AP)."""
    out = {k: result.val[k] for k in SELECTION_METRICS if k in result.val}
    return out or {"val_pixel_ap": result.best_metric}


def _fingerprint(cfg: Config, normals: list[Path], labels: list[ImageLabel], init_from) -> str:
    """Identity of a training run (settings, images, labels), so a checkpoint is only resumed by
    the run that wrote it."""
    import hashlib
    import json
    lab = sorted((str(Path(x.image).resolve()), x.kind or "", len(x.boxes), x.tag or "",
                  int(x.mask.sum()) if x.mask is not None else -1) for x in labels)
    blob = json.dumps([cfg.to_dict(), sorted(str(Path(p).resolve()) for p in normals), lab,
                       str(init_from) if isinstance(init_from, (str, Path)) else None], default=str)
    return hashlib.sha1(blob.encode()).hexdigest()


@torch.no_grad()
def _with_known(block: np.ndarray, it, d: np.ndarray, entry, w_known: float, dev) -> np.ndarray:
    """A fused block map with the known-defect blocks mixed in, as inference mixes them (decision 0025)."""
    f = it.feats.to(dev).float()
    dk = entry(f.reshape(-1, f.shape[-1]))[0].view(d.shape).cpu().numpy()
    return with_known(block, closeness(d, dk), w_known).astype(np.float32)


def _held_out_label_maps(material, cfg: Config, dev, known: np.ndarray, swin, blocks, maps, masks, greys, to_map,
                         weight: float, d_ref: float):
    """(maps, grey images, block grids, masks) of the held-out real images labelled with pixel
    masks, block cells or boxes (``anomaly_map.CONTRAST_LABEL_KINDS``; a box counts its inside as
    defective) and
    of the validation split's held-out normals, made as inference makes them (fusion, known
    defects), or None without such an image: what choosing the pixel-contrast refinement on real
    defects scores (decision 0028; synthetic defects are filled regions that always reject it)."""
    real = [it for it in material.val_real if it.mask is not None and it.grey is not None and it.mask.any()]
    if not real:
        return None
    bank_t = torch.from_numpy(material.bank.features).to(dev)
    w_known = cfg.train.known_defects_weight if len(known) else 0.0
    entry = NearestEntry(known).to(dev) if w_known else None
    out_maps, out_greys, out_grids, out_masks = [], [], [], []
    for it in real:
        p, d = block_maps(swin, it, bank_t, cfg, dev)
        b = fuse(p, d, weight, d_ref)
        if w_known:
            b = _with_known(b, it, d, entry, w_known, dev)
        m = eval_mask(it.mask, cfg.output.eval_size)
        out_maps.append(to_map(b, m.shape)), out_greys.append(it.grey), out_grids.append(b.shape)
        out_masks.append(m)
    for b, mp, m, g, it in zip(blocks, maps, masks, greys, material.val):
        if it.kind == "normal":
            out_maps.append(mp), out_greys.append(g), out_grids.append(b.shape), out_masks.append(m)
    return out_maps, out_greys, out_grids, out_masks


@torch.no_grad()
def _calibrate(material, cfg: Config, dev, known: np.ndarray, val_maps, swin=None) -> dict:
    """Calibration (core/eval/calibration.py) from the validation split, after choosing the fusion
    weight of the nearest-neighbour distance on it when ``train.fusion`` is on (core/learning/fusion.py).
    ``val_maps``: the trained model's (probability, distance) block maps of ``material.val``
    (core/learning/training.py block_maps). ``known``: the known-defect blocks
    (core/learning/known_defects.py), mixed into the maps that set the scale as they will be at
    inference."""
    from ..learning.fusion import choose_weight, distance_reference, fuse
    probs, dists, masks = [], [], []
    for it, (p, d) in zip(material.val, val_maps, strict=True):
        probs.append(p)
        dists.append(d)
        masks.append(eval_mask(it.mask, cfg.output.eval_size))

    def to_map(block, hw):
        return output_map(block, hw, cfg.output)

    fusion = None
    if cfg.train.fusion:
        d_ref = distance_reference([d for d, m in zip(dists, masks) if not m.any()])
        weight, aps = choose_weight(probs, dists, masks, d_ref, to_map)
        fusion = {"weight": weight, "d_ref": d_ref, "val_pixel_ap": aps}
    else:
        weight, d_ref = 0.0, 1.0
    blocks = [fuse(p, d, weight, d_ref) for p, d in zip(probs, dists)]
    w_known = cfg.train.known_defects_weight if len(known) else 0.0
    if w_known:
        entry = NearestEntry(known).to(dev)
        for i, (it, d) in enumerate(zip(material.val, dists)):
            blocks[i] = _with_known(blocks[i], it, d, entry, w_known, dev)
    maps = [to_map(b, m.shape) for b, m in zip(blocks, masks)]
    # decision 0028: the maps' pixel-contrast refinement, chosen here or fixed, then calibrated on
    greys = [it.grey for it in material.val]
    contrast = {"beta": float(cfg.output.contrast), "choice": cfg.output.contrast_choice}
    if greys and all(g is not None for g in greys):
        grids = [b.shape for b in blocks]
        if cfg.output.contrast_choice == "validation":
            real = (None if swin is None else
                    _held_out_label_maps(material, cfg, dev, known, swin, blocks, maps, masks, greys, to_map, weight, d_ref))
            if real is not None:        # held-out real masks / boxes decide, beside the held-out normals
                contrast["beta"], contrast["val_pixel_ap"] = choose_contrast(*real, cfg.output)
                kinds = sorted({it.label_kind for it in material.val_real if it.mask is not None})
                contrast["on"] = "held-out " + " and ".join(kinds)
            else:
                contrast["beta"], contrast["val_pixel_ap"] = choose_contrast(maps, greys, grids, masks, cfg.output)
                contrast["on"] = "synthetic"
        maps = contrast_maps(maps, greys, grids, cfg.output.contrast_radius, contrast["beta"])
    out = calibrate(maps, masks)
    out["contrast"] = contrast
    if fusion is not None:
        out["fusion"] = fusion
    if w_known:
        out["known_defects"] = {"weight": w_known, "entries": int(len(known))}
    return out
