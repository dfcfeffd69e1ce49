"""The review report: a CSV of every scored part and, optionally, its overlay PNG. No Qt.

Columns: image, path, split, label (what the project's labels say), score, flagged (score >=
image threshold), image_threshold, pixel_threshold, over_pixel_threshold (share of the image's
smoothed map at or above the pixel threshold), model (id and file), overlay (PNG name).
Runs in a worker thread with its own Store; ``progress`` returning False cancels.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Callable

from core.data.images import read_image, write_png
from core.errors import Cancelled
from core.fileio import atomic_write_text

from ..project.store import Store
from .maps import needs_image, overlay_rgb, smoothed_map

COLUMNS = ("image", "path", "split", "label", "score", "flagged", "image_threshold", "pixel_threshold",
           "over_pixel_threshold", "model", "overlay")


def export_report(project: Path, model_id: int, image_ids: list[int] | None, out_dir: str | Path,
                  overlays: bool = True, colormap: str = "jet", opacity: float = 0.6,
                  progress: Callable[[int, int], bool] | None = None) -> dict:
    out_dir = Path(out_dir)
    with Store.open(project) as store:
        model = store.runs.model(model_id)
        scores = store.runs.scores(model_id)
        ids = [i for i in (image_ids if image_ids is not None else scores) if i in scores]
        display = model.calibration.get("display")
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(COLUMNS)
        used: set[str] = set()
        flagged = 0
        for k, image_id in enumerate(ids):
            if progress is not None and progress(k, len(ids)) is False:
                raise Cancelled("report cancelled")
            row = store.image(image_id)
            score, block = store.runs.prediction(model_id, image_id)
            rgb = read_image(row.abs_path) if overlays or needs_image(display) else None
            amap = smoothed_map(block, row.width, row.height, display, rgb)
            over = float((amap >= model.pixel_threshold).mean())
            is_flagged = score >= model.image_threshold
            flagged += is_flagged
            name = ""
            if overlays:
                stem = row.abs_path.stem
                name, n = f"{stem}_overlay.png", 1
                while name in used:
                    name, n = f"{stem}-{n}_overlay.png", n + 1
                used.add(name)
                write_png(out_dir / "overlays" / name,
                          overlay_rgb(rgb, block, model.map_scale, colormap, opacity, display,
                                      model.map_floor))
            w.writerow([row.name, str(row.abs_path), row.split, row.status, f"{score:.6f}", int(is_flagged),
                        f"{model.image_threshold:.6f}", f"{model.pixel_threshold:.6f}", f"{over:.6f}",
                        f"{model.id}:{model.path.name}", f"overlays/{name}" if name else ""])
        csv_path = out_dir / f"report_model{model_id}.csv"
        atomic_write_text(csv_path, buf.getvalue())
        if progress is not None:
            progress(len(ids), len(ids))
        return {"csv": csv_path, "images": len(ids), "flagged": flagged,
                "overlays": out_dir / "overlays" if overlays else None}
