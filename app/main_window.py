"""The main window: wires the canvas, the image list, the labelling controller and the actions.

Holds no logic of its own beyond wiring: labelling lives in app.labeling.controller, storage in app.project.store,
long jobs (import, export) in app.project_flows, shortcuts in app.shortcuts.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (QDockWidget, QFileDialog, QLabel, QMainWindow, QMessageBox,
                               QStackedWidget)

from .project import import_copies
from . import project_flows as flows
from .actions import build_actions, build_menus, build_toolbar
from .canvas.canvas import Canvas
from .canvas.tools import TOOL_NAMES
from .dialogs.help import ShortcutsDialog
from .dialogs.project import ProjectSettingsDialog, StartPage
from .labeling.image_list import ImageListPanel
from .labeling.controller import LabelingController
from .project_docks import ProjectDocks
from .settings import AppSettings
from .project.store import Store, StoreError
from .labeling.thumbnails import ThumbnailLoader

ZOOM_STEP = 1.25


class MainWindow(QMainWindow):
    def __init__(self, project: str | Path | None = None, app_settings: AppSettings | None = None,
                 devices: list | None = None):
        super().__init__()
        self.setObjectName("main")
        self.app_settings = app_settings or AppSettings()
        self.devices = devices            # None: listed in the background (tests inject a list)
        self.docks: ProjectDocks | None = None
        self.store: Store | None = None
        self.controller: LabelingController | None = None
        self.image_list: ImageListPanel | None = None
        self.thumbs: ThumbnailLoader | None = None
        self.jobs: list = []
        self.canvas = Canvas()
        self.canvas.set_brush_radius(self.app_settings.brush_radius())
        self.start_page: StartPage | None = None
        self.central = QStackedWidget()
        self.central.addWidget(self.canvas)
        self.setCentralWidget(self.central)
        self.actions = build_actions(self, self._handlers())
        build_menus(self, self.actions)
        self.toolbar = build_toolbar(self, self.actions)
        self.dock = QDockWidget("Images", self)
        self.dock.setObjectName("images")
        self.dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, self.dock)
        self._status_widgets()
        self.canvas.toolChanged.connect(lambda name: self.actions[f"tool_{name}"].setChecked(True))
        self.canvas.zoomChanged.connect(lambda s: self.zoom_label.setText(f"{s * 100:.0f}%"))
        self.canvas.cursorMoved.connect(lambda x, y: self.pos_label.setText(f"x {x:.0f}  y {y:.0f}"))
        self.canvas.brushRadiusChanged.connect(self._brush_changed)
        self._brush_changed(self.canvas.brush_radius)
        tool = self.app_settings.tool()
        self.set_tool(tool if tool in TOOL_NAMES else "box")
        self._clock = QTimer(self, interval=1000, timeout=self._update_time_label)
        self._clock.start()
        self.resize(1280, 820)
        if project is not None:
            self.open_project(project)
        else:
            self._show_start_page()
        self._update_enabled()

    # ---- wiring -----------------------------------------------------------------------------------
    def _handlers(self) -> dict:
        h = {
            "new_project": lambda: flows.ask_new_project(self),
            "open_project": lambda: flows.ask_open_project(self),
            "import_folder": lambda: self.import_folder(),
            "import_mvtec": lambda: self.import_mvtec(),
            "export_labels": lambda: self.export_labels(),
            "export_timing": lambda: self.export_timing(),
            "write_label_files": lambda: flows.write_label_files(self),
            "project_settings": self.edit_project_settings,
            "quit": self.close,
            "undo": lambda: self.controller and self.controller.undo(),
            "redo": lambda: self.controller and self.controller.redo(),
            "delete": lambda: self.canvas.tool.delete(),
            "finish": lambda: self.canvas.tool.finish(),
            "cancel": lambda: self.canvas.tool.cancel(),
            "brush_smaller": lambda: self.canvas.grow_brush(False),
            "brush_bigger": lambda: self.canvas.grow_brush(True),
            "tag_normal": lambda: self.set_tag("normal"),
            "tag_defective": lambda: self.set_tag("defective"),
            "tag_clear": lambda: self.set_tag(None),
            "split_train": lambda: self.set_split("train"),
            "split_test": lambda: self.set_split("test"),
            "split_val": lambda: self.set_split("val"),
            "remove_images": lambda: self.remove_images(),
            "next_image": lambda: self.image_list and self.image_list.step(1),
            "prev_image": lambda: self.image_list and self.image_list.step(-1),
            "next_unlabelled": lambda: self.image_list and self.image_list.next_unlabelled(),
            "next_to_label": self.next_to_label,
            "focus_list": lambda: self.image_list and self.image_list.view.setFocus(),
            "zoom_in": lambda: self._zoom(ZOOM_STEP),
            "zoom_out": lambda: self._zoom(1 / ZOOM_STEP),
            "zoom_fit": self.canvas.fit,
            "zoom_actual": lambda: self.canvas.set_scale(1.0),
            "toggle_grid": self._toggle_grid,
            "help": self.show_shortcuts,
            "next_flagged": lambda: self.image_list and self.image_list.next_flagged(1),
            "prev_flagged": lambda: self.image_list and self.image_list.next_flagged(-1),
            "train": lambda: self.docks and self.docks.training.start(),
            "cancel_training": lambda: self.docks and self.docks.training.cancel(),
            "retrain": lambda: self.docks and self.docks.review.model and
            self.docks.training.retrain(self.docks.review.model.id),
            "score_images": lambda: self.docks and self.docks.review.score(),
            "inspect_folder": lambda: self.docks and self.docks.review.inspect_folder(),
            "export_report": lambda: self.docks and self.docks.review.export(),
            "review_normal": lambda: self.docks and self.docks.review.mark_normal_next(),
            "toggle_heatmap": lambda: self.docks and self.docks.review.toggle("heat"),
            "toggle_labels": lambda: self.docks and self.docks.review.toggle("labels"),
            "toggle_heat_view": lambda: self.docks and self.docks.review.toggle_view(),
            "label_budget": lambda: self.docks and self.docks.show_budget(),
        }
        for tool in TOOL_NAMES:
            h[f"tool_{tool}"] = lambda t=tool: self.set_tool(t)
        return h

    def _status_widgets(self) -> None:
        sb = self.statusBar()
        self.image_label, self.zoom_label, self.pos_label = QLabel(), QLabel(), QLabel()
        self.brush_label, self.time_label = QLabel(), QLabel()
        for w in (self.image_label, self.pos_label, self.zoom_label, self.brush_label, self.time_label):
            sb.addPermanentWidget(w)

    def _brush_changed(self, r: int) -> None:
        self.brush_label.setText(f"brush {r} px  [ ]")
        self.app_settings.set_brush_radius(r)

    def _update_time_label(self) -> None:
        visit = self.controller.timer.snapshot() if self.controller else None
        self.time_label.setText("" if visit is None else f"active {visit.total:.0f} s")

    def _update_enabled(self) -> None:
        has = self.store is not None
        for name in ("import_folder", "import_mvtec", "export_labels", "export_timing",
                     "write_label_files", "project_settings", "split_train", "split_test", "split_val",
                     "remove_images", "train", "cancel_training", "retrain", "score_images",
                     "inspect_folder", "export_report", "review_normal", "label_budget"):
            self.actions[name].setEnabled(has)
        if self.controller is None:
            self.actions["undo"].setEnabled(False)
            self.actions["redo"].setEnabled(False)

    def _show_start_page(self) -> None:
        if self.start_page is not None:
            self.central.removeWidget(self.start_page)
            self.start_page.deleteLater()
        self.start_page = StartPage(self.app_settings.recent_projects())
        self.start_page.newRequested.connect(lambda: flows.ask_new_project(self))
        self.start_page.openRequested.connect(lambda: flows.ask_open_project(self))
        self.start_page.openProject.connect(self.open_project)
        self.central.addWidget(self.start_page)
        self.central.setCurrentWidget(self.start_page)
        self.dock.hide()
        self.setWindowTitle("SemiREST Studio")

    # ---- projects ---------------------------------------------------------------------------------
    def open_project(self, folder: str | Path, create: bool = False) -> bool:
        try:
            store = Store.create(folder) if create else Store.open(folder)
        except StoreError as exc:
            QMessageBox.warning(self, "Cannot open project", str(exc))
            return False
        self.close_project()
        self.store = store
        try:   # a copy whose import was killed after its row committed gets its file back
            import_copies.recover(store)
        except OSError:
            pass   # the next import retries; the image shows as missing meanwhile
        self.thumbs = ThumbnailLoader(store.folder)
        self.controller = LabelingController(store, self.canvas, parent=self)
        self.controller.imageShown.connect(self._image_shown)
        self.controller.imageFailed.connect(lambda i, why: self.statusBar().showMessage(why, 10000))
        self.controller.labelsSaved.connect(self._labels_saved)
        self.controller.externalChange.connect(lambda: self.image_list and self.image_list.refresh_all())
        self.controller.message.connect(lambda m: self.statusBar().showMessage(m, 8000))
        group = self.controller.undo_group
        group.canUndoChanged.connect(self.actions["undo"].setEnabled)
        group.canRedoChanged.connect(self.actions["redo"].setEnabled)
        self.actions["undo"].setEnabled(False)
        self.actions["redo"].setEnabled(False)
        self.image_list = ImageListPanel(store, self.thumbs)
        self.image_list.currentImageChanged.connect(self.controller.open_image)
        self.dock.setWidget(self.image_list)
        self.dock.show()
        self.central.setCurrentWidget(self.canvas)
        self.image_list.reload()
        self.canvas.show_message("Import images (Project menu) to start" if store.image_count() == 0
                                 else "Pick an image in the list")
        self.image_list.select_row(0)
        self.docks = ProjectDocks(self, store, self.devices)
        self.app_settings.add_recent_project(store.folder)
        self.setWindowTitle(f"{store.folder.name} — SemiREST Studio")
        self._update_enabled()
        return True

    def close_project(self) -> None:
        for job in self.jobs:
            job.cancel()
        for job in self.jobs:
            job.wait(10)
        self.jobs.clear()
        if self.docks is not None:
            self.docks.close()
            self.docks = None
        if self.controller is not None:
            self.controller.close()
            self.controller.deleteLater()
            self.controller = None
        if self.image_list is not None:
            self.dock.setWidget(None)
            self.image_list.deleteLater()
            self.image_list = None
        if self.thumbs is not None:
            self.thumbs.close()
            self.thumbs = None
        if self.store is not None:
            self.store.close()
            self.store = None
        self._update_enabled()

    def closeEvent(self, event) -> None:
        self.close_project()
        self.app_settings.sync()
        super().closeEvent(event)

    # ---- labelling --------------------------------------------------------------------------------
    def set_tool(self, name: str) -> None:
        self.canvas.set_tool(name)
        self.actions[f"tool_{name}"].setChecked(True)
        self.app_settings.set_tool(name)

    def set_tag(self, tag: str | None) -> None:
        if self.controller is not None:
            self.controller.set_tag(tag)

    def set_split(self, split: str) -> None:
        if self.store is None or self.image_list is None:
            return
        ids = self.image_list.selected_ids()
        self.store.set_split(ids, split)
        for i in ids:
            self.image_list.refresh(i)
        self.statusBar().showMessage(f"{len(ids)} image(s) moved to the {split} split", 4000)

    def remove_images(self, confirm: bool = True) -> int:
        """Forget the selected images and their labels (copies inside the project are deleted)."""
        if self.store is None or self.image_list is None:
            return 0
        ids = self.image_list.selected_ids()
        if not ids:
            return 0
        if confirm and QMessageBox.question(
                self, "Remove images", f"Remove {len(ids)} image(s) and their labels from the project? "
                "Images copied into the project are deleted; referenced files are left alone.") \
                != QMessageBox.StandardButton.Yes:
            return 0
        row = self.image_list.model.row_of(ids[0]) or 0
        self.controller.open_image(None)
        self.controller.forget(ids)
        self.store.remove_images(ids)
        self.image_list.reload()
        self.image_list.select_row(min(row, self.image_list.model.rowCount() - 1))
        self.statusBar().showMessage(f"{len(ids)} image(s) removed", 5000)
        return len(ids)

    def _image_shown(self, image_id: int) -> None:
        row = self.store.image(image_id)
        self.image_label.setText(f"{row.name}  {row.width}x{row.height}  {row.split}")
        self._sync_tag_actions()

    def _labels_saved(self, image_id: int) -> None:
        if self.image_list is not None:
            self.image_list.refresh(image_id)
        self._sync_tag_actions()

    def _sync_tag_actions(self) -> None:
        doc = self.canvas.document
        tag = None if doc is None else doc.tag
        for name, value in (("tag_normal", "normal"), ("tag_defective", "defective")):
            self.actions[name].setCheckable(True)
            self.actions[name].setChecked(tag == value)

    def next_to_label(self) -> bool:
        """J: the listed unlabelled image a label would help most (app/labeling/next_label.py)."""
        if self.image_list is None:
            return False
        if self.image_list.next_to_label():
            return True
        self.statusBar().showMessage("No other unlabelled image in the list (check the filters)", 5000)
        return False

    def _zoom(self, factor: float) -> None:
        if self.controller is not None:
            self.controller.timer.activity()
        self.canvas.zoom(factor)

    def _toggle_grid(self) -> None:
        self.canvas.show_grid = self.actions["toggle_grid"].isChecked()
        self.canvas.update()

    def show_shortcuts(self) -> ShortcutsDialog:
        dlg = ShortcutsDialog(self)
        dlg.show()
        return dlg

    def edit_project_settings(self) -> None:
        if self.store is None:
            return
        dlg = ProjectSettingsDialog(self.store.settings(), bool(self.store.labelled_image_ids()), self)
        if dlg.exec():
            self.store.set_settings(dlg.value())
            self.controller.apply_settings()

    # ---- long jobs (see project_flows) ------------------------------------------------------------
    def import_folder(self, folder=None, copy=None, split=None):
        return flows.import_images(self, folder, copy, split, mvtec=False)

    def import_mvtec(self, folder=None, copy=None):
        return flows.import_images(self, folder, copy, None, mvtec=True)

    def export_labels(self, formats=None, out_dir=None, split=None):
        return flows.export_labels(self, formats, out_dir, split)

    def export_timing(self, out_dir=None):
        return flows.export_timing(self, out_dir)

    def ask_folder(self, title: str, start: str | Path = "") -> Path | None:
        d = QFileDialog.getExistingDirectory(self, title, str(start))
        return Path(d) if d else None
