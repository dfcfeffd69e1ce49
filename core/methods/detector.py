"""The interface every detection method implements (the list of methods: core/methods/__init__.py).

A method has two halves:

- ``fit(job)``, a classmethod: train from normal images (and the labels the method can use), save
  a model file (:class:`core.deploy.modelfile.ModelBundle`) and return it. ``core.api.fit`` checks the
  common inputs first (output folder writable, at least two normals) and then hands over.
- an instance built from a saved model: ``group_maps(xs, timer)`` scores model-input images of one
  size and returns their block maps (rows, cols), the per-8x8-block anomaly scores.
  :class:`core.deploy.inference.Predictor` does the rest for every method alike: resizing to the model
  input, batching by size, upsampling and smoothing (core/eval/anomaly_map.py), the image score,
  timings. Calibration (display scale, thresholds) is recorded by ``fit`` in the model file.
- for ``semirest export`` (core/deploy/export.py): ``graph_head(rows, cols)``, the same scoring as
  ``group_maps`` for one image as an ``nn.Module`` that traces into ONNX, from the backbone's
  feature map to the block map. core/deploy/exportgraph.py puts the shared backbone before it and
  the shared post-processing after it, so every method exports through one graph.
"""
from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from .. import __version__
from ..config import Config
from ..data.labels import ImageLabel
from ..deploy.precision import DEFAULT_PRECISION
from ..errors import ConfigError
from ..progress import Reporter


@dataclass
class FitJob:
    """Everything a method's ``fit`` gets (checked by core.api.fit)."""
    normal_paths: list[Path]
    out: Path
    cfg: Config
    device: str                       # as the user gave it ("auto", "cpu", "cuda:1"...)
    dev: torch.device                 # resolved
    labels: list[ImageLabel]
    report: Reporter
    record: dict = field(default_factory=dict)       # extra training-record entries (data, category)
    t0: float = field(default_factory=time.perf_counter)
    resume: bool = True
    init_from: object = None          # str | Path | ModelBundle | None (SemiREST only)


class Detector:
    """A trained model of one method, ready to score images (see the module docstring)."""

    name: ClassVar[str]
    # ONNX node-name prefixes (torch.onnx names nodes by module path; the graph's head is "head")
    # of the matrix products an int8 export may quantise (core/deploy/export.py, decision 0021):
    # only layers measured to keep the maps; empty: the method exports in float32 only
    int8_layers: ClassVar[tuple[str, ...]] = ()
    # the inference precisions the method runs in (core/deploy/precision.py, decision 0024)
    precisions: ClassVar[tuple[str, ...]] = (DEFAULT_PRECISION,)

    def __init__(self, bundle, device: torch.device, encoder, bagging: bool | None = None,
                 precision: str = DEFAULT_PRECISION):
        self.bundle = bundle
        self.cfg: Config = bundle.config
        self.device = device
        self.encoder = encoder            # the Predictor's (it sets CPU batch size and layout)
        self.bagging = self.cfg.swin.bagging if bagging is None else bagging
        if precision not in self.precisions:
            raise ConfigError(f"precision {precision}: the {self.name} method runs in "
                              f"{' or '.join(self.precisions)} only")
        self.precision = precision

    @classmethod
    def fit(cls, job: FitJob):
        raise NotImplementedError

    def group_maps(self, xs: list[np.ndarray], timer) -> list[np.ndarray]:
        """Model-input images of one size (uint8 RGB) -> their (rows, cols) block maps."""
        raise NotImplementedError

    def graph_head(self, rows: int, cols: int) -> torch.nn.Module:
        """What :meth:`group_maps` computes after the backbone, for one image, as a module whose
        forward takes the (rows, cols, d) backbone features (``Encoder.encode(...,
        with_position=False)``, float32 on the CPU) and returns the (rows, cols) block map, in ops
        that trace into ONNX (opset core.deploy.export.OPSET). The export checks its maps against
        this detector's to PARITY_TOLERANCE."""
        raise NotImplementedError(f"{type(self).__name__} has no exportable graph")

    def export_info(self) -> dict:
        """Entries of the export's JSON that describe this method's scoring (core/deploy/export.py
        writes ``bagging`` and ``fusion_weight`` as null unless a method sets them)."""
        return {}

    @classmethod
    def state_problem(cls, bundle) -> str | None:
        """Why a loaded model file's weights cannot be this method's (ModelBundle.load raises it
        naming the file), or None. Methods with their own weights check them here."""
        return None


def device_name(dev: torch.device) -> str:
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"


def training_record(job: FitJob, **entries) -> dict:
    """The model file's training record: what every method writes, then the method's own entries."""
    return {"created": _dt.datetime.now().isoformat(timespec="seconds"), "version": __version__,
            "method": job.cfg.method, "device": str(job.dev), "device_name": device_name(job.dev),
            "seconds": time.perf_counter() - job.t0, **entries, **(job.record or {})}


def normals_from_labels(job: FitJob, note: str) -> list[Path]:
    """For a method that learns from normal images only: refuse labelled defective images (with
    the method's reason) and return the normals plus the images tagged normal."""
    used = [lab for lab in job.labels if lab.kind and not (lab.kind == "tag" and lab.tag == "normal")]
    if used:
        raise ConfigError(f"{note}; {len(used)} labelled defective image(s) were given (train SemiREST "
                          f"to use them, or leave the labels out)")
    extra = [Path(lab.image) for lab in job.labels if lab.kind == "tag" and lab.tag == "normal"]
    return job.normal_paths + [p for p in extra if p not in job.normal_paths]


def label_record(labels: list[ImageLabel]) -> dict:
    """What the labels a model used cost: images and annotation seconds per kind, the estimated
    part (core/data/labelcost.py: seeded or imported, not measured) kept apart."""
    counts: dict[str, int] = {}
    seconds: dict[str, float] = {}
    estimated: dict[str, float] = {}
    for lab in labels:
        if lab.kind:
            counts[lab.kind] = counts.get(lab.kind, 0) + 1
            seconds[lab.kind] = seconds.get(lab.kind, 0.0) + sum(lab.seconds.values())
            if lab.seconds_estimated:
                estimated[lab.kind] = estimated.get(lab.kind, 0.0) + sum(lab.seconds_estimated.values())
    return {"labels": counts, "label_seconds": seconds, "label_seconds_estimated": estimated}
