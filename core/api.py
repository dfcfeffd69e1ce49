"""The Python API: ``fit`` / ``train``, ``predict``, ``evaluate``. The CLI verbs mirror these, and
the app's training worker calls them.

Every function takes ``progress`` (a callback receiving :class:`~core.progress.ProgressEvent`;
returning ``False`` cancels) and ``cancel_event`` (a ``threading.Event``), and raises
:class:`~core.errors.Cancelled` when asked to stop.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .config import DEFAULT_PRESET, Config, preset
from .data.datasets import Sample, load_mvtec, load_sample_mask
from .data.images import list_images, read_image, write_png
from .data.labels import ImageLabel
from .deploy.inference import Predictor
from .deploy.modelfile import ModelBundle
from .device import is_oom, oom_message, resolve_device
from .errors import ConfigError, DeviceError, InputError
from .eval.anomaly_map import colorize, overlay
from .fileio import atomic_write_text, ensure_writable, safe_name, save_npy
from .progress import ProgressCallback, Reporter
from .methods.semirest import checkpoint_path  # noqa: F401  (part of the API: where a run's checkpoint is)


# Free space wanted before starting: a cpu-preset model and its checkpoint take a few MB to tens of
# MB; heatmaps and overlays a few hundred KB per image. A floor, not a promise (writes still check).
MIN_FREE_TRAIN_BYTES = 32 << 20
MIN_FREE_PREDICT_BYTES = 8 << 20


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------
def fit(normal_paths: list[Path], out: str | Path, cfg: Config | None = None, device: str = "auto",
        labels: list[ImageLabel] | None = None, progress: ProgressCallback | None = None,
        cancel_event: threading.Event | None = None, resume: bool = True,
        record: dict | None = None, init_from: str | Path | ModelBundle | None = None) -> ModelBundle:
    """Train a model of ``cfg.method`` (core/methods/__init__.py) from normal images (and the labelled
    images the method can use) and save it to ``out``.

    SemiREST (core/methods/semirest.py): stage 1 trains with Eq. 11 on normals, synthetic anomalies
    and fully labelled images (masks, block maps, normal tags). Stage 2, when some labels leave
    blocks unknown (boxes, defective tags), fine-tunes with ResMixMatch (Algorithm 1) from the
    stage-1 model.

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
    from .deploy.precision import check_precision, resolve_precision
    check_precision(resolve_precision(cfg.train.precision, dev), dev)   # float16 on a CPU: now
    t0 = time.perf_counter()
    normal_paths = [Path(p) for p in normal_paths]
    if len(normal_paths) < 2:
        raise InputError(normal_paths[0] if normal_paths else None,
                         f"training needs at least 2 normal images, got {len(normal_paths)}")
    from .methods import detector_class
    from .methods.detector import FitJob
    job = FitJob(normal_paths, out, cfg, device, dev, list(labels or []), report, dict(record or {}), t0,
                 resume, init_from)
    try:
        return detector_class(cfg.method).fit(job)
    except RuntimeError as exc:
        if is_oom(exc):
            raise DeviceError(oom_message(dev)) from exc
        raise


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


def _load(model: str | Path | ModelBundle, contrast: float | None = None) -> ModelBundle:
    """The model; with ``contrast``, its maps refined by pixel contrast with that beta instead of its
    own ``output.contrast`` (decision 0028: post-processing only, so any model takes it)."""
    b = model if isinstance(model, ModelBundle) else ModelBundle.load(model)
    if contrast is None:
        return b
    return dataclasses.replace(b, config=b.config.updated({"output": {"contrast": contrast}}).validate())


def _torch_only(runtime: str, contrast: float | None) -> None:
    if contrast is not None and runtime != "torch":
        raise ConfigError(f"--contrast applies to the torch runtime; an export refines its maps as its model did "
                          f"(set output.contrast before `semirest export`)")


# Images scored together by predict and evaluate (Predictor.predict_batch): on a GPU a batch
# is several times faster per image; on the CPU it costs nothing (bench/speed.py).
PREDICT_BATCH = 8


def predict(model: str | Path | ModelBundle, images: str | Path | list, out_dir: str | Path | None = None,
            device: str = "auto", progress: ProgressCallback | None = None,
            cancel_event: threading.Event | None = None, maps: str = "none",
            runtime: str = "torch", precision: str = "float32", contrast: float | None = None) -> list[ImageResult]:
    """Score images (a folder or a list of paths); with ``out_dir`` write heatmaps, overlays and
    ``scores.csv``; ``maps="npy"`` also writes each raw float32 map at the image's own size as
    ``out_dir/<stem>.npy``. Unreadable images stop the run with an error naming the file.

    ``runtime="onnxruntime"`` or ``"openvino"``: ``model`` is a folder written by ``semirest export``
    (core/deploy/export.py), run with that engine on the CPU; the outputs are written the same way.
    ``precision``: the torch runtime's Swin precision (core/deploy/precision.py). ``contrast``: the
    maps' pixel-contrast beta instead of the model's (core/eval/anomaly_map.refine_by_contrast)."""
    _torch_only(runtime, contrast)
    if runtime != "torch" and precision != "float32":
        raise ConfigError(f"precision {precision} applies to the torch runtime; an export runs as exported")
    if maps not in ("none", "npy"):
        raise ConfigError(f"maps: expected none or npy, got {maps!r}")
    if out_dir:
        ensure_writable(out_dir, MIN_FREE_PREDICT_BYTES)     # before any image is scored
    if runtime == "torch":
        bundle = _load(model, contrast)
        summary, calibration = bundle.summary(), bundle.calibration
    else:
        from .deploy.export import load_runtime
        pred = load_runtime(model, runtime)
        summary, calibration = pred.summary(), pred.calibration
    report = Reporter(progress, cancel_event)
    paths = image_paths(images)
    if runtime == "torch":
        dev = resolve_device(device)
        pred = Predictor(bundle, dev, precision=precision)
        report.log(f"model: {summary}; device {dev}" + (f", {precision}" if precision != "float32" else ""))
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
    # metrics of the same block maps refined with other pixel-contrast betas (``also_contrast``)
    by_contrast: dict[float, dict] = field(default_factory=dict)


def evaluate(model: str | Path | ModelBundle, data: str | Path, category: str | None = None,
             device: str = "auto", progress: ProgressCallback | None = None,
             cancel_event: threading.Event | None = None, samples: list[Sample] | None = None,
             bagging: bool | None = None, runtime: str = "torch", precision: str = "float32",
             contrast: float | None = None, also_contrast: Sequence[float] = ()) -> EvalResult:
    """Pixel AP, PRO (FPR <= 0.3, normalised), pixel AUROC and image AUROC on the test split
    (or on ``samples``), scored as ``../shared/tools/metrics.py`` and the MVTec protocol score:
    each map resized (bilinear) to its mask's own size, pixels of all images pooled. When the
    test images differ in size, every map and mask goes to the most common size instead (maps
    bilinear, masks nearest), so that the pooled arrays stack.

    ``runtime="onnxruntime"`` or ``"openvino"``: ``model`` is a folder written by ``semirest
    export``, scored as its runtime gives the maps (an int8 export's accuracy, say). ``contrast``: as
    :func:`predict`'s.

    ``also_contrast``: also score the maps refined by pixel contrast with each of these betas
    (decision 0028), from the same block maps: ``EvalResult.by_contrast[beta]``. One pass over the
    images instead of one per beta; the image scores, which the refinement leaves alone, are shared."""
    from .eval.anomaly_map import image_maps
    from .eval.metrics import evaluate as metric_eval
    _torch_only(runtime, contrast)
    if also_contrast and runtime != "torch":
        raise ConfigError("also_contrast needs the model's block maps: the torch runtime")
    if runtime == "torch":
        pred = Predictor(_load(model, contrast), resolve_device(device), bagging=bagging, precision=precision)
    elif precision != "float32":
        raise ConfigError(f"precision {precision} applies to the torch runtime; an export runs as exported")
    else:
        from .deploy.export import load_runtime
        pred = load_runtime(model, runtime)
    report = Reporter(progress, cancel_event)
    if samples is None:
        samples = load_mvtec(data, category).test
    if not samples:
        raise InputError(Path(data), "no test images to evaluate on")
    # The model's own beta is scored anyway; an export runtime has no cfg (and no also_contrast).
    own = float(pred.cfg.output.contrast) if also_contrast else None
    others = [float(b) for b in also_contrast if float(b) != own]
    maps, masks, scores, times = [], [], [], []
    refined: dict[float, list[np.ndarray]] = {b: [] for b in others}
    for start in range(0, len(samples), PREDICT_BATCH):
        part = samples[start:start + PREDICT_BATCH]
        imgs = [read_image(s.path) for s in part]
        gts = [load_sample_mask(s, img.shape[:2]) for s, img in zip(part, imgs)]
        for s, img, gt, pr in zip(part, imgs, gts, pred.predict_batch(imgs, [gt.shape for gt in gts])):
            maps.append(pr.anomaly_map)
            masks.append(gt)
            scores.append((s.name, pr.score, s.is_anomalous))
            times.append(pr.timings_ms)
            if others:
                for b, m in image_maps(pr.block_map, img.shape[:2], pred.cfg.output, others, gt.shape, img)[0].items():
                    refined[b].append(m)
            report("eval", len(scores), len(samples), s.name)
    image_scores = np.array([x[1] for x in scores])
    by_contrast = {}
    for b, m in refined.items():
        m, k = pool_sizes(m, masks)
        by_contrast[b] = metric_eval(np.stack(m), np.stack(k), image_scores)
    maps, masks = pool_sizes(maps, masks)
    metrics = metric_eval(np.stack(maps), np.stack(masks), image_scores)
    if own is not None and own in map(float, also_contrast):
        by_contrast[own] = metrics
    med = {k: float(np.median([t[k] for t in times])) for k in times[0]}
    return EvalResult(metrics, scores, med, len(samples), by_contrast)


@dataclass
class ProtocolRun:
    """One evaluation protocol run (core/data/protocols.py): its split, the model and the test result."""
    split: object                  # core.data.protocols.ProtocolSplit
    dataset: object                # core.data.datasets.MVTecCategory the split was drawn from
    model_path: Path
    bundle: ModelBundle
    result: EvalResult
    train_s: float | None          # seconds spent training here (None: the model existed)


def run_protocol(data: str | Path, category: str | None, protocol: str, model: str | Path,
                 cfg: Config | None = None, device: str = "auto", seed: int = 0, n_anomalous: int = 10,
                 init: str | Path | None = None, pool: int | None = None, retrain: bool = False,
                 progress: ProgressCallback | None = None, bagging: bool | None = None,
                 precision: str = "float32", contrast: float | None = None,
                 also_contrast: Sequence[float] = ()) -> ProtocolRun:
    """The paper's protocols, one code path for ``semirest eval --protocol`` and the benchmark:
    move ``n_anomalous`` defective test images (seeded, stratified; the first of a draw of
    ``pool``) into training with ``protocol``'s labels, train ``model`` from the category's normals
    and those labels (unless it exists and not ``retrain``), and evaluate on the rest.

    ``init``: semi and tag start from this (unsupervised) model, trained first when absent.
    ``also_contrast``: as :func:`evaluate`'s."""
    from .data.protocols import make_protocol
    cfg = (cfg or preset(DEFAULT_PRESET)).validate()
    ds = load_mvtec(data, category)
    # block labels are painted on the model's grid (the app's default grid is the cpu preset's)
    split = make_protocol(ds, protocol, n_anomalous, seed, pool=pool,
                          block_grid=(cfg.features.image_size, 8), eps_pos=cfg.train.eps_pos_real)
    model = Path(model)
    init = Path(init) if init else None
    train_s = None
    if retrain or not model.exists():
        if protocol == "unsup" and not retrain and not model.exists():
            raise InputError(model, "no such model to evaluate (train one with `semirest train`)")
        if init is not None and not init.exists():
            fit(ds.train, init, cfg, device, progress=progress,
                record={"data": str(ds.root), "category": ds.name, "protocol": "unsup"})
        t0 = time.perf_counter()
        bundle = fit(ds.train, model, cfg, device, labels=split.labels, progress=progress, resume=not retrain,
                     init_from=init, record={"data": str(ds.root), "category": ds.name, "protocol": protocol,
                                             "seed": seed, "moved": [str(p) for p in split.moved]})
        train_s = time.perf_counter() - t0
    else:
        bundle = _load(model)
    res = evaluate(bundle, data, samples=split.test, device=device, progress=progress, bagging=bagging,
                   precision=precision, contrast=contrast, also_contrast=also_contrast)
    return ProtocolRun(split, ds, model, bundle, res, train_s)


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
