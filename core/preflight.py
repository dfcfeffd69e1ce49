"""The dry run: every training stage on a handful of the most different images, before the real run.

A problem that two images of different sizes would show in seconds must not surface after the
memory bank and the neighbour search of every image (16 minutes on 400 images on 2 CPU cores;
issue 14). Before a long run, :func:`dry_run` trains and saves a throw-away model on the most
different images (the extreme aspect ratios and areas among the normals, one labelled image of each
label kind, the extremes among the labelled ones) with the run's own settings but a couple of steps,
and predicts with it on images of different sizes. Anything that fails there stops the real run
before it starts, with the images and the stage named.

What a dry run cannot see: problems that only many images make (memory, time), and a crash in the
few steps it skips. Those are what the checkpoints are for.
"""
from __future__ import annotations

import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from .config import Config
from .data.geometry import model_input_size
from .data.images import read_image
from .data.labels import ImageLabel
from .errors import PreflightError, SemiRestError
from .progress import ProgressEvent, Reporter

MAX_NORMALS = 5     # extremes of aspect ratio and area, and one typical image


def needed(cfg: Config, normals: list[Path]) -> bool:
    """A dry run pays off when the real run is much bigger than it: ``train.preflight_min_images``
    normals or more (0 never)."""
    n = cfg.train.preflight_min_images
    return bool(n) and len(normals) >= n


def _input_sizes(paths: list[Path], cfg: Config) -> dict[Path, tuple[int, int]]:
    """(W_in, H_in) of each image; reading them also finds unreadable files before any work."""
    f = cfg.features
    out = {}
    for p in paths:
        h, w = read_image(p).shape[:2]
        out[p] = model_input_size(w, h, f.image_size, f.size_multiple)
    return out


def _most_different(sizes: dict[Path, tuple[int, int]], n: int) -> list[Path]:
    """Up to ``n`` paths: the extreme aspect ratios and areas first, then a typical one, then the
    other sizes; each model-input size once before any repeats."""
    paths = list(sizes)
    aspect = {p: sizes[p][0] / sizes[p][1] for p in paths}
    area = {p: sizes[p][0] * sizes[p][1] for p in paths}
    order = [min(paths, key=aspect.get), max(paths, key=aspect.get),
             min(paths, key=area.get), max(paths, key=area.get),
             sorted(paths, key=area.get)[len(paths) // 2]]
    seen_sizes = {sizes[p] for p in order}
    order += [p for p in paths if sizes[p] not in seen_sizes]
    order += paths
    picked: list[Path] = []
    for p in order:
        if p not in picked:
            picked.append(p)
        if len(picked) == n:
            break
    return picked


def _pick_labels(labels: list[ImageLabel], cfg: Config) -> list[ImageLabel]:
    """One labelled image of each kind (and tag), plus the extremes of size among the labelled ones."""
    usable = [lab for lab in labels if lab.kind is not None and Path(lab.image).exists()]
    if not usable:
        return []
    picked: dict[tuple, ImageLabel] = {}
    for lab in usable:
        picked.setdefault((lab.kind, lab.tag), lab)
    sizes = _input_sizes([Path(lab.image) for lab in usable], cfg)
    by_path = {Path(lab.image): lab for lab in usable}
    for p in _most_different(sizes, 2):
        picked.setdefault(("size", p), by_path[p])
    out: list[ImageLabel] = []
    for lab in picked.values():
        if all(lab is not o for o in out):
            out.append(lab)
    return out


def _mixing_seed(few: list[Path], sizes: dict[Path, tuple[int, int]], cfg: Config) -> int:
    """A seed whose split puts more than one input size on both sides (bank and validation), when
    the images have more than one: the validation is where sizes met first in the real crash."""
    from .data.datasets import split_train_val
    t = cfg.train
    for seed in range(t.seed, t.seed + 64):
        train, val = split_train_val(few, t.val_fraction, t.val_min_images, seed)
        if len({sizes[p] for p in train}) > 1 and len({sizes[p] for p in val}) > 1:
            return seed
    return t.seed


def dry_config(cfg: Config, n_defective: int) -> Config:
    """The run's settings with a couple of steps and one image per batch: same shapes, same code."""
    t = cfg.train
    real_val = {}
    if n_defective >= 2:   # the held-out real-defect validation runs too, on one image
        real_val = {"real_val_min_labelled": 2, "real_val_fraction": 0.5}
    return cfg.updated({
        "train": {"steps": 2, "warmup_steps": 1, "val_every": 1, "checkpoint_every": 1,
                  "b_normal": 1, "b_synthetic": 1, "b_defective": min(t.b_defective, 1) or 1,
                  "val_min_images": 2, "val_defects_per_normal": 1.0, "preflight_min_images": 0,
                  **real_val},
        "semi": {"steps": 2, "rampup_steps": 1, "b_normal": 1, "b_synthetic": 1, "b_defective": 1},
    }, where="dry run")


def dry_run(normals: list[Path], labels: list[ImageLabel], cfg: Config, device: str,
            report: Reporter) -> float:
    """Train, save and use a model on the most different images; raise :class:`PreflightError`
    naming the images and the stage when any of it fails. Returns the seconds it took."""
    from . import api   # api.fit calls this module
    t0 = time.perf_counter()
    sizes = _input_sizes(list(normals), cfg)
    few = _most_different(sizes, MAX_NORMALS)
    if len(few) < 4:      # two for the bank, two held out
        few = list(normals[:4])
    labs = _pick_labels(labels, cfg)
    n_def = sum(1 for lab in labs if not (lab.kind == "tag" and lab.tag == "normal"))
    dcfg = dry_config(cfg, n_def)
    dcfg = dcfg.updated({"train": {"seed": _mixing_seed(few, sizes, dcfg)}}, where="dry run")
    shown = sorted({f"{w}x{h}" for w, h in (sizes[p] for p in few)})
    report.log(f"dry run: every stage on {len(few)} normal and {len(labs)} labelled images "
               f"(model inputs {', '.join(shown)}) before the real run")
    stage = {"name": "start"}

    def relay(ev: ProgressEvent) -> None:
        # the dry run's own stages stay out of the caller's progress (its ETA is for the real run);
        # the caller's cancel still stops it
        if ev.stage != "log":
            stage["name"] = ev.stage
        report("preflight", 0, 1, f"dry run: {stage['name']}")

    images = [p.name for p in few] + [Path(lab.image).name for lab in labs]
    try:
        with tempfile.TemporaryDirectory(prefix="semirest-dry-run-") as tmp:
            model = api.fit(few, Path(tmp) / "dry.pt", dcfg, device, labels=labs, progress=relay,
                            cancel_event=report.cancel_event, resume=False)
            stage["name"] = "predict"
            probe = few[:2] + [Path(lab.image) for lab in labs[:2]]
            results = api.predict(model, probe, Path(tmp) / "maps", device, progress=relay, maps="npy")
            for r in results:
                h, w = read_image(r.path).shape[:2]
                if np.load(r.map_file).shape != (h, w):
                    raise ValueError(f"the map of {r.path.name} is not {w}x{h}")
    except SemiRestError:   # cancelled, or a bad file or setting the message already names
        raise
    except Exception as exc:
        frames = traceback.extract_tb(exc.__traceback__)
        ours = [f for f in frames if "site-packages" not in f.filename and "/lib/python" not in f.filename]
        where = (ours or frames)[-1]      # the innermost frame of this project, not numpy's
        raise PreflightError(
            f"training would fail: a dry run on {len(images)} images ({', '.join(images)}) failed "
            f"after stage '{stage['name']}', in {where.name} ({Path(where.filename).name}:{where.lineno}), "
            f"with {type(exc).__name__}: {exc}. Nothing was built; please report this with the "
            f"images named.") from exc
    seconds = time.perf_counter() - t0
    report.log(f"dry run: ok in {seconds:.1f} s")
    return seconds
