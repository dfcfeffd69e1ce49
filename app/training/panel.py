"""The Train panel: what to train (supervision, preset, backbone, steps, device) and the run in
progress (stage, progress bar, loss curve, steps per second, ETA, the error or advice).

Widgets only: it emits what the user asks for; app.training.controller does it.
"""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QComboBox, QFormLayout, QHBoxLayout, QLabel, QProgressBar,
                               QPushButton, QSpinBox, QVBoxLayout, QWidget)

from .device_picker import DevicePicker
from .loss_curve import LossCurve
from .worker_protocol import RunState
from core.config import TrainConfig
from core.methods import BY_NAME, METHODS, USES_LABELS

from .selection import BACKBONES, PRESETS, SUPERVISIONS, RunSpec
from core.deploy.precision import TRAIN_PRECISIONS

# the Precision choices as the panel words them (one entry per core.deploy.precision.TRAIN_PRECISIONS)
PRECISION_TEXT = {p: {"auto": "auto (bfloat16 where the hardware has it)", "float32": "float32",
                      "bfloat16": "bfloat16 (fast on CPUs with AMX, recent GPUs)",
                      "float16": "float16 (GPU only)"}.get(p, p) for p in TRAIN_PRECISIONS}

# Which benchmark column measures each supervision (bench/report.py, resources/label_costs.json).
BENCH_COLUMN = {"unsupervised": "Unsup", "masks": "Sup", "blocks": "Sup", "boxes": "Semi", "tags": "Tag"}

RESUME_TIP = "Continue the last cancelled or failed run from its checkpoint"
STATUS_COLORS = {"finished": "#2a8a3a", "cancelled": "#8a6d00", "failed": "#b02020", "running": "#2060b0"}


class TrainPanel(QWidget):
    trainRequested = Signal(object)        # RunSpec
    cancelRequested = Signal()
    resumeRequested = Signal()

    def __init__(self, app_settings=None, devices=None, label_costs: dict | None = None, parent=None):
        super().__init__(parent)
        self.app_settings = app_settings
        self.label_costs = label_costs          # benchmark means per supervision, or None
        self.label_counts: dict[str, int] = {}  # labelled defective images per supervision
        self.config_file: str | None = None     # advanced: a YAML over the preset (scripts, tests)
        self.method = QComboBox()
        for key, text in METHODS.items():
            self.method.addItem(key, key)
            self.method.setItemData(self.method.count() - 1, text, Qt.ItemDataRole.ToolTipRole)
        self.method_hint = QLabel("")
        self.method_hint.setWordWrap(True)
        self.method_hint.setObjectName("methodHint")
        self.supervision = QComboBox()
        for key, text in SUPERVISIONS.items():
            self.supervision.addItem(text, key)
        self.preset = QComboBox()
        for p in PRESETS:
            self.preset.addItem({"cpu": "cpu (small, minutes on a CPU)", "paper": "paper (large, for a GPU)"}.get(p, p), p)
        self.backbone = QComboBox()
        for b in BACKBONES:
            self.backbone.addItem("preset default" if b == "auto" else b, b)
        self.backbone.setToolTip("preset default: cpu uses the offline EfficientNet-Lite0; paper uses "
                                 "Wide-ResNet-50-2 when its weights are at hand, else Lite0")
        self.steps = QSpinBox(minimum=0, maximum=1_000_000, singleStep=100)
        self.steps.setSpecialValueText("preset default")
        self.precision = QComboBox()
        for key, text in PRECISION_TEXT.items():
            self.precision.addItem(text, key)
        self.precision.setToolTip("The Swin's float type while training. bfloat16 trained about 1.6x "
                                  "faster on a CPU with AMX (Intel Xeon 4th gen on) with the "
                                  "same accuracy on the benchmark; on other CPUs it is emulated and "
                                  "slower, so auto takes it only where the hardware has it. float16: "
                                  "NVIDIA GPUs only.")
        self.device = DevicePicker(app_settings, devices)
        form = QFormLayout()
        form.addRow("Method", self.method)
        form.addRow("", self.method_hint)
        form.addRow("Supervision", self.supervision)
        # what this kind of label bought on the benchmark: honest about what labels cost
        self.bench_hint = QLabel("")
        self.bench_hint.setWordWrap(True)
        self.bench_hint.setObjectName("benchHint")
        form.addRow("", self.bench_hint)
        form.addRow("Preset", self.preset)
        form.addRow("Backbone", self.backbone)
        form.addRow("Steps", self.steps)
        form.addRow("Precision", self.precision)
        form.addRow("Device", self.device)
        self.train_button = QPushButton("Train")
        self.train_button.setDefault(True)
        self.cancel_button = QPushButton("Cancel")
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip(RESUME_TIP)
        buttons = QHBoxLayout()
        for b in (self.train_button, self.cancel_button, self.resume_button):
            buttons.addWidget(b)
        self.run_label = QLabel("No run yet")
        self.run_label.setWordWrap(True)
        self.stage_label = QLabel("")
        self.stage_label.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.curve = LossCurve()
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addLayout(buttons)
        lay.addWidget(self.run_label)
        lay.addWidget(self.stage_label)
        lay.addWidget(self.progress)
        lay.addWidget(self.curve, 1)
        lay.addWidget(self.message)
        self.train_button.clicked.connect(lambda: self.trainRequested.emit(self.spec()))
        self.cancel_button.clicked.connect(self.cancelRequested.emit)
        self.resume_button.clicked.connect(self.resumeRequested.emit)
        self._restore()
        for combo in (self.method, self.supervision, self.preset, self.backbone, self.precision):
            combo.currentIndexChanged.connect(lambda _: self._remember())
        self.supervision.currentIndexChanged.connect(lambda _: self._update_bench_hint())
        self.method.currentIndexChanged.connect(lambda _: (self._update_method(), self._update_bench_hint()))
        self._update_method()
        self._update_bench_hint()
        self.set_running(False, resumable=False)

    # ---- settings -------------------------------------------------------------------------------
    def _update_method(self) -> None:
        """Describe the method in one line; a method that cannot learn from labels greys out the
        supervision choice and says why."""
        key = self.method.currentData()
        uses = USES_LABELS[key]
        if not uses and self.supervision.isEnabled():    # show what will be used; restore later
            self._supervision_before = self.supervision.currentData()
            self.supervision.setCurrentIndex(self.supervision.findData("unsupervised"))
        elif uses and not self.supervision.isEnabled() and getattr(self, "_supervision_before", None):
            self.supervision.setCurrentIndex(self.supervision.findData(self._supervision_before))
        self.supervision.setEnabled(uses)
        self.steps.setEnabled(BY_NAME[key].steps_setting is not None)   # PatchCore has no steps
        self.precision.setEnabled(BY_NAME[key].train_precision)          # only SemiREST's Swin has one
        text = METHODS[key]
        if not uses:   # the registry's own reason (core/methods/__init__.py)
            text += f". {BY_NAME[key].labels_note}: it cannot learn from labelled defects."
        self.method_hint.setText(text)

    def spec(self) -> RunSpec:
        method = self.method.currentData()
        supervision = self.supervision.currentData() if USES_LABELS[method] else "unsupervised"
        return RunSpec(supervision=supervision, method=method, preset=self.preset.currentData(),
                       backbone=self.backbone.currentData(), device=self.device.current(),
                       steps=self.steps.value() or None, config=self.config_file,
                       precision=self.precision.currentData() if self.precision.isEnabled() else "auto")

    def set_spec(self, spec: RunSpec) -> None:
        for combo, value in ((self.method, spec.method), (self.supervision, spec.supervision),
                             (self.preset, spec.preset), (self.backbone, spec.backbone),
                             (self.precision, spec.precision)):
            i = combo.findData(value)
            if i >= 0:
                combo.setCurrentIndex(i)
        self.steps.setValue(spec.steps or 0)
        self.device.select(spec.device)

    def _remember(self) -> None:
        if self.app_settings is not None:
            for key, combo in (("method", self.method), ("supervision", self.supervision),
                               ("preset", self.preset), ("backbone", self.backbone),
                               ("precision", self.precision)):
                self.app_settings.set_value(f"train/{key}", combo.currentData())

    def _restore(self) -> None:
        if self.app_settings is None:
            return
        for key, combo in (("method", self.method), ("supervision", self.supervision),
                           ("preset", self.preset), ("backbone", self.backbone),
                           ("precision", self.precision)):
            i = combo.findData(self.app_settings.value(f"train/{key}", None))
            if i >= 0:
                combo.setCurrentIndex(i)

    def set_label_counts(self, counts: dict[str, int]) -> None:
        """Say how many training images each supervision would use."""
        for i in range(self.supervision.count()):
            key = self.supervision.itemData(i)
            n = counts.get(key)
            text = SUPERVISIONS[key] + ("" if n is None or key == "unsupervised" else f" — {n} images")
            self.supervision.setItemText(i, text)
        self.label_counts = dict(counts)
        self._update_bench_hint()

    def _holdout_note(self) -> str:
        """A warning when the selected labels are too few for any to be held out (core/eval/realval.py):
        then nothing checks that they help, and the trained model replaces its start unchecked. On
        the benchmark's economy run, boxes on 2 images lost 6 points of pixel AP on a class of thin
        fibres before decision 0022 (0.9 after it), where 4 or more are checked and the start can
        stay; tags that few are not trained on at all (decision 0023), though each tagged image the
        model already tells from the normals still adds its highest block as a known defect (0025)."""
        key = self.supervision.currentData()
        n = self.label_counts.get(key)
        least = TrainConfig.real_val_min_labelled
        if (key in (None, "unsupervised") or not n or n >= least
                or not USES_LABELS.get(self.method.currentData(), False)):
            return ""
        if key == "tags":     # core/methods/semirest.py, decision 0023: unchecked tags are not trained on
            return (f"<b>{n} tagged image{'s' if n != 1 else ''}: none can be held out to check that "
                    f"{'they help' if n != 1 else 'it helps'}, so training will not use "
                    f"{'them' if n != 1 else 'it'}</b>: the model stays as it starts (from {least} tags on, "
                    "some are held out and the tags are trained on where they help). A tagged image the "
                    "model already tells from the normals still lends its highest block as a known defect.")
        return (f"<b>{n} labelled image{'s' if n != 1 else ''}: none can be held out to check that "
                f"{'they help' if n != 1 else 'it helps'}</b> (from {least} on, "
                f"{TrainConfig.real_val_fraction:.0%} are held out and the model without them competes); "
                "a few unchecked labels can make the model worse than none.")

    def _update_bench_hint(self) -> None:
        """One line: the benchmark's mean pixel AP with the selected supervision, beside no labels
        and full block labels, and a plain warning when these labels did worse than none."""
        costs = self.label_costs or {}
        ap = costs.get("pixel_ap", {})
        method = self.method.currentData()
        col = "PatchCore" if method == "patchcore" else BENCH_COLUMN.get(self.supervision.currentData())
        holdout = self._holdout_note()
        if col not in ap or "Unsup" not in ap:
            self.bench_hint.setText(holdout)
            self.bench_hint.setVisible(bool(holdout))
            return
        seeds = costs.get("seeds") or []
        where = (f"benchmark, {costs.get('data', '?')}, preset {costs.get('preset', '?')}, "
                 f"{costs.get('backbone', '?')}, {len(seeds)} seed{'s' if len(seeds) != 1 else ''}")
        text = f"Mean pixel AP {ap[col]:.1f} %"
        if col == "PatchCore":
            text += f" vs {ap['Unsup']:.1f} % for SemiREST without labels"
        elif col != "Unsup":
            text += f" vs {ap['Unsup']:.1f} % unsupervised"
        if col not in ("Sup", "Unsup") and "Sup" in ap:
            text += f" and {ap['Sup']:.1f} % with pixel masks"
        text += f" ({where})."
        if col not in ("Unsup", "PatchCore") and ap[col] < ap["Unsup"]:
            text += " <b>On this benchmark these labels made the model worse than none.</b>"
        if holdout:
            text += "<br>" + holdout
        self.bench_hint.setText(text)
        self.bench_hint.setVisible(True)

    # ---- the run --------------------------------------------------------------------------------
    def set_running(self, running: bool, resumable: bool) -> None:
        self.train_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.resume_button.setEnabled(not running and resumable)

    def show_run(self, run_id: int, status: str, note: str = "") -> None:
        color = STATUS_COLORS.get(status, "#444")
        self.run_label.setText(f"Run {run_id}: <b style='color:{color}'>{status}</b>" + (f" — {note}" if note else ""))

    def show_state(self, st: RunState, stopped: bool = False) -> None:
        """``stopped``: the run is not running (shown after a restart): where it stopped, no rate
        or ETA (nothing is counting down)."""
        if stopped:
            self.stage_label.setText(f"stopped at {st.position()}" if st.stage else "stopped before its first step")
        else:
            self.stage_label.setText(st.describe())
        self.progress.setValue(int(1000 * st.fraction))
        self.curve.set_data(st.curves, st.stage_starts)

    def show_message(self, text: str, error: bool = False) -> None:
        self.message.setStyleSheet("color: #b02020;" if error else "")
        self.message.setText(text)
