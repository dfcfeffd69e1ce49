"""The Review panel: which model, how its heatmap is drawn, the two thresholds with the score
histogram and live counts, and the background jobs (score images, inspect a folder, export).

Widgets only; app.viewer.controller acts on its signals. The image threshold slider and the
histogram's line are one value; sliders work in thousandths of a score. Both thresholds and the
histogram run from 0 to the same top (1, or more for fused scores: histogram.axis_top), which the
controller sets per model and its scores.
"""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGridLayout,
                               QHBoxLayout, QLabel, QProgressBar, QPushButton, QSlider, QVBoxLayout,
                               QWidget)

from .histogram import ScoreHistogram
from .maps import COLORMAPS, CONTRAST_BETAS, VIEWS

STEPS = 1000


class ThresholdRow(QWidget):
    """A slider and a spin box bound to one threshold in [0, top]."""

    changed = Signal(float)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.slider = QSlider(Qt.Orientation.Horizontal, minimum=0, maximum=STEPS)
        self.spin = QDoubleSpinBox(minimum=0.0, maximum=1.0, decimals=3, singleStep=0.01)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.slider, 1)
        lay.addWidget(self.spin)
        self.slider.valueChanged.connect(lambda v: self._set(v / STEPS, emit=True))
        self.spin.valueChanged.connect(lambda v: self._set(v, emit=True))
        self._value = -1.0
        self.top = 1.0

    def set_top(self, top: float) -> None:
        """Widen or narrow the range; the value stays (clipped to it) and nothing is emitted."""
        self.top = float(top)
        for w, hi in ((self.slider, round(self.top * STEPS)), (self.spin, self.top)):
            w.blockSignals(True)
            w.setMaximum(hi)
            w.blockSignals(False)
        v, self._value = self._value, -1.0
        if v >= 0:
            self._set(v, emit=False)

    def value(self) -> float:
        return self._value

    def set_value(self, v: float) -> None:
        self._set(v, emit=False)

    def _set(self, v: float, emit: bool) -> None:
        v = round(min(self.top, max(0.0, float(v))), 3)
        if v == self._value:
            return
        self._value = v
        for w, val in ((self.slider, round(v * STEPS)), (self.spin, v)):
            w.blockSignals(True)
            w.setValue(val)
            w.blockSignals(False)
        if emit:
            self.changed.emit(v)


class ReviewPanel(QWidget):
    scoreRequested = Signal()
    inspectRequested = Signal()
    exportRequested = Signal()
    cancelRequested = Signal()
    displayChanged = Signal()
    imageThresholdChanged = Signal(float)
    pixelThresholdChanged = Signal(float)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.model_label = QLabel("No model: train one (Train panel), then review here")
        self.model_label.setWordWrap(True)
        self.show_heat = QCheckBox("Heatmap (H)", checked=True)
        self.show_labels = QCheckBox("Labels / ground truth (L)", checked=True)
        self.view = QComboBox()
        for v in VIEWS:
            self.view.addItem({"smoothed": "Smoothed map", "blocks": "Block grid"}[v], v)
        self.colormap = QComboBox()
        for c in COLORMAPS:
            self.colormap.addItem(c, c)
        self.opacity = QSlider(Qt.Orientation.Horizontal, minimum=0, maximum=100, value=60)
        self.contrast = QComboBox()
        self.contrast.addItem("As trained", None)
        for beta in CONTRAST_BETAS:
            self.contrast.addItem("Off" if beta == 0 else f"beta {beta:g}", float(beta))
        self.contrast.setToolTip("Multiply the map, pixel by pixel, by how much each pixel stands out of its "
                                 "surroundings: specks sharpen to their pixels (decision 0028). Scores and "
                                 "verdicts stay the model's; check it on images whose defects you know")
        self.image_thr = ThresholdRow()
        self.pixel_thr = ThresholdRow()
        self.histogram = ScoreHistogram()
        self.counts = QLabel("")
        self.counts.setWordWrap(True)
        self.image_info = QLabel("")
        self.image_info.setWordWrap(True)
        self.score_button = QPushButton("Score images")
        self.score_button.setToolTip("Run the model on every project image not scored yet (background)")
        self.inspect_button = QPushButton("Inspect a folder…")
        self.inspect_button.setToolTip("Add a folder of new parts (split 'inspect') and score them")
        self.export_button = QPushButton("Export report…")
        self.cancel_button = QPushButton("Cancel")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.job_label = QLabel("")
        self.job_label.setWordWrap(True)
        toggles = QHBoxLayout()
        toggles.addWidget(self.show_heat)
        toggles.addWidget(self.show_labels)
        form = QFormLayout()
        form.addRow("View", self.view)
        form.addRow("Colormap", self.colormap)
        form.addRow("Opacity", self.opacity)
        form.addRow("Pixel contrast", self.contrast)
        form.addRow("Image threshold", self.image_thr)
        form.addRow("Pixel threshold", self.pixel_thr)
        jobs = QGridLayout()
        jobs.addWidget(self.score_button, 0, 0)
        jobs.addWidget(self.inspect_button, 0, 1)
        jobs.addWidget(self.export_button, 1, 0)
        jobs.addWidget(self.cancel_button, 1, 1)
        lay = QVBoxLayout(self)
        lay.addWidget(self.model_label)
        lay.addLayout(toggles)
        lay.addLayout(form)
        lay.addWidget(self.histogram, 1)
        lay.addWidget(self.counts)
        lay.addWidget(self.image_info)
        lay.addLayout(jobs)
        lay.addWidget(self.job_label)
        lay.addWidget(self.progress)
        self.score_button.clicked.connect(self.scoreRequested.emit)
        self.inspect_button.clicked.connect(self.inspectRequested.emit)
        self.export_button.clicked.connect(self.exportRequested.emit)
        self.cancel_button.clicked.connect(self.cancelRequested.emit)
        for w in (self.show_heat, self.show_labels):
            w.toggled.connect(lambda _: self.displayChanged.emit())
        for w in (self.view, self.colormap, self.contrast):
            w.currentIndexChanged.connect(lambda _: self.displayChanged.emit())
        self.opacity.valueChanged.connect(lambda _: self.displayChanged.emit())
        self.image_thr.changed.connect(self._image_thr)
        self.histogram.thresholdChanged.connect(self._image_thr_from_histogram)
        self.pixel_thr.changed.connect(self.pixelThresholdChanged.emit)
        self.set_job(None)
        self.set_model_loaded(False)

    def _image_thr(self, v: float) -> None:
        self.histogram.set_threshold(v)
        self.imageThresholdChanged.emit(v)

    def _image_thr_from_histogram(self, v: float) -> None:
        self.image_thr.set_value(v)
        self.imageThresholdChanged.emit(v)

    def set_top(self, top: float) -> None:
        """The top of both thresholds' range and of the histogram's axis."""
        for w in (self.image_thr, self.pixel_thr, self.histogram):
            w.set_top(top)

    def set_thresholds(self, image: float, pixel: float) -> None:
        self.image_thr.set_value(image)
        self.histogram.set_threshold(image)
        self.pixel_thr.set_value(pixel)

    def set_model_loaded(self, loaded: bool) -> None:
        for w in (self.score_button, self.inspect_button, self.export_button, self.image_thr,
                  self.pixel_thr, self.histogram):
            w.setEnabled(loaded)

    def set_job(self, title: str | None, done: int = 0, total: int = 0) -> None:
        running = title is not None
        self.cancel_button.setEnabled(running)
        self.progress.setVisible(running)
        self.job_label.setText(f"{title}: {done} of {total}" if running else self.job_label.text())
        if running:
            self.progress.setRange(0, max(1, total))
            self.progress.setValue(done)

    def display(self) -> dict:
        return {"heat": self.show_heat.isChecked(), "labels": self.show_labels.isChecked(),
                "view": self.view.currentData(), "colormap": self.colormap.currentData(),
                "opacity": self.opacity.value() / 100.0, "contrast": self.contrast.currentData()}
