"""Which images train a model, the run folder, the worker's command line, and the model's
record once the run has finished. No Qt.

The selection rule (docs/decisions/0008-training-worker.md):

- **Normal images** (the memory bank and the core's own validation split): every image of the
  ``train`` split that is not labelled defective (tagged normal or unlabelled), plus every image of
  the ``inspect`` split tagged normal: a false alarm corrected in review is a known-good part.
- **Labelled defective images**: images of the ``train`` and ``inspect`` splits whose labels say
  defective (mask, blocks, boxes or a defective tag), restricted to the chosen supervision:
  ``masks``, ``blocks``, ``boxes`` or ``tags`` keep only that kind (and its annotation seconds,
  of which the estimated part, seeded or imported, is recorded apart: ``label_seconds_estimated``);
  ``all`` keeps each image's most informative label; ``unsupervised`` uses none.
- The ``test`` and ``val`` splits are never trained on: their labels are ground truth for review.

A run lives in ``<project>/runs/<id>/``: ``normals.txt`` (one path per line, relative to the
folder when inside the project), ``labels/`` (the core's per-image JSON, written here from the
store), ``config.yaml`` (a copy of a custom config, if any), ``model.pt`` (+ ``model.pt.ckpt``
while training) and ``train.log``. The command uses paths relative to the run folder and runs
there, so the same command resumes, even after the project folder moved.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.config import BACKBONE_CHOICES, DEFAULT_PRESET
from core.config import PRESETS as CORE_PRESETS
from core.data.labels import ImageLabel, save_label
from core.deploy.precision import TRAIN_PRECISIONS
from core.methods import METHODS, USES_LABELS

SUPERVISIONS: dict[str, str] = {
    "all": "Whatever labels exist",
    "unsupervised": "Unsupervised (normal images only)",
    "boxes": "Boxes (semi-supervised)",
    "blocks": "Block labels",
    "masks": "Pixel masks",
    "tags": "Image tags (weak)",
}
# core/config.py: one list for the CLI, the bench and the app; the default first (the panel offers it first)
PRESETS = tuple(sorted(CORE_PRESETS, key=lambda p: p != DEFAULT_PRESET))
BACKBONES = BACKBONE_CHOICES
NORMAL_SPLITS = ("train",)
LABEL_SPLITS = ("train", "inspect")
RUNS_DIR = "runs"
_KIND_OF = {"masks": "mask", "blocks": "blocks", "boxes": "boxes", "tags": "tag"}


class TrainSetError(ValueError):
    """The project cannot train with these settings; the message says what is missing."""


@dataclass
class RunSpec:
    """What the user chose in the Train panel (stored with the run as JSON)."""

    supervision: str = "all"
    method: str = "semirest"             # core.methods.METHODS
    preset: str = DEFAULT_PRESET
    backbone: str = "auto"               # auto: the preset's (or config file's) backbone
    device: str = "cpu"
    steps: int | None = None             # None: the preset's
    config: str | None = None            # a YAML of settings over the preset (advanced; tests)
    init_model: str | None = None        # start from this model file (retrain with corrections)
    precision: str = "auto"              # train.precision (core/deploy/precision.py, decision 0024)

    def validate(self) -> "RunSpec":
        if self.supervision not in SUPERVISIONS:
            raise TrainSetError(f"unknown supervision {self.supervision!r}; one of {list(SUPERVISIONS)}")
        if self.method not in METHODS:
            raise TrainSetError(f"unknown method {self.method!r}; one of {list(METHODS)}")
        if not USES_LABELS[self.method] and self.supervision != "unsupervised":
            raise TrainSetError(f"{self.method} learns from normal images only: choose the "
                                f"unsupervised supervision (labels would be ignored)")
        if self.preset not in PRESETS:
            raise TrainSetError(f"unknown preset {self.preset!r}")
        if self.backbone not in BACKBONES:
            raise TrainSetError(f"unknown backbone {self.backbone!r}")
        if self.steps is not None and self.steps < 1:
            raise TrainSetError("steps must be at least 1")
        if self.precision not in TRAIN_PRECISIONS:
            raise TrainSetError(f"unknown precision {self.precision!r}; one of {list(TRAIN_PRECISIONS)}")
        return self

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class TrainingSet:
    normals: list[Path] = field(default_factory=list)
    labels: list[ImageLabel] = field(default_factory=list)
    labels_used: dict[str, int] = field(default_factory=dict)       # kind -> images ("normal": corrections)
    label_seconds: dict[str, float] = field(default_factory=dict)   # kind -> annotation seconds
    # kind -> the estimated (seeded or imported) part of label_seconds; a kind absent: all measured
    label_seconds_estimated: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        parts = [f"{len(self.normals)} normal images"]
        parts += [f"{n} {kind}" for kind, n in sorted(self.labels_used.items())]
        return ", ".join(parts)


def restrict(label: ImageLabel, supervision: str) -> ImageLabel | None:
    """The part of one image's label that a supervision uses (None: the image is not used)."""
    if supervision == "unsupervised" or not label.is_defective:
        return None
    if supervision == "all":
        return label
    kind = _KIND_OF[supervision]
    # a defective tag is a verdict: its time is booked as "checked" (docs/decisions/0003)
    timed = (kind, "checked") if kind == "tag" else (kind,)
    s = {k: label.seconds[k] for k in timed if k in label.seconds}
    est = {k: label.seconds_estimated[k] for k in timed if k in label.seconds_estimated}
    base = dict(image=label.image, width=label.width, height=label.height, seconds=s, seconds_estimated=est)
    if kind == "mask" and label.mask is not None and label.mask.any():
        return ImageLabel(mask=label.mask, **base)
    if kind == "blocks" and label.blocks is not None and label.blocks.cells:
        return ImageLabel(blocks=label.blocks, **base)
    if kind == "boxes" and label.boxes:
        return ImageLabel(boxes=list(label.boxes), **base)
    if kind == "tag" and label.tag == "defective":
        return ImageLabel(tag="defective", **base)
    return None


def _add(ts: TrainingSet, kind: str, secs: float, estimated: float) -> None:
    ts.labels_used[kind] = ts.labels_used.get(kind, 0) + 1
    ts.label_seconds[kind] = round(ts.label_seconds.get(kind, 0.0) + secs, 3)
    if estimated > 0:
        ts.label_seconds_estimated[kind] = round(ts.label_seconds_estimated.get(kind, 0.0) + estimated, 3)


def select_training_set(store, supervision: str) -> TrainingSet:
    """Apply the selection rule to the project (see the module docstring)."""
    ts = TrainingSet()
    for split in NORMAL_SPLITS:
        ts.normals += [r.abs_path for r in store.images(split) if r.status != "defective"]
    for r in store.images("inspect", status="normal"):
        ts.normals.append(r.abs_path)
        _add(ts, "normal", sum(store.seconds_by_kind(r.id).values()),
             sum(store.seconds_by_kind(r.id, estimated_only=True).values()))
    for split in LABEL_SPLITS:
        for r in store.images(split, status="defective"):
            lab = restrict(store.image_label(r.id), supervision)
            if lab is not None:
                ts.labels.append(lab)
                # the estimated part of the same kinds restrict() kept (lab.seconds' keys)
                est = store.seconds_by_kind(r.id, estimated_only=True)
                _add(ts, lab.kind, sum(lab.seconds.values()), sum(est.get(k, 0.0) for k in lab.seconds))
    if len(ts.normals) < 2:
        raise TrainSetError(f"training needs at least 2 normal images in the train split; the project has "
                            f"{len(ts.normals)} (move good parts to the train split with Alt+1)")
    if supervision not in ("unsupervised", "all") and not ts.labels:
        what = {"masks": "pixel masks", "blocks": "block labels", "boxes": "boxes",
                "tags": "a defective tag"}[supervision]
        raise TrainSetError(f"no image in the train split has {what}: label some defective images there "
                            f"(test-split labels are ground truth and are never trained on)")
    return ts


def _ref(path: Path, run_dir: Path) -> str:
    """A path as the worker sees it from ``run_dir``: relative when inside the project."""
    path = Path(path).resolve()
    try:
        path.relative_to(run_dir.resolve().parent.parent)
    except ValueError:
        return str(path)
    return Path(os.path.relpath(path, run_dir.resolve())).as_posix()


def prepare_run(run_dir: Path, spec: RunSpec, ts: TrainingSet) -> list[str]:
    """Write the run's inputs into ``run_dir`` and return the worker's argv (after ``python``)."""
    spec.validate()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "normals.txt").write_text("".join(_ref(p, run_dir) + "\n" for p in ts.normals),
                                         encoding="utf-8")
    cmd = ["-m", "core.cli", "train", "--normals", "normals.txt", "--out", "model.pt",
           "--preset", spec.preset, "--device", spec.device, "--progress-json"]
    if spec.method != "semirest":
        cmd += ["--method", spec.method]
    if spec.backbone != "auto":       # "auto" = the preset's own choice (cpu: the offline Lite0)
        cmd += ["--backbone", spec.backbone]
    labels_dir = run_dir / "labels"
    if labels_dir.exists():
        shutil.rmtree(labels_dir)
    if ts.labels:
        used: set[str] = set()
        for lab in ts.labels:
            stem = Path(lab.image).stem
            name, n = stem, 1
            while name in used:
                name, n = f"{stem}-{n}", n + 1
            used.add(name)
            save_label(lab, labels_dir / f"{name}.json")
        cmd += ["--labels", "labels"]
    if spec.config:
        shutil.copyfile(spec.config, run_dir / "config.yaml")
        cmd += ["--config", "config.yaml"]
    if spec.steps:
        cmd += ["--steps", str(int(spec.steps))]
    if spec.init_model:
        cmd += ["--init", _ref(Path(spec.init_model), run_dir)]
    if spec.precision != "auto":          # auto: the config's default
        cmd += ["--precision", spec.precision]
    return cmd


def run_dir_for(project: Path, run_id: int) -> Path:
    return Path(project) / RUNS_DIR / f"{run_id:04d}"


def remove_partial_files(run_dir: Path) -> list[Path]:
    """Temporary files a killed worker may leave (atomic writes in progress); never the checkpoint."""
    gone = []
    for p in Path(run_dir).glob(".*.tmp"):
        p.unlink(missing_ok=True)
        gone.append(p)
    return gone


def register_model(store, run_id: int, bundle) -> int:
    """Add the model a finished run wrote (a loaded ``core.deploy.modelfile.ModelBundle``) to the project:
    labels used and their seconds as the app selected them, the core's validation metrics and
    calibration, and what the viewer needs to recompute a smoothed map from a block map."""
    run = store.runs.run(run_id)
    out = bundle.config.output
    calibration = {**bundle.calibration, "method": bundle.config.method,
                   "display": {"eval_size": out.eval_size, "gaussian_sigma": out.gaussian_sigma,
                                "upsample": out.upsample, "sharpness": out.sharpness,
                                "contrast": out.contrast, "contrast_radius": out.contrast_radius}}
    model_id = store.runs.add_model(run_id, run.model_path, run.settings.get("supervision", "?"), bundle.training,
                               bundle.backbone, bundle.config.preset, bundle.validation, calibration,
                               run.labels_used, run.label_seconds, run.label_seconds_estimated)
    store.runs.update_run(run_id, status="finished")
    return model_id
