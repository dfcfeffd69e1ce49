"""Progress for background jobs, and the list of files a job skipped with the reasons."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QHeaderView, QLabel, QProgressDialog,
                               QTableWidget, QTableWidgetItem, QVBoxLayout)

from ..workers import Job


def attach_progress(parent, job: Job, title: str) -> QProgressDialog:
    """A non-blocking progress dialog for ``job``; Cancel cancels it. Closes itself at the end."""
    dlg = QProgressDialog(title, "Cancel", 0, 0, parent)
    dlg.setWindowTitle(title)
    dlg.setWindowModality(Qt.WindowModality.WindowModal)
    dlg.setMinimumDuration(300)          # quick jobs never flash a dialog
    dlg.setAutoClose(False)
    dlg.setAutoReset(False)

    def on_progress(done: int, total: int) -> None:
        dlg.setMaximum(max(total, 1))
        dlg.setValue(min(done, max(total, 1)))
        dlg.setLabelText(f"{title}: {done} of {total}")

    def done(*_):
        dlg.canceled.disconnect(job.cancel)    # closing must not look like a cancel
        dlg.close()
        dlg.deleteLater()

    job.progress.connect(on_progress)
    dlg.canceled.connect(job.cancel)
    for sig in (job.finished, job.failed, job.cancelled):
        sig.connect(done)
    return dlg


class SkippedFilesDialog(QDialog):
    """Which files were not taken, and why (never a crash)."""

    def __init__(self, summary: str, skipped: list[tuple[Path, str]], parent=None):
        super().__init__(parent)
        self.setWindowTitle("Files skipped")
        self.resize(760, 360)
        self.table = QTableWidget(len(skipped), 2)
        self.table.setHorizontalHeaderLabels(["File", "Reason"])
        for i, (path, reason) in enumerate(skipped):
            self.table.setItem(i, 0, QTableWidgetItem(str(path)))
            self.table.setItem(i, 1, QTableWidgetItem(reason))
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.resizeColumnToContents(0)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok)
        buttons.accepted.connect(self.accept)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel(summary))
        lay.addWidget(self.table)
        lay.addWidget(buttons)

    def rows(self) -> list[tuple[str, str]]:
        return [(self.table.item(i, 0).text(), self.table.item(i, 1).text())
                for i in range(self.table.rowCount())]
