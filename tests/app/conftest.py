"""Fixtures for the app tests: a project of small generated images and the real MainWindow."""
from __future__ import annotations

import pytest

from app.project.importer import import_folder
from app.main_window import MainWindow
from app.settings import AppSettings
from app.project.store import Store

from qt_drive import wait_image
from gen_images import make_folder


@pytest.fixture
def project_dir(tmp_path):
    """A project with 3 images of 64 x 48 px (block grid at 256/8: 64 x 48 -> 256 x 192 input,
    so blocks are 2 x 2 image px; the window opens the first image)."""
    src = make_folder(tmp_path / "src", 3, 64, 48)
    with Store.create(tmp_path / "proj") as store:
        report = import_folder(store, src[0].parent, copy=False, split="train")
        assert len(report.added) == 3
    return tmp_path / "proj"


@pytest.fixture
def window(qtbot, project_dir, tmp_path):
    w = MainWindow(project_dir, AppSettings(tmp_path / "user.ini"))
    qtbot.addWidget(w)
    w.resize(1400, 700)                      # the right docks (Review, Train, Models) take ~400 px
    w.show()
    qtbot.waitExposed(w)
    w.activateWindow()                       # window shortcuts fire only in the active window
    qtbot.waitUntil(w.isActiveWindow)
    wait_image(qtbot, w)
    w.canvas.setFocus()
    yield w
    w.close()
