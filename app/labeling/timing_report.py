"""Annotation-timing exports: a per-image CSV, a summary CSV and a bar chart like the paper's Fig. 6.

Measured and estimated seconds (seeded by the demo or imported: not measured in this project) are
never mixed: the CSVs have a ``source`` column (``measured`` / ``estimated``), the summary has one
row per kind and source, and the plot draws estimated bars hatched beside the measured ones.

No Qt here: the export runs in a worker thread and in the CLI. Matplotlib is used through its Agg
canvas directly (never pyplot), so it cannot touch the app's Qt event loop or global state.
"""
from __future__ import annotations

import csv
import io
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2

from core.fileio import atomic_write_bytes, atomic_write_text
from ..project.store import Store, decode_mask
from .timing import CHECKED, TIMING_KINDS

KIND_TITLES = {"mask": "Pixel mask", "blocks": "Blocks", "boxes": "Rotated boxes", "tag": "Image tag",
               CHECKED: "Checked (verdict)"}
KIND_COLORS = {"mask": "#d9534f", "blocks": "#f0ad4e", "boxes": "#5b8def", "tag": "#5cb85c",
               CHECKED: "#8c6bb1"}
SOURCES = ("measured", "estimated")


@dataclass(frozen=True)
class TimingRow:
    image_id: int
    image: str
    split: str
    kind: str
    seconds: float
    shapes: int      # boxes, block cells, mask components (8-connected), 1 for a tag or a verdict
    estimated: bool = False          # seeded or imported, not measured in this project
    verdict: str | None = None       # kind "checked": the verdict given (latest visit)

    @property
    def source(self) -> str:
        return "estimated" if self.estimated else "measured"


@dataclass(frozen=True)
class KindSummary:
    kind: str
    images: int
    mean_s: float
    median_s: float
    std_s: float
    total_s: float
    source: str = "measured"         # "measured" or "estimated": never summarised together


def _shape_count(store: Store, image_id: int, kind: str, counts: dict[str, int]) -> int:
    if kind == CHECKED:
        return 1
    if kind not in counts:
        return 0
    if kind != "mask":
        return counts[kind]
    png = store.db.execute("SELECT mask_png FROM labels WHERE image_id = ? AND kind = 'mask'",
                           (image_id,)).fetchone()[0]
    n, _ = cv2.connectedComponents(decode_mask(bytes(png)), connectivity=8)
    return int(n) - 1


def timing_rows(store: Store, progress: Callable[[int, int], object] | None = None) -> list[TimingRow]:
    """One row per (image, kind, source) with recorded time, in import order."""
    totals = store.timing_totals()
    rows, cache = [], {}
    for i, (image_id, kind, estimated, seconds, verdict) in enumerate(totals):
        if image_id not in cache:
            cache.clear()
            cache[image_id] = (store.image(image_id), store.label_counts(image_id))
        img, counts = cache[image_id]
        rows.append(TimingRow(image_id, img.path, img.split, kind, round(seconds, 3),
                              _shape_count(store, image_id, kind, counts), estimated, verdict))
        if progress is not None:
            progress(i + 1, len(totals))
    return rows


def summarize(rows: list[TimingRow]) -> list[KindSummary]:
    """Mean (median, std, total) seconds per image for each kind that was timed, measured and
    estimated seconds apart (one summary each)."""
    out = []
    for kind in TIMING_KINDS:
        for source in SOURCES:
            secs = [r.seconds for r in rows if r.kind == kind and r.source == source]
            if secs:
                out.append(KindSummary(kind, len(secs), statistics.fmean(secs), statistics.median(secs),
                                       statistics.pstdev(secs), sum(secs), source))
    return out


def rows_csv(rows: list[TimingRow]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image_id", "image", "split", "kind", "seconds", "shapes", "source", "verdict"])
    for r in rows:
        w.writerow([r.image_id, r.image, r.split, r.kind, f"{r.seconds:.3f}", r.shapes, r.source,
                    r.verdict or ""])
    return buf.getvalue()


def summary_csv(summary: list[KindSummary]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["kind", "images", "mean_s", "median_s", "std_s", "total_s", "source"])
    for s in summary:
        w.writerow([s.kind, s.images, f"{s.mean_s:.3f}", f"{s.median_s:.3f}", f"{s.std_s:.3f}",
                    f"{s.total_s:.3f}", s.source])
    return buf.getvalue()


def summary_figure(summary: list[KindSummary], title: str = "Annotation time per image"):
    """Bar chart (a matplotlib Figure on an Agg canvas): mean seconds per image for each kind, with
    std error bars and n; measured bars solid, estimated ones hatched and pale beside them, and a
    legend saying which is which."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    fig = Figure(figsize=(6.0, 3.8), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if summary:
        kinds = [k for k in TIMING_KINDS if any(s.kind == k for s in summary)]
        sources = [src for src in SOURCES if any(s.source == src for s in summary)]
        width = 0.8 / len(sources)
        for j, source in enumerate(sources):
            sel = [s for s in summary if s.source == source]
            xs = [kinds.index(s.kind) + (j - (len(sources) - 1) / 2) * width for s in sel]
            colors = [KIND_COLORS[s.kind] for s in sel]
            estimated = source == "estimated"
            bars = ax.bar(xs, [s.mean_s for s in sel], width=width * 0.95, yerr=[s.std_s for s in sel],
                          capsize=4, color=colors, edgecolor=colors, linewidth=1.2,
                          alpha=0.35 if estimated else 1.0, hatch="//" if estimated else None)
            for bar, s in zip(bars, sel):
                ax.annotate(f"{s.mean_s:.1f} s\nn={s.images}{' est.' if estimated else ''}",
                            (bar.get_x() + bar.get_width() / 2, s.mean_s + s.std_s),
                            xytext=(0, 3), textcoords="offset points", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(kinds)), [KIND_TITLES[k] for k in kinds], fontsize=8)
        ax.set_ylim(0, max(s.mean_s + s.std_s for s in summary) * 1.35 + 1e-9)
        ax.legend(handles=[Patch(facecolor="0.35", edgecolor="0.35", label="measured"),
                           Patch(facecolor="0.35", edgecolor="0.35", alpha=0.35, hatch="//",
                                 label="estimated (seeded/imported, not measured)")],
                  fontsize=7, loc="best")
    else:
        ax.text(0.5, 0.5, "no annotation time recorded yet", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_ylabel("mean seconds per image")
    ax.set_title(title)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def summary_png(summary: list[KindSummary], title: str = "Annotation time per image") -> bytes:
    buf = io.BytesIO()
    summary_figure(summary, title).savefig(buf, format="png")
    return buf.getvalue()


def export_timing(store: Store, out_dir: str | Path,
                  progress: Callable[[int, int], object] | None = None) -> list[Path]:
    """Write ``timing.csv``, ``timing_summary.csv`` and ``timing_summary.png`` into ``out_dir``."""
    out_dir = Path(out_dir)
    rows = timing_rows(store, progress)
    summary = summarize(rows)
    paths = [out_dir / "timing.csv", out_dir / "timing_summary.csv", out_dir / "timing_summary.png"]
    atomic_write_text(paths[0], rows_csv(rows))
    atomic_write_text(paths[1], summary_csv(summary))
    atomic_write_bytes(paths[2], summary_png(summary))
    return paths       # readable by others: core.fileio gives new files the umask's mode
