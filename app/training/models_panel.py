"""The project's models and runs, as two tables.

Models: date, supervision, labels used (images of each kind) and their annotation seconds,
backbone, preset, device, training time, the validation metric and what it was measured on (real
held-out defects when there were enough labelled ones, else synthetic defects;
``ModelRow.validation_metric``), and the change against the model it was retrained from, so
"Retrain with corrections" shows the new metrics beside the old. The change is a difference only
when both were measured the same way; otherwise the row says the sources differ.
Runs: status, when, how long, and the error of a failed run (the whole message in the tooltip).
Widgets only; the controller fills them from the store.
"""
from __future__ import annotations

import datetime as dt

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QPushButton,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from ..project.runs import ModelRow, RunRow
from .worker_protocol import format_seconds

MODEL_COLUMNS = ("Model", "Created", "Supervision", "Labels used", "Label time", "Backbone", "Preset",
                 "Device", "Train time", "Validation", "Validated on", "vs. parent", "Image thr.")
RUN_COLUMNS = ("Run", "Status", "Started", "Duration", "Supervision", "Device", "Message")
ID_ROLE = Qt.ItemDataRole.UserRole + 1


def label_time_text(m: ModelRow) -> str:
    """The "Label time" cell: "37 s", or "37 s (30 s est.)" when some were seeded or imported."""
    if not m.labels_used:
        return ""
    text = format_seconds(m.label_seconds_total)
    est = m.label_seconds_estimated_total
    return f"{text} ({format_seconds(est)} est.)" if est > 0 else text


def labels_text(labels_used: dict) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in sorted(labels_used.items())) or "none"


def when(t: float | None) -> str:
    return "" if t is None else dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M")


def parent_delta(model: ModelRow, parent: ModelRow | None) -> str:
    """The "vs. parent" text: the difference of the validation metrics when both were measured on
    the same source; when the sources differ, no difference, only the parent's number and source."""
    mine, theirs = model.validation_metric, None if parent is None else parent.validation_metric
    if mine is None or theirs is None:
        return ""
    if mine[1] != theirs[1]:
        return f"sources differ (model {parent.id}: {theirs[1]} {theirs[0]:.3f})"
    return f"{mine[0] - theirs[0]:+.3f} (model {parent.id}: {theirs[0]:.3f})"


def _item(text: str, ident: int | None = None, tip: str | None = None, color: QColor | None = None,
          align_right: bool = False) -> QTableWidgetItem:
    it = QTableWidgetItem(text)
    it.setFlags(Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled)
    if ident is not None:
        it.setData(ID_ROLE, ident)
    if tip:
        it.setToolTip(tip)
    if color is not None:
        it.setForeground(color)
    if align_right:
        it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return it


def _table(columns) -> QTableWidget:
    t = QTableWidget(0, len(columns))
    t.setHorizontalHeaderLabels(list(columns))
    t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    t.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    t.verticalHeader().hide()
    t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    t.horizontalHeader().setStretchLastSection(True)
    return t


class ModelsPanel(QWidget):
    modelActivated = Signal(int)          # review with this model
    retrainRequested = Signal(int)        # model id
    resumeRequested = Signal(int)         # run id
    budgetRequested = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.models = _table(MODEL_COLUMNS)
        self.runs = _table(RUN_COLUMNS)
        self.review_button = QPushButton("Review with this model")
        self.retrain_button = QPushButton("Retrain with corrections")
        self.retrain_button.setToolTip("A new run with the same settings and today's labels (review "
                                       "corrections included), starting from this model")
        self.budget_button = QPushButton("Label budget…")
        self.resume_button = QPushButton("Resume run")
        row = QHBoxLayout()
        for b in (self.review_button, self.retrain_button, self.budget_button):
            row.addWidget(b)
        run_row = QHBoxLayout()
        run_row.addWidget(QLabel("Runs"))
        run_row.addStretch(1)
        run_row.addWidget(self.resume_button)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Models"))
        lay.addWidget(self.models, 2)
        lay.addLayout(row)
        lay.addLayout(run_row)
        lay.addWidget(self.runs, 1)
        self.review_button.clicked.connect(lambda: self._emit_model(self.modelActivated))
        self.models.itemDoubleClicked.connect(lambda _: self._emit_model(self.modelActivated))
        self.retrain_button.clicked.connect(lambda: self._emit_model(self.retrainRequested))
        self.budget_button.clicked.connect(self.budgetRequested.emit)
        self.resume_button.clicked.connect(self._emit_resume)
        self.models.itemSelectionChanged.connect(self._sync_buttons)
        self.runs.itemSelectionChanged.connect(self._sync_buttons)
        self._resumable: set[int] = set()
        self._sync_buttons()

    def set_models(self, models: list[ModelRow], parents: dict[int, int | None], active: int | None) -> None:
        by_id = {m.id: m for m in models}
        keep = self.selected_model()
        self.models.setRowCount(len(models))
        for r, m in enumerate(reversed(models)):           # newest first
            vm = m.validation_metric
            parent = by_id.get(parents.get(m.id) or -1)
            name = f"{m.id}" + ("  ◀ reviewing" if m.id == active else "")
            cells = [name, when(m.created), m.supervision, labels_text(m.labels_used),
                     label_time_text(m), m.backbone or "", m.preset or "",
                     m.device_name and f"{m.device} ({m.device_name})" or (m.device or ""),
                     format_seconds(m.train_seconds or 0), "" if vm is None else f"{vm[0]:.3f}", m.validation_basis,
                     parent_delta(m, parent), f"{m.image_threshold:.3f}"]
            est = ", ".join(f"{k}: {v:.0f} s estimated" for k, v in sorted(m.label_seconds_estimated.items()))
            tips = {3: ", ".join(f"{k}: {v:.0f} s" for k, v in sorted(m.label_seconds.items())),
                    4: est or None, 0: str(m.path), 9: m.validation_basis or None,
                    10: ", ".join(m.real_defect_images) if m.validated_on_real else None}
            for c, text in enumerate(cells):
                self.models.setItem(r, c, _item(text, m.id, tips.get(c), align_right=c in (9, 12)))
        if keep is not None:
            self.select_model(keep)
        self._sync_buttons()

    def set_runs(self, runs: list[RunRow]) -> None:
        self.runs.setRowCount(len(runs))
        self._resumable = {r.id for r in runs if r.resumable and r.checkpoint_path.exists()}
        colors = {"failed": QColor(176, 32, 32), "cancelled": QColor(138, 109, 0), "finished": QColor(42, 138, 58),
                  "running": QColor(32, 96, 176)}
        for r, run in enumerate(reversed(runs)):
            dur = ""
            if run.started:
                dur = format_seconds((run.ended or run.started) - run.started) if run.ended else "running"
            msg = (run.error or "").strip()
            first = msg.splitlines()[0] if msg else ""
            if run.id in self._resumable:
                first = (first + "  [resumable]").strip()
            cells = [str(run.id), run.status, when(run.started or run.created), dur,
                     run.settings.get("supervision", ""), run.settings.get("device", ""), first]
            for c, text in enumerate(cells):
                self.runs.setItem(r, c, _item(text, run.id, msg or None, colors.get(run.status) if c == 1 else None))
        self._sync_buttons()

    def selected_model(self) -> int | None:
        items = self.models.selectedItems()
        return items[0].data(ID_ROLE) if items else None

    def selected_run(self) -> int | None:
        items = self.runs.selectedItems()
        return items[0].data(ID_ROLE) if items else None

    def select_model(self, model_id: int) -> bool:
        for r in range(self.models.rowCount()):
            if self.models.item(r, 0).data(ID_ROLE) == model_id:
                self.models.selectRow(r)
                return True
        return False

    def model_row_texts(self, model_id: int) -> dict[str, str]:
        """Column name -> shown text of one model's row (tests, accessibility)."""
        for r in range(self.models.rowCount()):
            if self.models.item(r, 0).data(ID_ROLE) == model_id:
                return {name: self.models.item(r, c).text() for c, name in enumerate(MODEL_COLUMNS)}
        raise KeyError(model_id)

    def run_row_texts(self, run_id: int) -> dict[str, str]:
        for r in range(self.runs.rowCount()):
            if self.runs.item(r, 0).data(ID_ROLE) == run_id:
                return {name: self.runs.item(r, c).text() for c, name in enumerate(RUN_COLUMNS)}
        raise KeyError(run_id)

    def _emit_model(self, signal) -> None:
        m = self.selected_model()
        if m is not None:
            signal.emit(m)

    def _emit_resume(self) -> None:
        r = self.selected_run()
        if r is not None:
            self.resumeRequested.emit(r)

    def _sync_buttons(self) -> None:
        has = self.selected_model() is not None
        self.review_button.setEnabled(has)
        self.retrain_button.setEnabled(has)
        self.resume_button.setEnabled(self.selected_run() in self._resumable)
