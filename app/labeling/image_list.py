"""The image list: thumbnails, status and split, score, filters and sorting, keyboard navigation.

A list model over the store's rows (one SQL query per reload), a delegate that paints thumbnail,
name and a status chip, and a filter bar. Thumbnails come from :class:`ThumbnailLoader` in the
background; until one arrives the row shows a grey square, so thousands of rows scroll freely.
An image whose labels change while a filter is on stays in the list until the filter changes:
rows do not jump away under the user. With a model in review, each row shows the image score
(red when at or above the image threshold) and the list sorts and filters by score. "Next to
label" sorts the unlabelled images by how much a label would help (app/labeling/next_label.py,
core/eval/nextlabel.py: uncertainty, novelty, diversity; with no model, diversity alone), labelled ones
after them in import order.
"""
from __future__ import annotations

from collections import OrderedDict

from PySide6.QtCore import QAbstractListModel, QModelIndex, QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QHBoxLayout, QLabel, QLineEdit,
                               QListView, QStyle, QStyledItemDelegate, QVBoxLayout, QWidget)

from .next_label import NextLabelRanker
from ..settings import SPLITS, THUMB_SIZE
from ..project.store import STATUSES, ImageRow, Store
from .thumbnails import ThumbnailLoader

ID_ROLE = Qt.ItemDataRole.UserRole + 1
ROW_ROLE = Qt.ItemDataRole.UserRole + 2
SCORE_ROLE = Qt.ItemDataRole.UserRole + 3     # (score, flagged) or None
ORDERS = (("Import order", None), ("Score, highest first", "desc"), ("Score, lowest first", "asc"),
          ("Next to label", "next"))
SCORE_FILTERS = (("Any score", None), ("Flagged", "flagged"), ("Not flagged", "ok"), ("Not scored", "none"))
STATUS_COLORS = {"unlabelled": QColor(120, 120, 120), "normal": QColor(40, 160, 70),
                 "defective": QColor(210, 50, 50)}
ICON = 56   # px shown in the list
PIXMAP_CACHE = 3000   # list icons kept (scaled to ICON: ~12 kB each)


class ImageListModel(QAbstractListModel):
    def __init__(self, thumbs: ThumbnailLoader, parent=None):
        super().__init__(parent)
        self.rows: list[ImageRow] = []
        self._index: dict[int, int] = {}
        self._thumbs = thumbs
        self._pixmaps: OrderedDict[int, QPixmap] = OrderedDict()
        self.scores: dict[int, float] = {}
        self.threshold: float | None = None
        self.review_model = None          # app.project.runs.ModelRow of the scores (None: no model)
        thumbs.ready.connect(self._thumb_ready)

    def set_rows(self, rows: list[ImageRow]) -> None:
        self.beginResetModel()
        self.rows = rows
        self._index = {r.id: i for i, r in enumerate(rows)}
        self.endResetModel()

    def update_row(self, row: ImageRow) -> None:
        i = self._index.get(row.id)
        if i is not None:
            self.rows[i] = row
            idx = self.index(i)
            self.dataChanged.emit(idx, idx)

    def row_of(self, image_id: int) -> int | None:
        return self._index.get(image_id)

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return row.name
        if role == ID_ROLE:
            return row.id
        if role == ROW_ROLE:
            return row
        if role == SCORE_ROLE:
            sc = self.scores.get(row.id)
            return None if sc is None else (sc, self.threshold is not None and sc >= self.threshold)
        if role == Qt.ItemDataRole.ToolTipRole:
            where = "copied into the project" if row.copied else "referenced"
            return f"{row.abs_path}\n{row.width} x {row.height} px, {row.split}, {row.status} ({where})"
        if role == Qt.ItemDataRole.DecorationRole:
            return self.pixmap(row.id)
        return None

    def pixmap(self, image_id: int) -> QPixmap | None:
        pm = self._pixmaps.get(image_id)
        if pm is None:
            img = self._thumbs.get(image_id)     # None: requested in the background
            if img is None:
                return None
            pm = QPixmap.fromImage(img.scaled(ICON, ICON, Qt.AspectRatioMode.KeepAspectRatio,
                                              Qt.TransformationMode.SmoothTransformation))
            self._pixmaps[image_id] = pm
            while len(self._pixmaps) > PIXMAP_CACHE:
                self._pixmaps.popitem(last=False)
        else:
            self._pixmaps.move_to_end(image_id)
        return pm

    def _thumb_ready(self, image_id: int) -> None:
        i = self._index.get(image_id)
        if i is not None:
            idx = self.index(i)
            self.dataChanged.emit(idx, idx, [Qt.ItemDataRole.DecorationRole])


class ImageDelegate(QStyledItemDelegate):
    def sizeHint(self, option, index) -> QSize:
        return QSize(200, ICON + 8)

    def paint(self, p: QPainter, option, index) -> None:
        row: ImageRow = index.data(ROW_ROLE)
        p.save()
        if option.state & QStyle.StateFlag.State_Selected:
            p.fillRect(option.rect, option.palette.highlight())
            fg = option.palette.highlightedText().color()
        else:
            fg = option.palette.text().color()
        r = option.rect
        icon = QRect(r.left() + 4, r.top() + 4, ICON, ICON)
        pm = index.data(Qt.ItemDataRole.DecorationRole)
        if pm is None:
            p.fillRect(icon, QColor(70, 70, 70))
        else:
            p.drawPixmap(icon.left() + (ICON - pm.width()) // 2, icon.top() + (ICON - pm.height()) // 2, pm)
        text = QRect(icon.right() + 8, r.top() + 4, r.width() - ICON - 16, ICON)
        p.setPen(fg)
        p.drawText(text, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop,
                   p.fontMetrics().elidedText(row.name, Qt.TextElideMode.ElideMiddle, text.width()))
        chip = QRect(text.left(), text.top() + p.fontMetrics().height() + 6, 0, p.fontMetrics().height() + 2)
        chips = [(row.status, STATUS_COLORS[row.status]), (row.split, QColor(80, 110, 160))]
        scored = index.data(SCORE_ROLE)
        if scored is not None:
            chips.append((f"{scored[0]:.3f}", QColor(200, 40, 40) if scored[1] else QColor(95, 95, 95)))
        for label, color in chips:
            chip.setWidth(p.fontMetrics().horizontalAdvance(label) + 12)
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(color)
            p.drawRoundedRect(chip, 4, 4)
            p.setPen(QColor(255, 255, 255))
            p.drawText(chip, Qt.AlignmentFlag.AlignCenter, label)
            chip.moveLeft(chip.right() + 6)
        p.restore()


class ImageListPanel(QWidget):
    currentImageChanged = Signal(object)     # image id or None

    def __init__(self, store: Store, thumbs: ThumbnailLoader, parent=None):
        super().__init__(parent)
        self.store = store
        self.status_filter = QComboBox()
        self.status_filter.addItem("All images", None)
        for s in STATUSES:
            self.status_filter.addItem(s.capitalize(), s)
        self.split_filter = QComboBox()
        self.split_filter.addItem("All splits", None)
        for s in SPLITS:
            self.split_filter.addItem(s, s)
        self.search = QLineEdit(placeholderText="Filter by name…", clearButtonEnabled=True)
        self.order = QComboBox()
        for text, key in ORDERS:
            self.order.addItem(text, key)
        self.score_filter = QComboBox()
        for text, key in SCORE_FILTERS:
            self.score_filter.addItem(text, key)
        self.count = QLabel()
        self._total = 0
        self.ranker = NextLabelRanker(store)
        self.model = ImageListModel(thumbs, self)
        self.view = QListView()
        self.view.setModel(self.model)
        self.view.setItemDelegate(ImageDelegate(self.view))
        self.view.setUniformItemSizes(True)          # only visible rows are measured and painted
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.view.setIconSize(QSize(THUMB_SIZE, THUMB_SIZE))
        filters = QHBoxLayout()
        filters.addWidget(self.status_filter)
        filters.addWidget(self.split_filter)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(filters)
        scores = QHBoxLayout()
        scores.addWidget(self.order)
        scores.addWidget(self.score_filter)
        lay.addLayout(scores)
        lay.addWidget(self.search)
        lay.addWidget(self.view, 1)
        lay.addWidget(self.count)
        self.status_filter.currentIndexChanged.connect(lambda _: self.reload())
        self.split_filter.currentIndexChanged.connect(lambda _: self.reload())
        self.search.textChanged.connect(lambda _: self.reload())
        self.order.currentIndexChanged.connect(lambda _: self.reload())
        self.score_filter.currentIndexChanged.connect(lambda _: self.reload())
        self.view.selectionModel().currentChanged.connect(self._current_changed)

    def reload(self) -> None:
        """Re-read the rows for the current filters, keeping the current image if it still shows."""
        current = self.current_id()
        rows = self.store.images(split=self.split_filter.currentData(), status=self.status_filter.currentData())
        needle = self.search.text().strip().lower()
        if needle:
            rows = [r for r in rows if needle in str(r.path).lower()]
        rows = self._by_score(rows)
        self.view.selectionModel().blockSignals(True)
        self.model.set_rows(rows)
        self.view.selectionModel().blockSignals(False)
        self._total = self.store.image_count()
        self.count.setText(f"{len(rows)} of {self._total} images")
        if current is not None and self.model.row_of(current) is not None:
            self.select(current, emit=False)
        elif current is not None:
            self.currentImageChanged.emit(self.current_id())

    def _by_score(self, rows: list[ImageRow]) -> list[ImageRow]:
        sc, thr = self.model.scores, self.model.threshold
        want = self.score_filter.currentData()
        if want == "none":
            rows = [r for r in rows if r.id not in sc]
        elif want is not None:
            flagged = want == "flagged"
            rows = [r for r in rows if r.id in sc and (thr is not None and sc[r.id] >= thr) == flagged]
        order = self.order.currentData()
        if order == "next":
            return self._ranked(rows)
        if order is not None:
            scored = sorted((r for r in rows if r.id in sc), key=lambda r: sc[r.id], reverse=order == "desc")
            rows = scored + [r for r in rows if r.id not in sc]      # unscored last, in import order
        return rows

    def _ranked(self, rows: list[ImageRow], exclude: int | None = None) -> list[ImageRow]:
        """Unlabelled rows best to label first, then the rest in the order given."""
        by_id = {r.id: r for r in rows}
        todo = [r.id for r in rows if r.status == "unlabelled" and r.id != exclude]
        ranked = self.ranker.rank(todo, self.model.review_model, self.model.scores) if todo else []
        first = set(ranked)
        return [by_id[i] for i in ranked] + [r for r in rows if r.id not in first]

    def next_to_label(self) -> bool:
        """Go to the listed unlabelled image a label would help most (not the one shown: pressing
        it again after looking moves on). Ranked afresh: the labels given since count."""
        cur = self.current_id()
        ranked = self._ranked(list(self.model.rows), exclude=cur)
        if not ranked or ranked[0].status != "unlabelled":
            return False
        return self.select(ranked[0].id)

    def set_scores(self, scores: dict[int, float], threshold: float | None, review_model=None) -> None:
        """The review model's scores and image threshold: shown per row, used to sort and filter
        (``review_model``: its row, whose block maps the "Next to label" ranking reads)."""
        self.model.scores, self.model.threshold = dict(scores), threshold
        self.model.review_model = review_model
        if self.order.currentData() is not None or self.score_filter.currentData() is not None:
            self.reload()
        else:
            self.view.viewport().update()

    def visible_ids(self) -> list[int]:
        return [r.id for r in self.model.rows]

    def refresh(self, image_id: int) -> None:
        """One image's labels or split changed: update its row in place."""
        try:
            self.model.update_row(self.store.image(image_id))
        except Exception:
            self.reload()

    def refresh_all(self) -> None:
        """Another window changed the project: update statuses; reload if images came or went."""
        rows = {r.id: r for r in self.store.images()}
        if len(rows) != self._total or any(r.id not in rows for r in self.model.rows):
            self.reload()
            return
        for r in list(self.model.rows):
            if rows[r.id] != r:
                self.model.update_row(rows[r.id])

    def current_id(self) -> int | None:
        idx = self.view.currentIndex()
        return idx.data(ID_ROLE) if idx.isValid() else None

    def selected_ids(self) -> list[int]:
        ids = [i.data(ID_ROLE) for i in self.view.selectionModel().selectedIndexes()]
        cur = self.current_id()
        return ids or ([cur] if cur is not None else [])

    def select(self, image_id: int, emit: bool = True) -> bool:
        row = self.model.row_of(image_id)
        if row is None:
            return False
        idx = self.model.index(row)
        if not emit:
            self.view.selectionModel().blockSignals(True)
        self.view.setCurrentIndex(idx)
        self.view.scrollTo(idx)
        if not emit:
            self.view.selectionModel().blockSignals(False)
            self.view.viewport().update()
        return True

    def select_row(self, row: int) -> bool:
        if not 0 <= row < self.model.rowCount():
            return False
        return self.select(self.model.rows[row].id)

    def step(self, delta: int) -> bool:
        cur = self.current_id()
        row = -1 if cur is None else self.model.row_of(cur)
        return self.select_row(max(0, row + delta) if cur is not None else 0)

    def next_unlabelled(self) -> bool:
        cur = self.current_id()
        start = 0 if cur is None else self.model.row_of(cur) + 1
        n = len(self.model.rows)
        for k in range(n):
            r = self.model.rows[(start + k) % n]
            if r.status == "unlabelled" and r.id != cur:
                return self.select(r.id)
        return False

    def next_flagged(self, delta: int = 1) -> bool:
        """The next (or previous) listed image at or above the image threshold."""
        sc, thr = self.model.scores, self.model.threshold
        if thr is None:
            return False
        cur = self.current_id()
        n = len(self.model.rows)
        start = -1 if cur is None else self.model.row_of(cur)
        for k in range(1, n + 1):
            r = self.model.rows[(start + delta * k) % n]
            if r.id != cur and sc.get(r.id, -1.0) >= thr:
                return self.select(r.id)
        return False

    def _current_changed(self, current, _previous) -> None:
        self.currentImageChanged.emit(current.data(ID_ROLE) if current.isValid() else None)
