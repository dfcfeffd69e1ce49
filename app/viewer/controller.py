"""Review with a model: heatmap over the shown image, scores in the list, thresholds, histogram
and counts, background scoring / inspection / export, and the review loop.

- The review model is one of the project's models (the newest at open; a new one when training
  finishes). Its thresholds are read from and written to its row (debounced while dragging).
- Showing an image draws its cached prediction (score + block map) with the model's fixed scale;
  an image not scored yet says so. Scoring runs in a worker thread on the chosen device and fills
  the list in as it goes.
- Review loop: ``N`` tags the image normal (the canvas' undoable tag command, written at once)
  and moves to the next flagged image; a miss gets a box with the box tool on the same canvas.
  Both are training labels for "Retrain with corrections" (app.training.selection).
"""
from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QFileDialog

from ..project import importer
from ..project.store import Store
from ..workers import Job
from .heat import build_layer
from .maps import needs_image, smoothed_map
from .histogram import axis_top
from .report import export_report
from .scoring import score_images, unscored

SAVE_THRESHOLDS_MS = 400
FLAGGED = '<span style="color:#c02020">flagged</span>'


def _prewarm() -> None:
    import core.api  # noqa: F401  (torch and the core: ~2 s, off the GUI thread)


class ReviewController(QObject):
    modelChanged = Signal(object)
    scoresChanged = Signal()
    jobEnded = Signal(str, str)          # job name, "finished" | "failed" | "cancelled"

    def __init__(self, window, store: Store, panel, device_fn, parent=None):
        super().__init__(parent)
        self.window, self.store, self.panel = window, store, panel
        self.canvas = window.canvas
        self.device_fn = device_fn
        self.model = None
        self.scores: dict[int, float] = {}
        self._rows: list = []            # the listed split/status selection (for counts and histogram)
        self.job: Job | None = None
        self.closed = False
        # The last image's smoothed (and contrast-refined) map: a threshold drag, the opacity slider
        # or the colormap redraws the same map many times a second; only its colouring changes.
        self._map_key: tuple | None = None
        self._map = None
        self._save = QTimer(self, singleShot=True, interval=SAVE_THRESHOLDS_MS, timeout=self.save_thresholds)
        panel.displayChanged.connect(self.redraw)
        panel.imageThresholdChanged.connect(self._image_threshold)
        panel.pixelThresholdChanged.connect(self._pixel_threshold)
        panel.scoreRequested.connect(lambda: self.score())
        panel.inspectRequested.connect(lambda: self.inspect_folder())
        panel.exportRequested.connect(lambda: self.export())
        panel.cancelRequested.connect(self.cancel)
        models = store.runs.models()
        if models:
            threading.Thread(target=_prewarm, name="prewarm-core", daemon=True).start()
            self.set_model(models[-1].id)

    # ---- the model ------------------------------------------------------------------------------
    def set_model(self, model_id: int | None) -> None:
        self.save_thresholds()
        self.model = None if model_id is None else self.store.runs.model(model_id)
        m = self.model
        self.panel.set_model_loaded(m is not None)
        if m is not None:
            vm = m.validation_metric
            val = "no validation metric" if vm is None else f"validation {vm[0]:.3f} ({m.validation_basis})"
            self.panel.model_label.setText(
                f"<b>Model {m.id}</b> ({m.supervision}, {m.backbone}), {val}; map scale {m.map_scale:.3f}")
            self.scores = self.store.runs.scores(m.id)
            self._set_top()
            self.panel.set_thresholds(m.image_threshold, m.pixel_threshold)
        self.refresh_scores()
        self.modelChanged.emit(model_id)

    # ---- thresholds -----------------------------------------------------------------------------
    def _image_threshold(self, v: float) -> None:
        if self.model is None:
            return
        self.model = _with(self.model, user_image_threshold=v)
        self._save.start()
        self.refresh_scores(reload_scores=False)

    def _pixel_threshold(self, v: float) -> None:
        if self.model is None:
            return
        self.model = _with(self.model, user_pixel_threshold=v)
        self._save.start()
        self.redraw()

    def save_thresholds(self) -> None:
        """Write the model's thresholds to its row (called debounced, and on switching/closing)."""
        self._save.stop()
        m = self.model
        if m is not None and self.store.db is not None:
            self.store.runs.set_thresholds(m.id, m.user_image_threshold, m.user_pixel_threshold)

    # ---- scores, counts, histogram ----------------------------------------------------------------
    def refresh_scores(self, reload_scores: bool = True) -> None:
        if self.closed:
            return
        m = self.model
        if reload_scores:
            self.scores = {} if m is None else self.store.runs.scores(m.id)
            self._set_top()
        thr = None if m is None else m.image_threshold
        lst = self.window.image_list
        if lst is not None:
            lst.set_scores(self.scores, thr, m)
        if reload_scores or not self._rows:
            self._rows = [] if lst is None else self.store.images(lst.split_filter.currentData(),
                                                                   lst.status_filter.currentData())
        rows = self._rows
        groups: dict[str, list[float]] = {"defective": [], "normal": [], "unlabelled": []}
        for r in rows:
            if r.id in self.scores:
                groups[r.status].append(self.scores[r.id])
        self.panel.histogram.set_scores(groups)
        self.panel.counts.setText(self.counts_text(groups, thr))
        self.redraw()
        self.scoresChanged.emit()

    def _set_top(self) -> None:
        """The thresholds' and histogram's range: past 1 where the model's calibration or scores
        are (a map fusing the neighbour distance, core/learning/fusion.py, is not a probability); the
        calibrated thresholds stay in range, so the user can always go back to them."""
        m = self.model
        if m is not None:
            self.panel.set_top(axis_top(m.map_scale, m.image_threshold, m.pixel_threshold,
                                        m.calibration.get("image_threshold", 0.0),
                                        m.calibration.get("pixel_threshold", 0.0), *self.scores.values()))

    def labels_changed(self) -> None:
        """A label was saved: statuses (histogram colours, counts) may have changed."""
        self._rows = []
        self.refresh_scores(reload_scores=False)

    @staticmethod
    def counts_text(groups: dict[str, list[float]], thr: float | None) -> str:
        n = sum(len(v) for v in groups.values())
        if thr is None or n == 0:
            return "No scored parts in view"
        flagged = sum(s >= thr for v in groups.values() for s in v)
        text = f"<b>{flagged} of {n}</b> scored parts flagged"
        d, g = groups["defective"], groups["normal"]
        if d:
            text += f"; known defective caught: {sum(s >= thr for s in d)} of {len(d)}"
        if g:
            text += f"; known normal flagged (false alarms): {sum(s >= thr for s in g)} of {len(g)}"
        return text

    def flagged_count(self) -> int:
        thr = None if self.model is None else self.model.image_threshold
        return 0 if thr is None else sum(s >= thr for s in self.scores.values())

    # ---- drawing --------------------------------------------------------------------------------
    def redraw(self) -> None:
        if self.closed:
            return
        d = self.panel.display()
        self.canvas.show_labels = d["labels"]
        doc, m = self.canvas.document, self.model
        if doc is None or m is None or not d["heat"]:
            self.canvas.set_heat(None)
            self.panel.image_info.setText("" if m is None or doc is None else "heatmap hidden (H)")
            return
        pred = self.store.runs.prediction(m.id, doc.image_id)
        if pred is None:
            self.canvas.set_heat(None)
            self.panel.image_info.setText("This image is not scored yet: Score images")
            return
        score, block = pred
        display = m.calibration.get("display")
        if d["contrast"] is not None:          # the panel's Pixel contrast over the model's own
            display = {**(display or {}), "contrast": d["contrast"]}
        image = self.canvas.image.grey() if needs_image(display) and self.canvas.image is not None else None
        key = (m.id, doc.image_id, doc.width, doc.height, image is not None, block.shape, block.tobytes(),
               tuple(sorted((display or {}).items())))
        if key != self._map_key:
            self._map_key, self._map = key, smoothed_map(block, doc.width, doc.height, display, image)
        layer = build_layer(block, doc.width, doc.height, m.map_scale, d["view"], d["colormap"], d["opacity"],
                            m.pixel_threshold, display, m.map_floor, image, amap=self._map)
        self.canvas.set_heat(layer)
        verdict = FLAGGED if score >= m.image_threshold else "not flagged"
        self.panel.image_info.setText(
            f"Score <b>{score:.3f}</b> — {verdict} (image threshold {m.image_threshold:.3f}); "
            f"{100 * layer.over_fraction:.1f}% of the image over the pixel threshold {m.pixel_threshold:.3f}")

    def toggle(self, what: str) -> None:
        box = {"heat": self.panel.show_heat, "labels": self.panel.show_labels}[what]
        box.setChecked(not box.isChecked())

    def toggle_view(self) -> None:
        v = self.panel.view
        v.setCurrentIndex((v.currentIndex() + 1) % v.count())

    # ---- review loop ----------------------------------------------------------------------------
    def mark_normal_next(self) -> bool:
        """False alarm: tag the shown image normal (undoable) and go to the next flagged image."""
        ctl = self.window.controller
        if ctl is None or ctl.document is None:
            return False
        ctl.set_tag("normal")
        lst = self.window.image_list
        if lst is not None:
            lst.refresh(ctl.document.image_id)
            lst.next_flagged(1)
        return True

    # ---- background jobs --------------------------------------------------------------------------
    def _start(self, job: Job, title: str, on_done) -> Job | None:
        if self.job is not None:
            self.window.statusBar().showMessage("Another review job is running; cancel it first", 6000)
            return None
        self.job = job
        self.panel.set_job(title, 0, 0)
        job.progress.connect(lambda d, t: self.panel.set_job(title, d, t))

        def end(status: str, message: str = "") -> None:
            self.job = None
            if self.closed:
                return
            self.panel.set_job(None)
            self.panel.job_label.setText(f"{title}: {message or status}")
            self.refresh_scores()
            self.jobEnded.emit(job.name, status)

        job.finished.connect(lambda result: end("finished", on_done(result)))
        job.failed.connect(lambda msg: (end("failed", msg.splitlines()[0] if msg else "failed"),
                                        self.window.statusBar().showMessage(f"{title} failed: {msg}", 15000)))
        job.cancelled.connect(lambda: end("cancelled", "cancelled (what was done is kept)"))
        return job.start()

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def score(self, image_ids: list[int] | None = None) -> Job | None:
        if self.model is None:
            return None
        ids = unscored(self.store, self.model.id) if image_ids is None else image_ids
        if not ids:
            self.panel.job_label.setText("Every image is scored with this model")
            return None
        project, model_id, device = self.store.folder, self.model.id, self.device_fn()
        job = Job(lambda p: score_images(project, model_id, ids, device, p), "score", self)
        job.progress.connect(lambda d, t: d % 8 == 0 and self.refresh_scores())
        return self._start(job, f"Scoring {len(ids)} images on {device}",
                           lambda r: f"{r['scored']} scored" + (f", {len(r['skipped'])} unreadable" if r["skipped"] else ""))

    def inspect_folder(self, folder: str | Path | None = None) -> Job | None:
        """Add a folder of new parts (split 'inspect', referenced in place) and score them."""
        if self.model is None:
            return None
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self.window, "Inspect a folder of new parts")
            if not folder:
                return None
        project, model_id, device, folder = self.store.folder, self.model.id, self.device_fn(), Path(folder)

        def work(progress):
            with Store.open(project) as s:
                files = importer.scan_folder(folder, skip=s.folder)
                known = [s.find_image(f) for f in files]
                rep = importer.import_folder(s, folder, copy=False, split="inspect",
                                             progress=lambda d, t: progress(d, 2 * t))
                ids = [i for i in known if i is not None] + rep.added
            res = score_images(project, model_id, ids, device, lambda d, t: progress(t + d, 2 * t))
            return {**res, "added": len(rep.added), "skipped_files": rep.skipped, "ids": ids}

        return self._start(Job(work, "inspect", self), f"Inspecting {folder.name}", self._inspected)

    def _inspected(self, res: dict) -> str:
        lst = self.window.image_list
        if lst is not None:
            lst.split_filter.setCurrentIndex(max(0, lst.split_filter.findData("inspect")))
            lst.order.setCurrentIndex(max(0, lst.order.findData("desc")))
            lst.reload()
            lst.select_row(0)
        return f"{res['added']} new parts, {res['scored']} scored"

    def export(self, out_dir: str | Path | None = None, overlays: bool = True) -> Job | None:
        if self.model is None:
            return None
        if out_dir is None:
            out_dir = QFileDialog.getExistingDirectory(self.window, "Export the review report to",
                                                       str(self.store.folder / "exports"))
            if not out_dir:
                return None
        self.save_thresholds()
        lst = self.window.image_list
        ids = None if lst is None else lst.visible_ids()
        project, model_id, d = self.store.folder, self.model.id, self.panel.display()
        job = Job(lambda p: export_report(project, model_id, ids, out_dir, overlays, d["colormap"],
                                          d["opacity"], p), "export", self)
        return self._start(job, "Exporting the report",
                           lambda r: f"{r['images']} parts, {r['flagged']} flagged: {r['csv']}")

    def close(self) -> None:
        """Closing the project: keep the thresholds, stop a job (what it did is kept)."""
        self.save_thresholds()
        self.closed = True
        if self.job is not None:
            self.job.cancel()
            self.job.wait(30)


def _with(model, **changes):
    from dataclasses import replace
    return replace(model, **changes)
