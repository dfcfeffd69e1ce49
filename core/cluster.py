"""``semirest predict --ray [ADDRESS]``: inspection of many images as a Ray Data pipeline.

The image list is a dataset of (path, output stem) rows; ``map_batches`` runs them through actors
that each load the model once (one GPU per actor when the cluster has GPUs, else CPU actors),
read each image, score a batch with ``Predictor.predict_batch`` and write its outputs with the
same helper as the single-process :func:`core.api.predict` (:func:`core.api.write_outputs`). The
driver only gathers scores, shows progress and writes ``scores.csv`` in the single-process order.

Resume: after an image's outputs are written its actor writes a small marker
``OUT/.semirest-done/<stem>.json`` (score, output names, model identity). A rerun skips every image
whose marker matches this model and whose outputs still exist; ``scores.csv`` is rebuilt from the
markers of every image, so it always lists all of them.

Every node must read the model file and the images and write to ``OUT`` at the same paths (a
shared folder): the actors open them where they run. Ray is imported lazily (``pip install
.[cluster]``).
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from .errors import ConfigError, SemiRestError
from .fileio import atomic_write_text, ensure_writable, safe_name

DONE_DIR = ".semirest-done"
INSTALL_HINT = "Ray is not installed: pip install .[cluster] (or pip install \"ray[data]\") to use --ray"


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401  (the pipeline needs the data extra, not just the core)
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return ray


def model_identity(model: Path) -> dict:
    """What a marker must match to be reused: the model file's resolved path, size and mtime."""
    st = model.stat()
    return {"model": str(model.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _marker(out: Path, stem: str) -> Path:
    return out / DONE_DIR / f"{stem}.json"


def _read_done(out: Path, path: Path, stem: str, ident: dict, maps: str) -> dict | None:
    """The marker of ``stem`` when it is this image's, from this model, and its outputs exist."""
    try:
        m = json.loads(_marker(out, stem).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if m.get("identity") != ident or m.get("image") != str(path):
        return None
    names = [m.get("heatmap"), m.get("overlay")] + ([m.get("map")] if maps == "npy" else [])
    if not all(n and (out / n).is_file() for n in names):
        return None
    return m


class _Scorer:
    """A Ray actor: loads the model once, then scores batches of rows and writes their outputs."""

    def __init__(self, model: str, device: str, out: str, maps: str, ident: dict, precision: str = "float32"):
        from .api import MapStyle
        from .deploy.inference import Predictor
        from .deploy.modelfile import ModelBundle
        from .device import resolve_device
        bundle = ModelBundle.load(model)
        self.pred = Predictor(bundle, resolve_device(device), precision=precision)
        self.style = MapStyle.of(bundle.calibration, maps)
        self.out, self.ident = Path(out), ident

    def __call__(self, batch: dict) -> dict:
        from .api import write_outputs
        from .data.images import read_image
        paths = [Path(p) for p in batch["path"]]
        stems = list(batch["stem"])
        scores, errors = [], []
        imgs, keep = [], []
        for i, p in enumerate(paths):
            try:
                imgs.append(read_image(p))
                keep.append(i)
                errors.append("")
            except SemiRestError as exc:     # named in the driver's error, after the others are done
                errors.append(str(exc))
        preds = dict(zip(keep, self.pred.predict_batch(imgs, [im.shape[:2] for im in imgs]))) if imgs else {}
        for i, (p, stem) in enumerate(zip(paths, stems)):
            if i not in preds:
                scores.append(float("nan"))
                continue
            res = write_outputs(self.out, p, stem, imgs[keep.index(i)], preds[i], self.style)
            atomic_write_text(_marker(self.out, stem), json.dumps({
                "image": str(p), "score": res.score, "heatmap": res.heatmap.name,
                "overlay": res.overlay.name, "map": res.map_file.name if res.map_file else "",
                "identity": self.ident}))
            scores.append(res.score)
        return {"path": [str(p) for p in paths], "stem": stems, "score": scores, "error": errors}


def connect(address: str | None = None):
    """Ray, connected: to the cluster at ``address``, else to a local Ray on this machine's cores
    (or the one already running in this process). ConfigError with the install hint without Ray."""
    ray = _ray()
    _init(ray, address)
    return ray


def _init(ray, address: str | None) -> None:
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)


def predict_ray(model: str | Path, images, out_dir: str | Path, address: str | None = None,
                device: str = "auto", maps: str = "none", progress=None,
                cancel_event: threading.Event | None = None, precision: str = "float32") -> list:
    """:func:`core.api.predict` on a Ray cluster (``address``: ``"auto"``, ``HOST:PORT`` or None
    for a local Ray on this machine's cores). Same outputs and ``scores.csv``; images whose outputs
    a previous run already wrote are skipped (by the same model at the same ``precision``).
    Returns the :class:`~core.api.ImageResult` list."""
    from .api import MIN_FREE_PREDICT_BYTES, ImageResult, MapStyle, _load, image_paths, output_stems, write_scores
    from .progress import Reporter
    if maps not in ("none", "npy"):
        raise ConfigError(f"maps: expected none or npy, got {maps!r}")
    from .deploy.precision import known_precision
    known_precision(precision)          # the actors check the device (float16: GPU actors only)
    ray = _ray()
    model, out = Path(model), Path(out_dir)
    ensure_writable(out, MIN_FREE_PREDICT_BYTES)
    bundle = _load(model)                 # a bad model file fails here, once, not in every actor
    style = MapStyle.of(bundle.calibration, maps)
    report = Reporter(progress, cancel_event)
    paths = image_paths(images)
    stems = output_stems(paths)
    ident = model_identity(model)
    if precision != "float32":      # maps of another precision are not "already done"
        ident["precision"] = precision
    done = {s: m for p, s in zip(paths, stems) if (m := _read_done(out, p, s, ident, maps))}
    todo = [{"path": str(p), "stem": s} for p, s in zip(paths, stems) if s not in done]
    report.log(f"model: {bundle.summary()}; {len(paths)} images, {len(done)} already done, "
               f"{len(todo)} to score on Ray")
    errors = []
    started = False
    if todo:
        started = not ray.is_initialized()
        _init(ray, address)
        from .api import PREDICT_BATCH
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False       # our own progress (bars or JSON lines) instead
        gpus = int(ray.cluster_resources().get("GPU", 0)) if device != "cpu" else 0
        n_batches = -(-len(todo) // PREDICT_BATCH)
        if gpus:
            actors, res = min(gpus, n_batches), {"num_gpus": 1}
        else:
            cpus = int(ray.cluster_resources().get("CPU", 1))
            actors, res = max(1, min(cpus, n_batches)), {"num_cpus": 1}
        report.log(f"Ray: {actors} {'GPU' if gpus else 'CPU'} actor(s)")
        ds = ray.data.from_items(todo).map_batches(
            _Scorer, batch_size=PREDICT_BATCH, concurrency=actors, batch_format="numpy",
            fn_constructor_kwargs={"model": str(model.resolve()), "device": "auto" if gpus else "cpu",
                                   "out": str(out.resolve()), "maps": maps, "ident": ident,
                                   "precision": precision}, **res)
        n = len(done)
        try:
            for row in ds.iter_rows():
                n += 1
                if row["error"]:
                    errors.append(str(row["error"]))
                else:
                    done[str(row["stem"])] = {"score": float(row["score"]), "image": str(row["path"])}
                report("predict", n, len(paths), safe_name(Path(str(row["path"])).name),
                       score=float(row["score"]))
        finally:
            if started:        # a Ray this call started for itself (tests and embedders keep theirs)
                ray.shutdown()
    if errors:
        raise SemiRestError(f"{errors[0]}" + (f" (and {len(errors) - 1} more unreadable images)"
                                              if len(errors) > 1 else "")
                            + "; the other images' outputs are written, the same command resumes")
    results = []
    for p, s in zip(paths, stems):
        score = float(done[s]["score"])
        results.append(ImageResult(p, score, score >= style.threshold, heatmap=out / f"{s}_heatmap.png",
                                   overlay=out / f"{s}_overlay.png",
                                   map_file=out / f"{s}.npy" if maps == "npy" else None))
    write_scores(out, results, style.threshold)
    return results
