"""Annotation-timing exports: a per-image CSV, a summary CSV and a bar chart like the paper's Fig. 6.

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
from core.labels import LABEL_KINDS

from .store import Store, decode_mask

KIND_TITLES = {"mask": "Pixel mask", "blocks": "Blocks", "boxes": "Rotated boxes", "tag": "Image tag"}


@dataclass(frozen=True)
class TimingRow:
    image_id: int
    image: str
    split: str
    kind: str
    seconds: float
    shapes: int      # boxes, block cells, mask components (8-connected), 1 for a tag


@dataclass(frozen=True)
class KindSummary:
    kind: str
    images: int
    mean_s: float
    median_s: float
    std_s: float
    total_s: float


def _shape_count(store: Store, image_id: int, kind: str, counts: dict[str, int]) -> int:
    if kind not in counts:
        return 0
    if kind != "mask":
        return counts[kind]
    png = store.db.execute("SELECT mask_png FROM labels WHERE image_id = ? AND kind = 'mask'",
                           (image_id,)).fetchone()[0]
    n, _ = cv2.connectedComponents(decode_mask(bytes(png)), connectivity=8)
    return int(n) - 1


def timing_rows(store: Store, progress: Callable[[int, int], object] | None = None) -> list[TimingRow]:
    """One row per (image, kind) with measured time, in import order."""
    totals = store.timing_totals()
    rows, cache = [], {}
    for i, (image_id, kind, seconds) in enumerate(totals):
        if image_id not in cache:
            cache.clear()
            cache[image_id] = (store.image(image_id), store.label_counts(image_id))
        img, counts = cache[image_id]
        rows.append(TimingRow(image_id, img.path, img.split, kind, round(seconds, 3),
                              _shape_count(store, image_id, kind, counts)))
        if progress is not None:
            progress(i + 1, len(totals))
    return rows


def summarize(rows: list[TimingRow]) -> list[KindSummary]:
    """Mean (median, std, total) seconds per image for each label kind that was timed."""
    out = []
    for kind in LABEL_KINDS:
        secs = [r.seconds for r in rows if r.kind == kind]
        if secs:
            out.append(KindSummary(kind, len(secs), statistics.fmean(secs), statistics.median(secs),
                                   statistics.pstdev(secs), sum(secs)))
    return out


def rows_csv(rows: list[TimingRow]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image_id", "image", "split", "kind", "seconds", "shapes"])
    for r in rows:
        w.writerow([r.image_id, r.image, r.split, r.kind, f"{r.seconds:.3f}", r.shapes])
    return buf.getvalue()


def summary_csv(summary: list[KindSummary]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["kind", "images", "mean_s", "median_s", "std_s", "total_s"])
    for s in summary:
        w.writerow([s.kind, s.images, f"{s.mean_s:.3f}", f"{s.median_s:.3f}", f"{s.std_s:.3f}",
                    f"{s.total_s:.3f}"])
    return buf.getvalue()


def summary_png(summary: list[KindSummary], title: str = "Annotation time per image") -> bytes:
    """Bar chart: mean seconds per image for each label kind, with std error bars and n."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if summary:
        names = [KIND_TITLES[s.kind] for s in summary]
        means = [s.mean_s for s in summary]
        bars = ax.bar(names, means, yerr=[s.std_s for s in summary], capsize=4,
                      color=["#d9534f", "#f0ad4e", "#5b8def", "#5cb85c"][:len(summary)])
        for bar, s in zip(bars, summary):
            ax.annotate(f"{s.mean_s:.1f} s\nn={s.images}", (bar.get_x() + bar.get_width() / 2, s.mean_s + s.std_s),
                        xytext=(0, 3), textcoords="offset points", ha="center", va="bottom", fontsize=8)
        ax.set_ylim(0, max(m + s.std_s for m, s in zip(means, summary)) * 1.35 + 1e-9)
    else:
        ax.text(0.5, 0.5, "no annotation time recorded yet", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_ylabel("mean seconds per image")
    ax.set_title(title)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
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
    return paths
