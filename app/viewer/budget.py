"""The label budget: for each trained model, validation pixel AP against the annotation seconds
spent on the labels it used, one point per model, marked by supervision. The manager's question
"what did the labelling cost, and what did it buy?" as one plot.

The plot is drawn with matplotlib's Agg canvas directly (never pyplot: no Qt backend, no global
state) into PNG bytes; the dialog shows them and can save them.
"""
from __future__ import annotations

import io
from pathlib import Path

from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QFileDialog, QLabel, QVBoxLayout

from core.fileio import atomic_write_bytes

from ..store_runs import ModelRow

MARKERS = {"unsupervised": "o", "all": "*", "boxes": "s", "blocks": "D", "masks": "P", "tags": "^"}


def budget_points(models: list[ModelRow]) -> list[tuple[float, float, str]]:
    """(label seconds, validation pixel AP, label) per model with a metric."""
    return [(m.label_seconds_total, m.val_pixel_ap, f"{m.id} {m.supervision}")
            for m in models if m.val_pixel_ap is not None]


def render_budget(models: list[ModelRow]) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.0), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    pts = [(m, m.label_seconds_total, m.val_pixel_ap) for m in models if m.val_pixel_ap is not None]
    for sup in sorted({m.supervision for m, _, _ in pts}):
        sel = [(x, y, m) for m, x, y in pts if m.supervision == sup]
        ax.scatter([x for x, _, _ in sel], [y for _, y, _ in sel], marker=MARKERS.get(sup, "o"), s=60,
                   label=sup, zorder=3)
        for x, y, m in sel:
            ax.annotate(f"model {m.id}", (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel("annotation seconds of the labels used")
    ax.set_ylabel("validation pixel AP")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(left=-1)
    ax.grid(True, alpha=0.3)
    if pts:
        ax.legend(title="supervision", fontsize=8, loc="lower right")
    else:
        ax.text(0.5, 0.5, "no trained models yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("Label budget: accuracy against labelling time")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


class BudgetDialog(QDialog):
    def __init__(self, models: list[ModelRow], parent=None):
        super().__init__(parent)
        self.setWindowTitle("Label budget")
        self.png = render_budget(models)
        self.plot = QLabel()
        pm = QPixmap()
        pm.loadFromData(self.png, "PNG")
        self.plot.setPixmap(pm)
        self.points = budget_points(models)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        buttons.button(QDialogButtonBox.StandardButton.Save).clicked.connect(self.ask_save)
        lay = QVBoxLayout(self)
        lay.addWidget(self.plot)
        lay.addWidget(buttons)

    def ask_save(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save the label-budget plot", "label_budget.png", "PNG (*.png)")
        if path:
            self.save(path)

    def save(self, path: str | Path) -> Path:
        atomic_write_bytes(path, self.png)
        return Path(path)
