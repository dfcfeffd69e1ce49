"""The labelling controller: binds the store, the canvas, the undo stacks and the annotation timer.

- Opening an image reads its labels from the store (fast) and decodes the image and the mask in a
  background thread; a stale result (the user already moved on) is dropped.
- Every undo command changes the document, and every document change is written to the store at
  once, in its own transaction (undo and redo too). Nothing is ever saved by hand.
- Each image keeps its QUndoStack (and document) while it stays in a small cache, so going back
  to an image keeps its history.
- Another window's commit is noticed by polling ``PRAGMA data_version``; if it touched the open
  image, the image's labels are reloaded and its undo history is cleared (undoing would silently
  overwrite the other window's work).
"""
from __future__ import annotations

import sqlite3
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtGui import QUndoGroup, QUndoStack

from core.data.labels import TAGS
from core.errors import LabelError, SemiRestError

from ..canvas.canvas import Canvas
from ..canvas.commands import tag_command
from ..canvas.document import LabelDocument
from ..canvas.layers import load_image
from ..settings import EXTERNAL_POLL_MS, SAVE_TIMING_EVERY_MS
from ..project.store import Store, StoreError, decode_mask
from .timing import AnnotationTimer

DOC_CACHE = 12            # images whose documents and undo history stay in memory


class LabelingController(QObject):
    imageShown = Signal(int)              # the canvas now shows this image
    imageFailed = Signal(int, str)
    labelsSaved = Signal(int)             # this image's labels changed in the database
    externalChange = Signal()             # another window committed something
    message = Signal(str)

    _loaded = Signal(int, object)         # from the loader thread: (generation, result or error)

    def __init__(self, store: Store, canvas: Canvas, timer: AnnotationTimer | None = None, parent=None):
        super().__init__(parent)
        self.store, self.canvas = store, canvas
        self.settings = store.settings()
        self.timer = timer or AnnotationTimer(idle_threshold=self.settings.idle_threshold_s)
        self.undo_group = QUndoGroup(self)
        self.current_id: int | None = None
        self._docs: OrderedDict[int, tuple[LabelDocument, QUndoStack]] = OrderedDict()
        self._generation = 0
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="image-loader")
        self._loaded.connect(self._on_loaded)
        self._unsaved: set[tuple[int, str]] = set()
        self._data_version = store.data_version()
        canvas.activity.connect(self.timer.activity)
        canvas.toolChanged.connect(lambda name: self.timer.activity())   # the tool books nothing
        self._poll = QTimer(self, interval=EXTERNAL_POLL_MS, timeout=self.poll_external)
        self._poll.start()
        self._checkpoint = QTimer(self, interval=SAVE_TIMING_EVERY_MS, timeout=self.save_timing)
        self._checkpoint.start()

    # ---- opening images -------------------------------------------------------------------------
    def open_image(self, image_id: int | None) -> None:
        if image_id == self.current_id and self.canvas.has_image():
            return
        self.canvas.tool.cancel()
        self.finish_visit()
        self._generation += 1
        self.current_id = image_id
        if image_id is None:
            self.undo_group.setActiveStack(None)
            self.canvas.show_message("No image")
            return
        try:
            row = self.store.image(image_id)
            record = self.store.label_record(image_id)
        except (StoreError, sqlite3.Error) as exc:
            self._fail(image_id, str(exc))
            return
        state = self.store.file_state(row)
        if state == "missing":
            self._fail(image_id, f"{row.abs_path}: the image file is missing (moved or deleted?)")
            return
        if state == "changed":
            self.message.emit(f"{row.name} changed on disk since it was imported; check its labels")
        cached = self._docs.get(image_id)
        reuse = cached is not None and cached[0].rev == record.rev
        self.canvas.show_message(f"Loading {row.name}…")
        gen = self._generation

        def work():
            if gen != self._generation:        # the user moved on before we started
                return gen, None
            try:
                loaded = load_image(image_id, row.abs_path)
                if (loaded.width, loaded.height) != (row.width, row.height):
                    raise StoreError(f"{row.abs_path}: the image is now {loaded.width}x{loaded.height} px "
                                     f"but was {row.width}x{row.height} px when imported")
                if not reuse and record.mask_png is not None:
                    loaded.mask = decode_mask(record.mask_png)
                return gen, (loaded, record, reuse)
            except (SemiRestError, StoreError, OSError, ValueError) as exc:
                return gen, exc

        future = self._executor.submit(work)
        future.add_done_callback(lambda f: None if f.cancelled() else self._loaded.emit(*f.result()))

    def _on_loaded(self, gen: int, result) -> None:
        if gen != self._generation or result is None:
            return
        image_id = self.current_id
        if isinstance(result, Exception):
            self._fail(image_id, str(result))
            return
        loaded, record, reuse = result
        if reuse and image_id in self._docs:
            doc, stack = self._docs[image_id]
        else:
            doc = LabelDocument.from_record(image_id, loaded.width, loaded.height,
                                            self.settings.image_size, self.settings.block, record.tag,
                                            record.boxes, record.blocks, loaded.mask, record.rev)
            stack = QUndoStack(self)
            self._forget(image_id)
            doc.add_listener(lambda kind, rect, doc=doc: self._changed(doc, kind))
            self.undo_group.addStack(stack)
        loaded.mask = None
        self._docs[image_id] = (doc, stack)
        self._docs.move_to_end(image_id)
        while len(self._docs) > DOC_CACHE:
            self._forget(next(iter(self._docs)))
        self.undo_group.setActiveStack(stack)
        self.canvas.set_content(loaded, doc, stack)
        self.timer.start(image_id)
        self.imageShown.emit(image_id)

    def _fail(self, image_id: int, reason: str) -> None:
        self.canvas.show_message(reason)
        self.undo_group.setActiveStack(None)
        self.imageFailed.emit(image_id, reason)

    def forget(self, image_ids) -> None:
        """Drop documents and undo history of images that left the project."""
        for image_id in image_ids:
            self._forget(image_id)

    def _forget(self, image_id: int) -> None:
        entry = self._docs.pop(image_id, None)
        if entry is not None:
            self.undo_group.removeStack(entry[1])
            entry[1].deleteLater()

    @property
    def document(self) -> LabelDocument | None:
        return self.canvas.document

    @property
    def undo_stack(self) -> QUndoStack | None:
        return self.canvas.undo_stack

    # ---- edits ----------------------------------------------------------------------------------
    def set_tool(self, name: str) -> None:
        self.canvas.set_tool(name)   # toolChanged -> timer.activity

    def set_tag(self, tag: str | None) -> None:
        """Tag the open image; tagging it normal or defective is a verdict (timed as "checked"),
        also when the tag was already that (the user confirmed it)."""
        self.timer.activity()
        doc = self.document
        if doc is None:
            return
        if doc.tag != tag:
            self.canvas.push(tag_command(doc, tag))      # the document listener times it
        elif tag in TAGS and doc.image_id == self.timer.image_id:
            self.timer.verdict(tag)

    def undo(self) -> None:
        self.timer.activity()
        if self.undo_stack is not None and not self.canvas.busy():
            self.undo_stack.undo()

    def redo(self) -> None:
        self.timer.activity()
        if self.undo_stack is not None and not self.canvas.busy():
            self.undo_stack.redo()

    def _changed(self, doc: LabelDocument, kind: str) -> None:
        """A document changed (an edit, an undo or a redo): time it, then write it."""
        if doc.image_id == self.timer.image_id:
            if kind == "tag" and doc.tag in TAGS:
                self.timer.verdict(doc.tag)
            else:
                self.timer.edited(kind)
        self._save(doc, kind)

    def _save(self, doc: LabelDocument, kind: str) -> None:
        """Write one label kind of one image now; keep it for a retry if the database refuses."""
        try:
            if kind == "mask":
                rev = self.store.save_mask(doc.image_id, doc.mask)
            elif kind == "boxes":
                rev = self.store.save_boxes(doc.image_id, doc.boxes)
            elif kind == "blocks":
                rev = self.store.save_blocks(doc.image_id, doc.block_cells())
            else:
                rev = self.store.save_tag(doc.image_id, doc.tag)
        except (sqlite3.Error, StoreError) as exc:
            self._unsaved.add((doc.image_id, kind))
            self.message.emit(f"Could not save yet ({exc}); retrying every second")
            return
        except LabelError as exc:
            # The store refuses a label training could not use (it is still on the canvas, and
            # undo takes it back); a retry would be refused again, so none is queued.
            self.message.emit(f"Not saved: {exc.problem}")
            return
        self._unsaved.discard((doc.image_id, kind))
        external = rev != doc.rev + 1      # someone else wrote this image since we last looked
        doc.rev = rev
        self.labelsSaved.emit(doc.image_id)
        if external and doc.image_id == self.current_id:
            self.reload_current()

    def _retry_unsaved(self) -> None:
        for image_id, kind in list(self._unsaved):
            entry = self._docs.get(image_id)
            if entry is None:
                self._unsaved.discard((image_id, kind))
            else:
                self._save(entry[0], kind)

    # ---- other windows --------------------------------------------------------------------------
    def poll_external(self) -> None:
        if self._unsaved:
            self._retry_unsaved()
        try:
            v = self.store.data_version()
        except sqlite3.Error:
            return
        if v == self._data_version:
            return
        self._data_version = v
        self.externalChange.emit()
        doc = self.document
        if doc is not None and self.store.image_rev(doc.image_id) != doc.rev:
            self.reload_current()

    def reload_current(self) -> None:
        """Take the open image's labels from the database (another window changed them)."""
        doc = self.document
        if doc is None:
            return
        if self.canvas.busy():            # never yank the shape from under the mouse; next poll
            self._data_version = -1
            return
        rec = self.store.label_record(doc.image_id)
        mask = decode_mask(rec.mask_png) if rec.mask_png is not None else None
        fresh = LabelDocument.from_record(doc.image_id, doc.width, doc.height, doc.image_size,
                                          doc.block, rec.tag, rec.boxes, rec.blocks, mask, rec.rev)
        doc.mask[:] = fresh.mask          # in place: the overlay QImage wraps this array
        doc.boxes, doc.cells, doc.tag, doc.rev = fresh.boxes, fresh.cells, fresh.tag, fresh.rev
        doc.set_grid(fresh.image_size, fresh.block)
        if self.undo_stack is not None:
            self.undo_stack.clear()
        self.canvas.update()
        self.labelsSaved.emit(doc.image_id)
        self.message.emit("Labels changed in another window were loaded (undo history of this image cleared)")

    # ---- settings ---------------------------------------------------------------------------------
    def apply_settings(self) -> None:
        self.settings = self.store.settings()
        self.timer.set_idle_threshold(self.settings.idle_threshold_s)
        for doc, _ in self._docs.values():
            if not doc.cells:
                doc.set_grid(self.settings.image_size, self.settings.block)
        self.canvas.update()

    # ---- timing -----------------------------------------------------------------------------------
    def save_timing(self) -> None:
        visit = self.timer.snapshot()
        if visit is not None and visit.seconds:
            try:
                self.store.save_timing(visit.session, visit.image_id, visit.seconds,
                                       visit.started_at, visit.ended_at, verdict=visit.verdict)
            except sqlite3.Error:
                pass       # the next checkpoint or the end of the visit will write it

    def finish_visit(self) -> None:
        visit = self.timer.stop()
        if visit is not None and visit.seconds:
            self.store.save_timing(visit.session, visit.image_id, visit.seconds,
                                   visit.started_at, visit.ended_at, verdict=visit.verdict)

    def close(self) -> None:
        self._poll.stop()
        self._checkpoint.stop()
        self.canvas.tool.cancel()
        self._retry_unsaved()
        self.finish_visit()
        self._generation += 1
        self._executor.shutdown(wait=True, cancel_futures=True)
        for image_id in list(self._docs):
            self._forget(image_id)
        self.canvas.show_message("No project open")
