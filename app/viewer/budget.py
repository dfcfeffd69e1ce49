"""The label budget: for each trained model, its validation metric against the annotation
seconds spent on the labels it used, one point per model, marked by supervision. The manager's
question "what did the labelling cost, and what did it buy?" as one plot.

The metric is the one :attr:`ModelRow.validation_metric` picks: measured on held-out real labelled
defects when the user had enough of them (filled markers), else on held-out normals with synthetic
defects (hollow markers); each point's note says which. A model whose label seconds were partly or
wholly estimated (seeded or imported, not measured: docs/decisions/0003-annotation-timing.md) gets
a dashed ring and "(est. N%)" in its note: its x is not a measured cost.

The plot is drawn with matplotlib's Agg canvas directly (never pyplot: no Qt backend, no global
state) into PNG bytes; the dialog shows them and can save them.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QFileDialog, QLabel, QVBoxLayout

from core.fileio import atomic_write_bytes

from ..project.runs import SYNTHETIC_SOURCE, ModelRow

MARKERS = {"unsupervised": "o", "all": "*", "boxes": "s", "blocks": "D", "masks": "P", "tags": "^"}
Y_LABEL = "validation AP (real defects where held out, else synthetic)"
ESTIMATED_LABEL = "estimated seconds"
START_LABEL = "start model"


@dataclass(frozen=True)
class BudgetPoint:
    model_id: int
    supervision: str
    seconds: float          # annotation seconds of the labels the model used
    value: float            # its validation metric (ModelRow.validation_metric)
    source: str             # what that metric is (app.project.runs.VALIDATION_SOURCES)
    real_images: int        # held-out real defective images (0: synthetic validation)
    estimated_fraction: float = 0.0   # share of ``seconds`` seeded or imported, not measured
    start_value: float | None = None  # the model it started from, on the same held-out real defects
    method: str = "semirest"

    @property
    def baseline(self) -> bool:
        """Trained on normal images only: a horizontal line (what labels must beat), not a point."""
        return self.supervision == "unsupervised"

    @property
    def real(self) -> bool:
        return self.source != SYNTHETIC_SOURCE

    @property
    def estimated(self) -> bool:
        return self.estimated_fraction > 0

    @property
    def estimated_note(self) -> str:
        """The note's suffix: ' (est. 80%)' when some of the seconds were estimated, else ''."""
        if not self.estimated:
            return ""
        pct = min(99, max(1, round(100 * self.estimated_fraction))) if self.estimated_fraction < 1 else 100
        return f" (est. {pct}%)"

    @property
    def label(self) -> str:
        """The note beside the point: "model 3 (real, 3 images)" or "model 1 (synthetic)", plus
        " (est. 80%)" when that share of its label seconds was estimated."""
        if not self.real:
            return f"model {self.model_id} (synthetic){self.estimated_note}"
        kind = "real, image AUROC" if "AUROC" in self.source else "real"
        n = self.real_images
        return f"model {self.model_id} ({kind}, {n} image{'' if n == 1 else 's'}){self.estimated_note}"


def budget_points(models: list[ModelRow]) -> list[BudgetPoint]:
    """One point per model with a validation metric."""
    out = []
    for m in models:
        vm = m.validation_metric
        if vm is not None:
            real = vm[1] != SYNTHETIC_SOURCE
            out.append(BudgetPoint(m.id, m.supervision, m.label_seconds_total, vm[0], vm[1],
                                   len(m.real_defect_images) if real else 0,
                                   m.label_seconds_estimated_fraction, m.start_validation, m.method))
    return out


def baseline_label(p: BudgetPoint) -> str:
    """The note on a baseline's line: "model 1: SemiREST, no labels (synthetic)"."""
    from core.methods import BY_NAME
    title = BY_NAME[p.method].title if p.method in BY_NAME else p.method
    return f"model {p.model_id}: {title}, no labels ({'real' if p.real else 'synthetic'})"


def budget_figure(models: list[ModelRow]):
    """The plot as a matplotlib Figure on an Agg canvas: colour and marker by supervision,
    filled for real-defect validation, hollow for synthetic; a dashed ring (the collection
    labelled ``ESTIMATED_LABEL``) around models whose label seconds were partly estimated.
    Models trained without labels (unsupervised SemiREST, PatchCore and the other normal-only
    methods) are horizontal dashed lines: the level labels have to beat. A model validated on
    held-out real defects that started from another model gets a dotted line from that start's
    value on the same defects (at 0 s, an x) to its own point: what its labels bought."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(6.0, 4.0), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    every = budget_points(models)
    pts = [p for p in every if not p.baseline]
    lines = [p for p in every if p.baseline]
    handles = []
    for i, sup in enumerate(sorted({p.supervision for p in pts})):
        color, marker = f"C{i % 10}", MARKERS.get(sup, "o")
        for real in (True, False):
            sel = [p for p in pts if p.supervision == sup and p.real == real]
            if sel:
                ax.scatter([p.seconds for p in sel], [p.value for p in sel], marker=marker, s=60, zorder=3,
                           facecolors=color if real else "none", edgecolors=color, linewidths=1.5,
                           label=f"{sup} ({'real' if real else 'synthetic'})")
        handles.append(Line2D([], [], linestyle="", marker=marker, color=color, markersize=7, label=sup))
    est = [p for p in pts if p.estimated]
    if est:
        ax.scatter([p.seconds for p in est], [p.value for p in est], marker="o", s=260, zorder=2,
                   facecolors="none", edgecolors="0.35", linewidths=1.0, linestyles="--", label=ESTIMATED_LABEL)
    for p in pts:
        ax.annotate(p.label, (p.seconds, p.value), textcoords="offset points", xytext=(6, 4), fontsize=8)
    for i, p in enumerate(lines):
        ax.axhline(p.value, color=f"C{(i + 5) % 10}", linestyle="--", linewidth=1.2, zorder=1,
                   label=baseline_label(p))
        ax.annotate(baseline_label(p), (0, p.value), textcoords="offset points", xytext=(4, 3), fontsize=7,
                    color=f"C{(i + 5) % 10}")
    starts = [p for p in pts if p.start_value is not None]
    for p in starts:
        ax.plot([0, p.seconds], [p.start_value, p.value], linestyle=":", color="0.45", linewidth=1.0, zorder=2)
    if starts:
        ax.scatter([0] * len(starts), [p.start_value for p in starts], marker="x", color="0.35", zorder=3,
                   label=START_LABEL)
    ax.set_xlabel("annotation seconds of the labels used")
    ax.set_ylabel(Y_LABEL, fontsize=8)
    ax.set_ylim(0, 1.02)
    # room on the right for the notes beside the rightmost points
    ax.set_xlim(-1, max(p.seconds for p in pts) * 1.35 + 10 if pts else 100)
    ax.grid(True, alpha=0.3)
    if lines:
        handles.append(Line2D([], [], linestyle="--", color="0.3", label="dashed: a model without labels"))
    if starts:
        handles.append(Line2D([], [], linestyle=":", marker="x", color="0.35", markersize=7,
                              label="x: the start model on the same held-out defects"))
    if pts or lines:
        handles += [Line2D([], [], linestyle="", marker="o", color="0.3", markersize=7,
                           label="filled: real defects held out"),
                    Line2D([], [], linestyle="", marker="o", color="0.3", markerfacecolor="none", markersize=7,
                           label="hollow: synthetic defects")]
        if est:
            handles.append(Line2D([], [], linestyle="", marker="o", markerfacecolor="none", markeredgecolor="0.35",
                                  markersize=10, label="ringed: label seconds partly estimated"))
        ax.legend(handles=handles, title="supervision", fontsize=7, title_fontsize=8, loc="lower right")
    else:
        ax.text(0.5, 0.5, "no trained models yet", ha="center", va="center", transform=ax.transAxes)
    if lines and not pts:
        ax.text(0.5, 0.35, "no labelled models yet: the lines are the models without labels",
                ha="center", va="center", transform=ax.transAxes, fontsize=8)
    ax.set_title("Label budget: accuracy against labelling time")
    fig.tight_layout()
    return fig


def render_budget(models: list[ModelRow]) -> bytes:
    buf = io.BytesIO()
    budget_figure(models).savefig(buf, format="png")
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
