"""Export options: which formats, where, which split."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFileDialog,
                               QFormLayout, QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout)

from ..project.exporting import FORMAT_TITLES
from ..settings import SPLITS


class ExportDialog(QDialog):
    def __init__(self, formats: tuple[str, ...], default_dir: Path, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Export labels")
        self.checks = {}
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Formats (each goes to a sub-folder named after it):"))
        for fmt in formats:
            cb = QCheckBox(FORMAT_TITLES.get(fmt, fmt))
            cb.setChecked(fmt in ("mvtec", "coco"))
            self.checks[fmt] = cb
            lay.addWidget(cb)
        self.out = QLineEdit(str(default_dir))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.out, 1)
        row.addWidget(browse)
        self.split = QComboBox()
        self.split.addItem("All splits", None)
        for s in SPLITS:
            self.split.addItem(s, s)
        form = QFormLayout()
        form.addRow("Folder", row)
        form.addRow("Images", self.split)
        lay.addLayout(form)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)

    def _browse(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Export to", self.out.text())
        if d:
            self.out.setText(d)

    def formats(self) -> list[str]:
        return [f for f, cb in self.checks.items() if cb.isChecked()]

    def out_dir(self) -> Path:
        return Path(self.out.text())

    def split_value(self) -> str | None:
        return self.split.currentData()
