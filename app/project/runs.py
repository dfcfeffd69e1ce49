"""Training runs, trained models and cached predictions in the project database (schema 2).

A mixin of :class:`app.project.store.Store` (same connection, same one-transaction-per-write rule):

- ``runs``: one row per training run: its settings, the exact command, its folder
  (``runs/<id>/``: inputs, log, model, checkpoint), status ``queued | running | cancelled | failed |
  finished``, exit code and the error the user sees. Resume reruns the stored command.
- ``models``: one row per finished model: what it was trained from (labels used per kind and
  their annotation seconds, and apart the estimated part of those seconds, schema 4), where, how long, its validation metrics and calibration, and the
  user's image and pixel thresholds (NULL = the calibration's defaults).
- ``predictions``: per (model, image), the image score and the block map (``.npy`` bytes,
  float16): what the viewer draws and sorts by. The smoothed map is recomputed from the block map
  by the core (cheap), so nothing large is stored.
"""
from __future__ import annotations

import io
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from core.config import SELECTION_METRICS

RUN_STATUSES = ("queued", "running", "cancelled", "failed", "finished")

# Which stored validation number stands for a model, first present wins (the order the core
# chose its checkpoint on): block AP on held-out real labelled defects, else image AUROC on
# held-out real images tagged defective, else pixel AP on held-out normals + synthetic defects.
_SOURCE_NAMES = {"val_real_ap": "real-defect block AP", "val_real_image_auroc": "real-defect image AUROC",
                 "val_pixel_ap": "synthetic pixel AP"}
VALIDATION_SOURCES = tuple((key, _SOURCE_NAMES[key]) for key in SELECTION_METRICS)
SYNTHETIC_SOURCE = VALIDATION_SOURCES[-1][1]


@dataclass(frozen=True)
class RunRow:
    id: int
    status: str
    settings: dict
    command: list[str]
    run_dir: Path
    labels_used: dict
    label_seconds: dict
    parent_model: int | None
    created: float
    started: float | None
    ended: float | None
    pid: int | None
    exit_code: int | None
    error: str | None
    log_path: Path | None
    label_seconds_estimated: dict = field(default_factory=dict)   # {kind: s}, the estimated part

    @property
    def label_seconds_estimated_total(self) -> float:
        return float(sum(self.label_seconds_estimated.values()))

    @property
    def model_path(self) -> Path:
        return self.run_dir / "model.pt"

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "model.pt.ckpt"

    @property
    def resumable(self) -> bool:
        return self.status in ("cancelled", "failed")


@dataclass(frozen=True)
class ModelRow:
    id: int
    run_id: int | None
    path: Path
    created: float
    supervision: str
    preset: str | None
    backbone: str | None
    device: str | None
    device_name: str | None
    train_seconds: float | None
    steps: int | None
    labels_used: dict
    label_seconds: dict
    validation: dict
    calibration: dict = field(repr=False)
    user_image_threshold: float | None = None
    user_pixel_threshold: float | None = None
    label_seconds_estimated: dict = field(default_factory=dict)   # {kind: s}, the estimated part

    @property
    def val_pixel_ap(self) -> float | None:
        v = self.validation.get("val_pixel_ap")
        return None if v is None else float(v)

    @property
    def validation_metric(self) -> tuple[float, str] | None:
        """(value, source) of the validation number that stands for this model: real-defect
        metrics when labelled defects were held out, else the synthetic pixel AP (the one place
        this choice is made; ``VALIDATION_SOURCES``). None when none is stored (or finite)."""
        for key, source in VALIDATION_SOURCES:
            v = self.validation.get(key)
            if v is not None and math.isfinite(float(v)):
                return float(v), source
        return None

    @property
    def method(self) -> str:
        """The model's method (core/methods/__init__.py), recorded with its calibration when registered;
        models registered before that were SemiREST."""
        return str(self.calibration.get("method") or "semirest")

    @property
    def start_validation(self) -> float | None:
        """The validation metric of the model this one started from, measured on the same held-out
        real defects (the first history entry, step 0, of a run that began from a trained model:
        Semi and Tag start from the unsupervised one). None without real-defect validation."""
        vm = self.validation_metric
        hist = self.validation.get("history") or []
        if vm is None or vm[1] == SYNTHETIC_SOURCE or not hist or hist[0].get("step") != 0:
            return None
        key = next(k for k, src in VALIDATION_SOURCES if src == vm[1])
        v = hist[0].get(key)
        return None if v is None or not math.isfinite(float(v)) else float(v)

    @property
    def real_defect_images(self) -> list[str]:
        """Names of the labelled defective images held out for validation (empty: none)."""
        return list(self.validation.get("real_defect_images") or [])

    @property
    def validated_on_real(self) -> bool:
        vm = self.validation_metric
        return vm is not None and vm[1] != SYNTHETIC_SOURCE

    @property
    def validation_basis(self) -> str:
        """What the validation number was measured on, for the user: "real-defect block AP,
        3 held-out images" or "synthetic pixel AP" ("" when there is none)."""
        vm = self.validation_metric
        if vm is None:
            return ""
        if vm[1] == SYNTHETIC_SOURCE:
            return vm[1]
        n = len(self.real_defect_images)
        return f"{vm[1]}, {n} held-out image{'' if n == 1 else 's'}"

    @property
    def map_scale(self) -> float:
        return float(self.calibration.get("map_scale") or 1.0)

    @property
    def map_floor(self) -> float:
        """Where normal parts sit on the fixed scale (0 for models calibrated before it existed)."""
        return float(self.calibration.get("map_floor") or 0.0)

    @property
    def image_threshold(self) -> float:
        if self.user_image_threshold is not None:
            return self.user_image_threshold
        return float(self.calibration.get("image_threshold", 0.5))

    @property
    def pixel_threshold(self) -> float:
        if self.user_pixel_threshold is not None:
            return self.user_pixel_threshold
        return float(self.calibration.get("pixel_threshold", 0.5))

    @property
    def label_seconds_total(self) -> float:
        return float(sum(self.label_seconds.values()))

    @property
    def label_seconds_estimated_total(self) -> float:
        """The part of :attr:`label_seconds_total` that was seeded or imported, not measured."""
        return float(sum(self.label_seconds_estimated.values()))

    @property
    def label_seconds_estimated_fraction(self) -> float:
        """Estimated share of the label seconds, 0 (all measured, or none) to 1."""
        total = self.label_seconds_total
        return min(1.0, self.label_seconds_estimated_total / total) if total > 0 else 0.0


def encode_block_map(block: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(block, np.float16), allow_pickle=False)
    return buf.getvalue()


def decode_block_map(blob: bytes) -> np.ndarray:
    return np.load(io.BytesIO(blob), allow_pickle=False).astype(np.float32)


class Runs:
    """Training runs, the models they made and the models' predictions: ``store.runs`` of a
    :class:`app.project.store.Store` (its database connection and transactions)."""

    def __init__(self, store):
        self._store = store

    @property
    def folder(self) -> Path:
        return self._store.folder

    @property
    def db(self):
        return self._store.db

    def transaction(self):
        return self._store.transaction()

    # ---- paths --------------------------------------------------------------------------------
    def _rel(self, path: Path | str) -> str:
        path = Path(path).resolve()
        try:
            return path.relative_to(self.folder).as_posix()
        except ValueError:
            return str(path)

    def _abs(self, stored: str | None) -> Path | None:
        if stored is None:
            return None
        p = Path(stored)
        return p if p.is_absolute() else self.folder / p

    # ---- runs ---------------------------------------------------------------------------------
    def add_run(self, settings: dict, command: list[str], run_dir: Path, labels_used: dict,
                label_seconds: dict, parent_model: int | None = None, status: str = "queued",
                label_seconds_estimated: dict | None = None) -> int:
        """``label_seconds_estimated``: the seeded or imported part of ``label_seconds`` per kind."""
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO runs(status, settings, command, run_dir, labels_used, label_seconds, "
                "parent_model, created, label_seconds_estimated) VALUES (?,?,?,?,?,?,?,?,?)",
                (status, json.dumps(settings), json.dumps(command), self._rel(run_dir),
                 json.dumps(labels_used), json.dumps(label_seconds), parent_model, time.time(),
                 json.dumps(label_seconds_estimated or {})))
            return int(cur.lastrowid)

    def next_run_id(self) -> int:
        r = self.db.execute("SELECT coalesce(max(id), 0) + 1 FROM runs").fetchone()
        return int(r[0])

    _RUN_COLS = ("id, status, settings, command, run_dir, labels_used, label_seconds, parent_model, "
                 "created, started, ended, pid, exit_code, error, log_path, label_seconds_estimated")

    def update_run(self, run_id: int, **values) -> None:
        allowed = {"status", "command", "started", "ended", "pid", "exit_code", "error", "log_path"}
        bad = set(values) - allowed
        if bad:
            raise ValueError(f"cannot update run field(s) {sorted(bad)}")
        if "status" in values and values["status"] not in RUN_STATUSES:
            raise ValueError(f"run status must be one of {RUN_STATUSES}, got {values['status']!r}")
        if "command" in values:
            values["command"] = json.dumps(values["command"])
        if "log_path" in values and values["log_path"] is not None:
            values["log_path"] = self._rel(values["log_path"])
        sets = ", ".join(f"{k} = ?" for k in values)
        with self.transaction() as db:
            db.execute(f"UPDATE runs SET {sets} WHERE id = ?", (*values.values(), run_id))

    def _run_row(self, r) -> RunRow:
        return RunRow(int(r[0]), r[1], json.loads(r[2]), json.loads(r[3]), self._abs(r[4]),
                      json.loads(r[5]), json.loads(r[6]), r[7], float(r[8]), r[9], r[10], r[11],
                      r[12], r[13], self._abs(r[14]), json.loads(r[15] or "{}"))

    def run(self, run_id: int) -> RunRow:
        r = self.db.execute(f"SELECT {self._RUN_COLS} FROM runs WHERE id = ?", (run_id,)).fetchone()
        if r is None:
            raise KeyError(f"run {run_id} is not in the project")
        return self._run_row(r)

    def all(self) -> list[RunRow]:
        return [self._run_row(r) for r in self.db.execute(f"SELECT {self._RUN_COLS} FROM runs ORDER BY id")]

    def mark_orphaned_runs(self) -> list[int]:
        """Runs left 'running' or 'queued' by an app that is gone (its worker is not alive):
        failed, resumable. Returns their ids."""
        ids = []
        for run in self.all():
            if run.status in ("running", "queued") and not _alive(run.pid):
                self.update_run(run.id, status="failed", ended=time.time(),
                                error="the app closed or crashed while this run was training; "
                                      "Resume continues from its last checkpoint")
                ids.append(run.id)
        return ids

    # ---- models -------------------------------------------------------------------------------
    def add_model(self, run_id: int | None, path: Path, supervision: str, bundle_training: dict,
                  backbone: str, preset: str, validation: dict, calibration: dict,
                  labels_used: dict, label_seconds: dict, label_seconds_estimated: dict | None = None) -> int:
        tr = bundle_training
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO models(run_id, path, created, supervision, preset, backbone, device, "
                "device_name, train_seconds, steps, labels_used, label_seconds, validation, calibration, "
                "label_seconds_estimated) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (run_id, self._rel(path), time.time(), supervision, preset, backbone, tr.get("device"),
                 tr.get("device_name"), tr.get("seconds"), tr.get("steps"), json.dumps(labels_used),
                 json.dumps(label_seconds), json.dumps(validation, default=float),
                 json.dumps(calibration, default=float), json.dumps(label_seconds_estimated or {})))
            return int(cur.lastrowid)

    _MODEL_COLS = ("id, run_id, path, created, supervision, preset, backbone, device, device_name, "
                   "train_seconds, steps, labels_used, label_seconds, validation, calibration, "
                   "image_threshold, pixel_threshold, label_seconds_estimated")

    def _model_row(self, r) -> ModelRow:
        return ModelRow(int(r[0]), r[1], self._abs(r[2]), float(r[3]), r[4], r[5], r[6], r[7], r[8],
                        r[9], r[10], json.loads(r[11]), json.loads(r[12]), json.loads(r[13]),
                        json.loads(r[14]), r[15], r[16], json.loads(r[17] or "{}"))

    def model(self, model_id: int) -> ModelRow:
        r = self.db.execute(f"SELECT {self._MODEL_COLS} FROM models WHERE id = ?", (model_id,)).fetchone()
        if r is None:
            raise KeyError(f"model {model_id} is not in the project")
        return self._model_row(r)

    def models(self) -> list[ModelRow]:
        return [self._model_row(r) for r in
                self.db.execute(f"SELECT {self._MODEL_COLS} FROM models ORDER BY id")]

    def model_of_run(self, run_id: int) -> ModelRow | None:
        r = self.db.execute(f"SELECT {self._MODEL_COLS} FROM models WHERE run_id = ?", (run_id,)).fetchone()
        return None if r is None else self._model_row(r)

    def set_thresholds(self, model_id: int, image: float | None = None, pixel: float | None = None) -> None:
        """Store the user's thresholds for a model (None leaves that one unchanged)."""
        with self.transaction() as db:
            if image is not None:
                db.execute("UPDATE models SET image_threshold = ? WHERE id = ?", (float(image), model_id))
            if pixel is not None:
                db.execute("UPDATE models SET pixel_threshold = ? WHERE id = ?", (float(pixel), model_id))

    # ---- predictions --------------------------------------------------------------------------
    def save_predictions(self, model_id: int, items: Iterable[tuple[int, float, np.ndarray]]) -> None:
        now = time.time()
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO predictions VALUES (?,?,?,?,?)",
                           [(model_id, int(i), float(s), encode_block_map(b), now) for i, s, b in items])

    def prediction(self, model_id: int, image_id: int) -> tuple[float, np.ndarray] | None:
        r = self.db.execute("SELECT score, block_map FROM predictions WHERE model_id = ? AND image_id = ?",
                            (model_id, image_id)).fetchone()
        return None if r is None else (float(r[0]), decode_block_map(bytes(r[1])))

    def scores(self, model_id: int) -> dict[int, float]:
        return {int(i): float(s) for i, s in self.db.execute(
            "SELECT image_id, score FROM predictions WHERE model_id = ?", (model_id,))}


def _alive(pid: int | None) -> bool:
    """Is the training worker with this pid still running? (A reused pid is told apart on Linux by
    its command line; on Windows, where ``os.kill(pid, 0)`` would terminate it, we assume not.)"""
    if not pid or os.name == "nt":
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if Path("/proc/self").exists():
        try:
            return b"core.cli" in cmdline.read_bytes()
        except OSError:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True
