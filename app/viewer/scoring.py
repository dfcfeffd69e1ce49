"""Scoring project images with a model, off the GUI thread. No Qt.

The worker opens its own Store (sqlite3 connections belong to one thread), builds the core's
Predictor once, and for each image stores the image score and the block map (what the viewer
draws; the smoothed map is recomputed from it by ``core.eval.anomaly_map.postprocess``). Results are
written in small batches, so a cancel or a kill keeps what was scored and the list fills in while
the job runs. ``progress(done, total)`` returning False cancels between images.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from core.data.images import read_image
from core.errors import Cancelled, SemiRestError

from ..project.store import Store

BATCH_S = 0.5


def load_predictor(model_path: Path, device: str):
    from core.deploy.inference import Predictor
    from core.deploy.modelfile import ModelBundle
    from core.device import resolve_device
    bundle = ModelBundle.load(model_path)
    return bundle, Predictor(bundle, resolve_device(device))


def score_images(project: Path, model_id: int, image_ids: list[int], device: str,
                 progress: Callable[[int, int], bool] | None = None) -> dict:
    """Score ``image_ids`` with the model; returns {"scored": n, "skipped": [(name, why)]}."""
    with Store.open(project) as store:
        model = store.runs.model(model_id)
        _, pred = load_predictor(model.path, device)
        total, pending, skipped, done = len(image_ids), [], [], 0
        last = time.monotonic()
        for i, image_id in enumerate(image_ids):
            if progress is not None and progress(i, total) is False:
                store.runs.save_predictions(model_id, pending)
                raise Cancelled("scoring cancelled")
            row = store.image(image_id)
            try:
                img = read_image(row.abs_path)
            except SemiRestError as exc:
                skipped.append((row.name, getattr(exc, "problem", str(exc))))
                continue
            p = pred.predict(img)
            pending.append((image_id, p.score, p.block_map))
            done += 1
            if time.monotonic() - last > BATCH_S:
                store.runs.save_predictions(model_id, pending)
                pending, last = [], time.monotonic()
        store.runs.save_predictions(model_id, pending)
        if progress is not None:
            progress(total, total)
        return {"scored": done, "skipped": skipped}


def unscored(store: Store, model_id: int, split: str | None = None) -> list[int]:
    have = set(store.runs.scores(model_id))
    return [r.id for r in store.images(split) if r.id not in have]
