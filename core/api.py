"""The Python API: ``fit`` / ``train``, ``predict``, ``evaluate``. The CLI verbs mirror these, and
the app's training worker calls them.

Every function takes ``progress`` (a callback receiving :class:`~core.progress.ProgressEvent`;
returning ``False`` cancels) and ``cancel_event`` (a ``threading.Event``), and raises
:class:`~core.errors.Cancelled` when asked to stop.
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from . import __version__, preflight
from .calibration import calibrate
from .config import DEFAULT_PRESET, SELECTION_METRICS, Config, plan_line, preset
from .datasets import Sample, load_mvtec, load_sample_mask, prepare_image, read_images, split_train_val
from .device import is_oom, oom_message, resolve_device
from .errors import ConfigError, DeviceError, InputError, LabelError
from .features import Encoder
from .fileio import atomic_write_text, ensure_writable, safe_name, save_npy
from .geometry import BlockGrid
from .images import list_images, read_image, write_png
from .inference import Predictor, eval_hw, postprocess
from .labels import BLOCK_UNKNOWN, ImageLabel
from .labelpaste import Labelled
from .modelfile import ModelBundle
from .progress import ProgressCallback, Reporter
from .bank import build_bank
from .realval import split_labelled
from .trainset import build_material
from .training import Trainer, block_maps, build_model


# Free space wanted before starting: a cpu-preset model and its checkpoint take a few MB to tens of
# MB; heatmaps and overlays a few hundred KB per image. A floor, not a promise (writes still check).
MIN_FREE_TRAIN_BYTES = 32 << 20
MIN_FREE_PREDICT_BYTES = 8 << 20


def checkpoint_path(out: Path) -> Path:
    return out.with_name(out.name + ".ckpt")


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------
def _labelled_items(labels: list[ImageLabel], cfg: Config) -> list[Labelled]:
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
        out.append(Labelled(x, targets, lab.kind, Path(lab.image).name, _label_region(lab, x.shape[:2])))
    return out


def _label_region(lab: ImageLabel, hw: tuple[int, int]) -> np.ndarray | None:
    """The pixels a label marks, at the model input size ``hw``: the mask, the block cells or the
    inside of the boxes; None for tags."""
    from .labels import rasterize_boxes
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


def fit(normal_paths: list[Path], out: str | Path, cfg: Config | None = None, device: str = "auto",
        labels: list[ImageLabel] | None = None, progress: ProgressCallback | None = None,
        cancel_event: threading.Event | None = None, resume: bool = True,
        record: dict | None = None, init_from: str | Path | ModelBundle | None = None) -> ModelBundle:
    """Train a model from normal images (and optional labelled images) and save it to ``out``.

    Stage 1 trains with Eq. 11 on normals, synthetic anomalies and fully labelled images (masks,
    block maps, normal tags). Stage 2, when some labels leave blocks unknown (boxes, defective
    tags), fine-tunes with ResMixMatch (Algorithm 1) from the stage-1 model.

    ``init_from``: start from an earlier model (its Swin weights, and its memory bank when it was
    built from the same normal images). With no fully labelled images, stage 1 is then skipped:
    this is the paper's "semi-supervised model initialised from the unsupervised one".

    A resumable checkpoint ``<out>.ckpt`` is kept while training (and after a cancel or crash);
    ``resume=True`` continues from it. It is removed once the model file is written.
    """
    cfg = (cfg or preset(DEFAULT_PRESET)).validate()
    out = Path(out)
    ensure_writable(out.parent, MIN_FREE_TRAIN_BYTES)     # now, not after hours of training
    report = Reporter(progress, cancel_event)
    dev = resolve_device(device)
    t0 = time.perf_counter()
    normal_paths = [Path(p) for p in normal_paths]
    if len(normal_paths) < 2:
        raise InputError(normal_paths[0] if normal_paths else None,
                         f"training needs at least 2 normal images, got {len(normal_paths)}")
    if cfg.method == "patchcore":
        return _fit_patchcore(normal_paths, out, cfg, dev, labels, report, record, t0)
    report.log(plan_line(cfg, dev.type))
    ckpt = checkpoint_path(out)
    if not resume:
        ckpt.unlink(missing_ok=True)
    if preflight.needed(cfg, normal_paths) and not ckpt.exists():
        preflight.dry_run(normal_paths, labels or [], cfg, device, report)   # a resumed run passed it
    try:
        fcfg = cfg.features
        train_p, val_p = split_train_val(normal_paths, cfg.train.val_fraction, cfg.train.val_min_images,
                                         cfg.train.seed)
        report.log(f"device: {dev}; {len(train_p)} normal images for the bank, {len(val_p)} held out "
                   f"for validation")
        train_imgs = [prepare_image(i, fcfg.image_size, fcfg.size_multiple) for i in read_images(train_p)]
        val_imgs = [prepare_image(i, fcfg.image_size, fcfg.size_multiple) for i in read_images(val_p)]
        labelled = _labelled_items(labels or [], cfg)
        labelled, labelled_val = split_labelled(labelled, cfg.train.real_val_fraction,
                                                cfg.train.real_val_min_labelled, cfg.train.seed)
        if labelled_val:
            report.log(f"{len(labelled_val)} of {len(labelled) + len(labelled_val)} labelled defective images "
                       f"held out to validate on real defects: {', '.join(x.name for x in labelled_val)}")
        init = _load(init_from) if init_from is not None else None
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
            from .pseudomask import PseudoMaskTrainer, pseudo_masks   # decision 0015
            start = build_model(material.feature_dim, cfg, material.residual_scale).to(dev)
            start.load_state_dict(result.state)
            n = pseudo_masks(start, material, cfg, dev, cfg.semi.pseudo_threshold)
            report.log(f"boxes: pseudo-masks for {n} images from the start model")
            boxes = PseudoMaskTrainer(cfg, material, dev, report, checkpoint=ckpt.with_suffix(".boxes.ckpt"),
                                      init_state=result.state, fingerprint=fp)
            boxes.fit_started = t0
            trainers.append(boxes)
            result = boxes.run(previous=result)
            has_unknown = any((d.targets == BLOCK_UNKNOWN).any() for d in material.defective)
        if has_unknown:
            from .resmixmatch import ResMixMatchTrainer   # boxes / defective tags: Algorithm 1
            semi = ResMixMatchTrainer(cfg, material, dev, report, checkpoint=ckpt.with_suffix(".semi.ckpt"),
                                      init_state=result.state, fingerprint=fp)
            semi.fit_started = t0
            trainers.append(semi)
            result = semi.run(previous=result)
        swin = trainer.model
        swin.load_state_dict(result.state)
        calib = _calibrate(swin, material, cfg, dev)
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
        label_counts: dict[str, int] = {}
        label_seconds: dict[str, float] = {}
        estimated: dict[str, float] = {}     # the estimated part (core/labelcost.py), kept apart
        for lab in labels or []:
            if lab.kind:
                label_counts[lab.kind] = label_counts.get(lab.kind, 0) + 1
                label_seconds[lab.kind] = label_seconds.get(lab.kind, 0.0) + sum(lab.seconds.values())
                if lab.seconds_estimated:
                    estimated[lab.kind] = estimated.get(lab.kind, 0.0) + sum(lab.seconds_estimated.values())
        bundle = ModelBundle(
            config=cfg, backbone=material.backbone, feature_dim=material.feature_dim,
            bank_state=bank_state, swin_state={k: v.cpu() for k, v in result.state.items()},
            residual_scale=material.residual_scale,
            validation={**_chosen_validation(result), "step": result.best_step, "history": result.history,
                        "real_defect_images": [x.name for x in labelled_val]},
            calibration=calib,
            training={"created": _dt.datetime.now().isoformat(timespec="seconds"), "version": __version__,
                      "device": str(dev), "device_name": _device_name(dev),
                      # every process of a resumed run, not only the last one
                      "seconds": max(x.earlier_fit_seconds for x in trainers) + time.perf_counter() - t0,
                      "train_seconds": result.seconds, "steps": result.steps,
                      "normal_images": len(train_p), "val_images": len(val_p), "bank_images": bank_names,
                      "init_from": str(init_from) if isinstance(init_from, (str, Path)) else None,
                      "synthetic_images": len(material.synthetic), "labels": label_counts,
                      "label_seconds": label_seconds, "label_seconds_estimated": estimated,
                      **(record or {})})
        bundle.save(out)
        ckpt.unlink(missing_ok=True)
        ckpt.with_suffix(".semi.ckpt").unlink(missing_ok=True)
        ckpt.with_suffix(".boxes.ckpt").unlink(missing_ok=True)
        report("done", 1, 1, f"saved {out}", val_pixel_ap=result.best_metric)
        return bundle
    except RuntimeError as exc:
        if is_oom(exc):
            raise DeviceError(oom_message(dev)) from exc
        raise


def _chosen_validation(result) -> dict:
    """The validation metrics of the kept state (synthetic pixel AP; real-defect block AP)."""
    out = {k: result.val[k] for k in SELECTION_METRICS if k in result.val}
    return out or {"val_pixel_ap": result.best_metric}


def _fit_patchcore(normal_paths: list[Path], out: Path, cfg: Config, dev: torch.device,
                   labels: list[ImageLabel] | None, report: Reporter, record: dict | None,
                   t0: float) -> ModelBundle:
    """PatchCore (core/patchcore.py): a bank of every training normal, calibrated leave-one-out."""
    from .methods import USES_LABELS
    from .patchcore import PatchCore
    used = [lab for lab in labels or [] if lab.kind and not (lab.kind == "tag" and lab.tag == "normal")]
    if used and not USES_LABELS["patchcore"]:
        raise ConfigError(f"PatchCore learns from normal images only; {len(used)} labelled defective "
                          f"image(s) were given (train SemiREST to use them, or leave the labels out)")
    # Images tagged normal are more normals: PatchCore can use those.
    extra = [Path(lab.image) for lab in labels or [] if lab.kind == "tag" and lab.tag == "normal"]
    paths = normal_paths + [p for p in extra if p not in normal_paths]
    try:
        images = read_images(paths)
        report.log(f"device: {dev}; PatchCore bank from {len(images)} normal images")
        encoder = Encoder(cfg.features, dev)
        pc = PatchCore(cfg, encoder).fit(images, tick=report.tick("coreset", "greedy coreset"))
        report.log(f"memory bank: {len(pc.bank)} entries")
        calib = pc.calibration(images, cfg.train.seed)
        bundle = ModelBundle(
            config=cfg, backbone=encoder.backbone_name, feature_dim=encoder.dim,
            bank_state=pc.bank.state(), swin_state={}, residual_scale=1.0,
            validation={}, calibration=calib,
            training={"created": _dt.datetime.now().isoformat(timespec="seconds"), "version": __version__,
                      "method": "patchcore", "device": str(dev), "device_name": _device_name(dev),
                      "seconds": time.perf_counter() - t0, "train_seconds": 0.0, "steps": 0,
                      "normal_images": len(images), "val_images": 0,
                      "bank_images": [p.name for p in paths], "labels": {}, "label_seconds": {},
                      **(record or {})})
        bundle.save(out)
        report("done", 1, 1, f"saved {out}")
        return bundle
    except RuntimeError as exc:
        if is_oom(exc):
            raise DeviceError(oom_message(dev)) from exc
        raise


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


def _device_name(dev: torch.device) -> str:
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"


@torch.no_grad()
def _calibrate(model, material, cfg: Config, dev) -> dict:
    """Calibration (core/calibration.py) from the validation split, after choosing the fusion
    weight of the nearest-neighbour distance on it when ``train.fusion`` is on (core/fusion.py)."""
    from .fusion import choose_weight, distance_reference, fuse
    bank_t = torch.from_numpy(material.bank.features).to(dev)
    probs, dists, masks = [], [], []
    model.eval()
    for it in material.val:
        p, d = block_maps(model, it, bank_t, cfg, dev)
        probs.append(p)
        dists.append(d)
        h, w = it.mask.shape
        ev = eval_hw(w, h, cfg.output.eval_size)
        masks.append(cv2.resize(it.mask.astype(np.float32), (ev[1], ev[0])) > 0.5)

    def to_map(block, hw):
        return postprocess(block, hw, cfg.output.gaussian_sigma, cfg.output.upsample)

    fusion = None
    if cfg.train.fusion:
        d_ref = distance_reference([d for d, m in zip(dists, masks) if not m.any()])
        weight, aps = choose_weight(probs, dists, masks, d_ref, to_map)
        fusion = {"weight": weight, "d_ref": d_ref, "val_pixel_ap": aps}
    else:
        weight, d_ref = 0.0, 1.0
    maps = [to_map(fuse(p, d, weight, d_ref), m.shape) for p, d, m in zip(probs, dists, masks)]
    out = calibrate(maps, masks)
    if fusion is not None:
        out["fusion"] = fusion
    return out


def train(data: str | Path, category: str | None, out: str | Path, cfg: Config | None = None,
          device: str = "auto", labels: list[ImageLabel] | None = None,
          progress: ProgressCallback | None = None, cancel_event: threading.Event | None = None,
          resume: bool = True, init_from: str | Path | ModelBundle | None = None) -> ModelBundle:
    """Train on an MVTec-layout category's ``train/good`` (plus optional labelled images)."""
    ds = load_mvtec(data, category, need_test=False)
    return fit(ds.train, out, cfg, device, labels, progress, cancel_event, resume,
               record={"data": str(ds.root), "category": ds.name}, init_from=init_from)


# --------------------------------------------------------------------------------------------
# Prediction
# --------------------------------------------------------------------------------------------
@dataclass
class ImageResult:
    path: Path
    score: float
    flagged: bool
    heatmap: Path | None = None
    overlay: Path | None = None
    map_file: Path | None = None
    timings_ms: dict = field(default_factory=dict)


def _load(model: str | Path | ModelBundle) -> ModelBundle:
    return model if isinstance(model, ModelBundle) else ModelBundle.load(model)


COLORMAPS = {"jet": cv2.COLORMAP_JET, "turbo": cv2.COLORMAP_TURBO, "inferno": cv2.COLORMAP_INFERNO,
             "viridis": cv2.COLORMAP_VIRIDIS, "hot": cv2.COLORMAP_HOT}


def display_values(amap: np.ndarray, scale: float, floor: float = 0.0) -> np.ndarray:
    """The model's fixed display range [floor, scale] -> [0, 1] (never per-image normalisation):
    ``floor`` is where normal parts sit (calibration's ``map_floor``), so they show as calm."""
    top = max(scale, floor + 1e-12)
    return np.clip((amap - floor) / (top - floor), 0, 1)


def colorize(amap: np.ndarray, scale: float, colormap: str = "jet", floor: float = 0.0) -> np.ndarray:
    """Map -> RGB heatmap with the model's fixed scale (not per-image normalisation)."""
    v = display_values(amap, scale, floor)
    bgr = cv2.applyColorMap((v * 255).astype(np.uint8), COLORMAPS[colormap])
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def overlay_alpha(amap: np.ndarray, scale: float, opacity: float, floor: float = 0.0) -> np.ndarray:
    """Per-pixel opacity of the overlay: calm regions stay transparent."""
    return opacity * display_values(amap, scale, floor)


def overlay(img: np.ndarray, amap: np.ndarray, scale: float, opacity: float = 0.5,
            colormap: str = "jet", floor: float = 0.0) -> np.ndarray:
    heat = colorize(amap, scale, colormap, floor)
    alpha = overlay_alpha(amap, scale, opacity, floor)[..., None]
    return (img * (1 - alpha) + heat * alpha).astype(np.uint8)


# Images scored together by predict and evaluate (Predictor.predict_batch): on a GPU a batch
# is several times faster per image; on the CPU it costs nothing (bench/speed.py).
PREDICT_BATCH = 8


def predict(model: str | Path | ModelBundle, images: str | Path | list, out_dir: str | Path | None = None,
            device: str = "auto", progress: ProgressCallback | None = None,
            cancel_event: threading.Event | None = None, maps: str = "none",
            runtime: str = "torch") -> list[ImageResult]:
    """Score images (a folder or a list of paths); with ``out_dir`` write heatmaps, overlays and
    ``scores.csv``; ``maps="npy"`` also writes each raw float32 map at the image's own size as
    ``out_dir/<stem>.npy``. Unreadable images stop the run with an error naming the file.

    ``runtime="onnxruntime"`` or ``"openvino"``: ``model`` is a folder written by ``semirest export``
    (core/export.py), run with that engine on the CPU; the outputs are written the same way."""
    if maps not in ("none", "npy"):
        raise ConfigError(f"maps: expected none or npy, got {maps!r}")
    if out_dir:
        ensure_writable(out_dir, MIN_FREE_PREDICT_BYTES)     # before any image is scored
    if runtime == "torch":
        bundle = _load(model)
        summary, calibration = bundle.summary(), bundle.calibration
    else:
        from .export import load_runtime
        pred = load_runtime(model, runtime)
        summary, calibration = pred.summary(), pred.calibration
    report = Reporter(progress, cancel_event)
    paths = image_paths(images)
    if runtime == "torch":
        dev = resolve_device(device)
        report.log(f"model: {summary}; device {dev}")
        pred = Predictor(bundle, dev)
    else:
        report.log(f"model: {summary}")
    style = MapStyle.of(calibration, maps)
    out = Path(out_dir) if out_dir else None
    stems = output_stems(paths)
    results = []
    pending: list[tuple[int, np.ndarray]] = []

    def flush():
        """Score the images read so far in one batch, then write their outputs."""
        preds = pred.predict_batch([img for _, img in pending], [img.shape[:2] for _, img in pending])
        for (i, img), pr in zip(pending, preds):
            results.append(write_outputs(out, paths[i], stems[i], img, pr, style))
            report("predict", len(results), len(paths), safe_name(paths[i].name), score=pr.score)
        pending.clear()

    for i, p in enumerate(paths):
        try:
            img = read_image(p)
        except Exception:
            if pending:
                flush()     # the images before the unreadable one keep their outputs
            raise
        pending.append((i, img))
        if len(pending) == PREDICT_BATCH:
            flush()
    if pending:
        flush()
    if getattr(pred, "other_sizes", None):
        sizes = ", ".join(f"{w}x{h}" for w, h in sorted(pred.other_sizes))
        report.log(f"the export is for {pred.image_wh[0]}x{pred.image_wh[1]} images; images of "
                   f"{sizes} were resized to its input, their maps differ from the torch model's")
    if out is not None:
        write_scores(out, results, style.threshold)
    return results


def image_paths(images: str | Path | list) -> list[Path]:
    """A folder's images (sorted, as list_images gives them) or the given list of paths."""
    if isinstance(images, (str, Path)):
        folder = Path(images)
        if not folder.is_dir():
            raise InputError(folder, "not a folder of images")
        paths = list_images(folder)
        if not paths:
            raise InputError(folder, "holds no images (.png, .jpg, .bmp, .tif)")
        return paths
    return [Path(p) for p in images]


def output_stems(paths: list[Path]) -> list[str]:
    """The output name stem of each image, unique within the run and decided by the order of
    ``paths`` alone (so a cluster run, which scores them in any order, names them the same)."""
    used: set[str] = set()
    out = []
    for p in paths:
        # an undecodable name (bad\xff.png) gives bad_xff_heatmap.png: valid text everywhere
        stem = p.stem if safe_name(p.stem) == p.stem else safe_name(p.stem).replace("\\", "_")
        out.append(_free_stem(stem, p.suffix, used))
    return out


@dataclass(frozen=True)
class MapStyle:
    """How a map becomes outputs: the model's fixed display range, its image threshold, and
    whether the raw map is kept (``maps="npy"``)."""
    scale: float
    floor: float
    threshold: float
    maps: str = "none"

    @classmethod
    def of(cls, calibration: dict, maps: str = "none") -> "MapStyle":
        return cls(calibration.get("map_scale", 1.0), calibration.get("map_floor", 0.0),
                   calibration.get("image_threshold", 0.5), maps)


def write_outputs(out: Path | None, path: Path, stem: str, img: np.ndarray, pr, style: MapStyle) -> ImageResult:
    """One scored image -> its result; with ``out``, also its heatmap, overlay and (``npy``) raw map,
    each written atomically under ``out/<stem>...``."""
    res = ImageResult(path, pr.score, pr.score >= style.threshold, timings_ms=pr.timings_ms)
    if out is not None:
        res.heatmap = out / f"{stem}_heatmap.png"
        res.overlay = out / f"{stem}_overlay.png"
        write_png(res.heatmap, colorize(pr.anomaly_map, style.scale, floor=style.floor))
        write_png(res.overlay, overlay(img, pr.anomaly_map, style.scale, floor=style.floor))
        if style.maps == "npy":
            res.map_file = out / f"{stem}.npy"
            save_npy(res.map_file, pr.anomaly_map.astype(np.float32))
    return res


def write_scores(out: Path, results: list[ImageResult], threshold: float) -> None:
    """``out/scores.csv``: one row per image, in the order given."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["image", "score", "flagged", "image_threshold", "heatmap", "overlay", "map"])
    for r in results:
        w.writerow([safe_name(r.path), f"{r.score:.6f}", int(r.flagged), f"{threshold:.6f}",
                    r.heatmap.name if r.heatmap else "", r.overlay.name if r.overlay else "",
                    r.map_file.name if r.map_file else ""])
    atomic_write_text(out / "scores.csv", buf.getvalue())


def _free_stem(stem: str, suffix: str, used: set[str]) -> str:
    """``stem`` for the output names, made unique: a.png and a.jpg give a and a_jpg (and a_jpg_2
    should a_jpg be taken too, e.g. by a.jpg beside a_jpg.png)."""
    cand = stem if stem not in used else f"{stem}_{suffix.lstrip('.')}"
    n = 2
    while cand in used:
        cand, n = f"{stem}_{suffix.lstrip('.')}_{n}", n + 1
    used.add(cand)
    return cand


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------
@dataclass
class EvalResult:
    metrics: dict
    scores: list[tuple[str, float, bool]]          # (sample name, image score, is anomalous)
    timings_ms: dict                              # median ms per stage
    n_images: int


def evaluate(model: str | Path | ModelBundle, data: str | Path, category: str | None = None,
             device: str = "auto", progress: ProgressCallback | None = None,
             cancel_event: threading.Event | None = None, samples: list[Sample] | None = None,
             bagging: bool | None = None) -> EvalResult:
    """Pixel AP, PRO (FPR <= 0.3, normalised), pixel AUROC and image AUROC on the test split
    (or on ``samples``), scored as ``../shared/tools/metrics.py`` and the MVTec protocol score:
    each map resized (bilinear) to its mask's own size, pixels of all images pooled. When the
    test images differ in size, every map and mask goes to the most common size instead (maps
    bilinear, masks nearest), so that the pooled arrays stack."""
    from .metrics import evaluate as metric_eval
    bundle = _load(model)
    report = Reporter(progress, cancel_event)
    if samples is None:
        samples = load_mvtec(data, category).test
    if not samples:
        raise InputError(Path(data), "no test images to evaluate on")
    pred = Predictor(bundle, resolve_device(device), bagging=bagging)
    maps, masks, scores, times = [], [], [], []
    for start in range(0, len(samples), PREDICT_BATCH):
        part = samples[start:start + PREDICT_BATCH]
        imgs = [read_image(s.path) for s in part]
        gts = [load_sample_mask(s, img.shape[:2]) for s, img in zip(part, imgs)]
        for s, gt, pr in zip(part, gts, pred.predict_batch(imgs, [gt.shape for gt in gts])):
            maps.append(pr.anomaly_map)
            masks.append(gt)
            scores.append((s.name, pr.score, s.is_anomalous))
            times.append(pr.timings_ms)
            report("eval", len(scores), len(samples), s.name)
    maps, masks = pool_sizes(maps, masks)
    metrics = metric_eval(np.stack(maps), np.stack(masks), np.array([x[1] for x in scores]))
    med = {k: float(np.median([t[k] for t in times])) for k in times[0]}
    return EvalResult(metrics, scores, med, len(samples))


def pool_sizes(maps: list[np.ndarray], masks: list[np.ndarray]) -> tuple[list, list]:
    """Maps and masks at their own sizes -> all at the most common size (maps bilinear, masks
    nearest), unchanged when they already agree (the usual case)."""
    shapes = [m.shape for m in masks]
    if len(set(shapes)) <= 1:
        return maps, masks
    h, w = max(set(shapes), key=shapes.count)
    maps = [m if m.shape == (h, w) else cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR) for m in maps]
    masks = [k if k.shape == (h, w) else cv2.resize(k.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
             for k in masks]
    return maps, masks
