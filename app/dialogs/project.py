"""Start page (new, open, recent projects), project settings and import options."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QButtonGroup, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox,
                               QFormLayout, QHBoxLayout, QLabel, QListWidget, QListWidgetItem,
                               QPushButton, QRadioButton, QVBoxLayout, QWidget)

from ..settings import BLOCK_SIZES, IMAGE_SIZES, SPLITS, ProjectSettings
from ..project.store import Store


class StartPage(QWidget):
    newRequested = Signal()
    openRequested = Signal()
    openProject = Signal(str)

    def __init__(self, recent: list[str], parent=None):
        super().__init__(parent)
        title = QLabel("<h1>SemiREST Studio</h1><p>Label defects quickly, train, review heatmaps.</p>")
        title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        new_btn, open_btn = QPushButton("New project…"), QPushButton("Open project…")
        new_btn.clicked.connect(self.newRequested)
        open_btn.clicked.connect(self.openRequested)
        self.recent = QListWidget()
        for folder in recent:
            item = QListWidgetItem(folder)
            ok = Store.is_project(folder)
            item.setFlags(item.flags() if ok else Qt.ItemFlag.NoItemFlags)
            item.setToolTip(folder if ok else f"{folder} (not found)")
            self.recent.addItem(item)
        self.recent.itemActivated.connect(lambda it: self.openProject.emit(it.text()))
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(new_btn)
        buttons.addWidget(open_btn)
        buttons.addStretch(1)
        lay = QVBoxLayout(self)
        lay.addStretch(1)
        lay.addWidget(title)
        lay.addLayout(buttons)
        lay.addWidget(QLabel("Recent projects (double-click to open):"))
        lay.addWidget(self.recent, 2)
        lay.addStretch(1)


class ProjectSettingsDialog(QDialog):
    def __init__(self, settings: ProjectSettings, has_block_labels: bool, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Project settings")
        self.image_size = QComboBox()
        for s in IMAGE_SIZES:
            self.image_size.addItem(f"{s} px" + {256: " (cpu preset)", 512: " (paper)"}.get(s, ""), s)
        self.image_size.setCurrentIndex(max(0, self.image_size.findData(settings.image_size)))
        self.block = QComboBox()
        for b in BLOCK_SIZES:
            self.block.addItem(f"{b} px", b)
        self.block.setCurrentIndex(max(0, self.block.findData(settings.block)))
        self.idle = QDoubleSpinBox(minimum=1.0, maximum=600.0, decimals=1, suffix=" s")
        self.idle.setValue(settings.idle_threshold_s)
        self.split = QComboBox()
        self.split.addItems(list(SPLITS))
        self.split.setCurrentText(settings.default_split)
        form = QFormLayout()
        form.addRow("Model input size (longest side)", self.image_size)
        form.addRow("Block size at the model input", self.block)
        form.addRow("Idle gaps excluded from timing after", self.idle)
        form.addRow("Split for imported images", self.split)
        note = QLabel("Blocks already marked keep the grid they were drawn on." if has_block_labels else "")
        note.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(note)
        lay.addWidget(buttons)

    def value(self) -> ProjectSettings:
        return ProjectSettings(image_size=self.image_size.currentData(), block=self.block.currentData(),
                               idle_threshold_s=self.idle.value(), default_split=self.split.currentText())


class ImportOptionsDialog(QDialog):
    """Copy into the project or reference in place; the split (plain folders only)."""

    def __init__(self, source: Path, mvtec: bool, default_split: str, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Import MVTec dataset" if mvtec else "Import images")
        self.copy = QRadioButton("Copy the images into the project folder (portable)")
        self.ref = QRadioButton("Reference them where they are (no copy)")
        group = QButtonGroup(self)
        group.addButton(self.copy)
        group.addButton(self.ref)
        self.ref.setChecked(True)
        self.split = QComboBox()
        self.split.addItems(list(SPLITS))
        self.split.setCurrentText(default_split)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel(f"<b>{source}</b>"))
        lay.addWidget(self.copy)
        lay.addWidget(self.ref)
        if mvtec:
            lay.addWidget(QLabel("Splits follow the folders (train/ -> train, test/ -> test); "
                                 "ground-truth masks become pixel labels, good images are tagged normal."))
        else:
            row = QHBoxLayout()
            row.addWidget(QLabel("Split"))
            row.addWidget(self.split, 1)
            lay.addLayout(row)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)
