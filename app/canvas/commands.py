"""Undo commands: every edit of a document is exactly one QUndoCommand.

A command holds the state before and after the edit, so undo and redo are plain assignments and
each goes through the document's ``set_*`` methods, which notify the labelling controller: undo
updates the database exactly like the edit did. Mask commands keep only the patch the edit
touched, so a stroke on a 4000 x 4000 image costs kilobytes of history, not 16 MB.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtGui import QUndoCommand

from .document import LabelDocument, Rect


class MaskPatchCommand(QUndoCommand):
    """A brush or eraser stroke or a polygon fill."""

    def __init__(self, doc: LabelDocument, rect: Rect, before: np.ndarray, after: np.ndarray, text: str):
        super().__init__(text)
        self.doc, self.rect, self.before, self.after = doc, rect, before, after

    def redo(self) -> None:
        self.doc.set_patch(self.rect, self.after)

    def undo(self) -> None:
        self.doc.set_patch(self.rect, self.before)


class StateCommand(QUndoCommand):
    """Replace one label kind's whole state (boxes, block cells or tag): small values."""

    _SETTERS = {"boxes": "set_boxes", "blocks": "set_cells", "tag": "set_tag"}

    def __init__(self, doc: LabelDocument, kind: str, before, after, text: str):
        super().__init__(text)
        self.doc, self.kind, self.before, self.after = doc, kind, before, after
        self._set = getattr(doc, self._SETTERS[kind])

    def redo(self) -> None:
        self._set(self.after)

    def undo(self) -> None:
        self._set(self.before)


def boxes_command(doc: LabelDocument, after, text: str) -> StateCommand:
    return StateCommand(doc, "boxes", list(doc.boxes), list(after), text)


def cells_command(doc: LabelDocument, after, text: str) -> StateCommand:
    return StateCommand(doc, "blocks", frozenset(doc.cells), frozenset(after), text)


def tag_command(doc: LabelDocument, tag: str | None) -> StateCommand:
    text = {"normal": "Tag normal", "defective": "Tag defective", None: "Clear tag"}[tag]
    return StateCommand(doc, "tag", doc.tag, tag, text)
