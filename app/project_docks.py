"""The Train, Models and Review docks of an open project, and the controllers behind them.

Made when a project opens and dropped when it closes, so the main window stays wiring only.
Flows between them: a finished run becomes the review model and its images are scored in the
background; a model picked in the Models table becomes the review model; the Train panel's device
picker also chooses where scoring runs.
"""
from __future__ import annotations

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QDockWidget

from . import resources
from .training.controller import TrainingController
from .training.models_panel import ModelsPanel
from .training.panel import TrainPanel
from .viewer.budget import BudgetDialog
from .viewer.controller import ReviewController

COUNTS_REFRESH_MS = 1500
DOCK_WIDTH = 400


class ProjectDocks:
    def __init__(self, window, store, devices=None):
        self.window = window
        self.train_panel = TrainPanel(window.app_settings, devices, label_costs=resources.label_costs())
        self.models_panel = ModelsPanel()
        from .viewer.panel import ReviewPanel
        self.review_panel = ReviewPanel()
        self.docks = []
        first = None
        for name, title, widget in (("review", "Review", self.review_panel), ("train", "Train", self.train_panel),
                                    ("models", "Models", self.models_panel)):
            dock = QDockWidget(title, window)
            dock.setObjectName(name)
            dock.setWidget(widget)
            dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable |
                             QDockWidget.DockWidgetFeature.DockWidgetFloatable)
            window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
            if first is None:
                first = dock
            else:
                window.tabifyDockWidget(first, dock)
            self.docks.append(dock)
        self.dock = {d.objectName(): d for d in self.docks}
        QTimer.singleShot(0, lambda: window.resizeDocks([first], [DOCK_WIDTH], Qt.Orientation.Horizontal))
        self.training = TrainingController(store, self.train_panel, self.models_panel, window)
        self.review = ReviewController(window, store, self.review_panel, self.train_panel.device.current, window)
        self.budget_dialog: BudgetDialog | None = None
        self.training.modelReady.connect(self._model_ready)
        self.training.message.connect(lambda m: window.statusBar().showMessage(m, 10000))
        self.training.runStarted.connect(lambda _: self.dock["train"].raise_())
        self.models_panel.modelActivated.connect(self.review.set_model)
        self.models_panel.budgetRequested.connect(self.show_budget)
        self.review.modelChanged.connect(self._review_model_changed)
        self._counts = QTimer(window, singleShot=True, interval=COUNTS_REFRESH_MS, timeout=self.training.refresh)
        if window.image_list is not None:       # counts and histogram follow the list's selection
            for combo in (window.image_list.split_filter, window.image_list.status_filter):
                combo.currentIndexChanged.connect(lambda _: self.review.refresh_scores())
        if window.controller is not None:
            window.controller.imageShown.connect(lambda _: self.review.redraw())
            window.controller.labelsSaved.connect(lambda _: self._labels_changed())
        self._review_model_changed(None if self.review.model is None else self.review.model.id)
        (self.dock["review"] if store.runs.models() else self.dock["train"]).raise_()

    def _model_ready(self, model_id: int) -> None:
        self.review.set_model(model_id)
        self.review.score()
        self.dock["review"].raise_()

    def _review_model_changed(self, model_id) -> None:
        self.training.active_model = model_id
        self.training.refresh()

    def _labels_changed(self) -> None:
        self._counts.start()
        self.review.labels_changed()

    def show_budget(self) -> BudgetDialog:
        self.budget_dialog = BudgetDialog(self.training.store.runs.models(), self.window)
        self.budget_dialog.show()
        return self.budget_dialog

    def close(self) -> None:
        self._counts.stop()
        self.train_panel.device.stop()
        self.training.shutdown()
        self.review.close()
        for dock in self.docks:
            self.window.removeDockWidget(dock)
            dock.deleteLater()
        self.docks = []
