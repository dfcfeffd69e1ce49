"""``semirest-studio [PROJECT_DIR]`` and ``python -m app``.

    semirest-studio                       start page (new / open / recent projects)
    semirest-studio PROJECT               open a project
    semirest-studio --new DIR             create a project and open it
    semirest-studio --new DIR --import FOLDER [--copy] [--split test]
    semirest-studio PROJECT --mvtec CATEGORY_DIR --headless
                                          import without a window (prints skipped files), exit
    semirest-studio --demo [DIR] [--no-train]
                                          the demo project (real images, a few labels): built and
                                          training a first model on first start (app/demo.py)

With ``--headless`` nothing graphical starts: for scripted use on a line computer.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .settings import SPLITS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="semirest-studio", description="SemiREST Studio: label, train, review.")
    p.add_argument("project", nargs="?", help="project folder to open")
    p.add_argument("--new", metavar="DIR", help="create a new project in DIR")
    p.add_argument("--import", dest="import_folder", metavar="FOLDER", help="import a folder of images")
    p.add_argument("--mvtec", metavar="CATEGORY", help="import an MVTec-layout category with its masks")
    p.add_argument("--copy", action="store_true", help="copy imported images into the project")
    p.add_argument("--split", choices=SPLITS, help="split for imported images (plain folders)")
    p.add_argument("--headless", action="store_true", help="do the import and exit, without a window")
    p.add_argument("--demo", nargs="?", const="", metavar="DIR",
                   help="open the demo project (built on first start, in DIR or the user's data folder)")
    p.add_argument("--no-train", action="store_true", help="with --demo: do not start training on first start")
    a = p.parse_args(argv)
    if a.demo is not None and (a.new or a.project or a.import_folder or a.mvtec or a.headless):
        p.error("--demo opens the demo project; give no other project or import")
    if a.new and a.project:
        p.error("give either PROJECT or --new DIR, not both")
    if (a.import_folder or a.mvtec or a.headless) and not (a.new or a.project):
        p.error("--import/--mvtec/--headless need a PROJECT or --new DIR")
    return a


def run_headless(a: argparse.Namespace) -> int:
    """Exit 0: imported (files that could not be used are listed, and counted on the last line);
    2: nothing was done (no project, a source that is not there or holds no images); 1: the
    import stopped part way (the project cannot be written): what was committed before is kept."""
    import sqlite3

    from core.errors import SemiRestError

    from .project import importer
    from .project.store import Store, StoreError

    folder = a.new or a.project
    try:
        # The sources first: a mistyped path must not leave a new, empty project behind.
        skip = Path(folder).resolve()
        if a.import_folder:
            importer.check_folder(a.import_folder, skip=skip)
        if a.mvtec:
            importer.check_mvtec(a.mvtec)
        store = Store.create(folder) if a.new and not Store.is_project(folder) else Store.open(folder)
    except (StoreError, SemiRestError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with store:
        split = a.split or store.settings().default_split
        reports = []
        try:
            if a.import_folder:
                reports.append(importer.import_folder(store, a.import_folder, copy=a.copy, split=split))
            if a.mvtec:
                reports.append(importer.import_mvtec(store, a.mvtec, copy=a.copy))
        except (SemiRestError, StoreError, OSError, sqlite3.Error) as exc:
            print(f"error: {exc}", file=sys.stderr)
            print(f"the import stopped; {store.folder} holds {_count(store)} images "
                  f"(what was imported before the error is kept; run the same command again to go on)",
                  file=sys.stderr)
            return 1
        for r in reports:
            print(r.summary())
            for path, why in r.skipped:
                print(f"  skipped {path}: {why}")
        n_skipped = sum(len(r.skipped) for r in reports)
        print(f"{store.folder}: {store.image_count()} images"
              + (f"; {n_skipped} file{'s' if n_skipped != 1 else ''} skipped, listed above" if n_skipped else ""))
    return 0


def _count(store) -> str:
    """The image count, in words when even reading the database fails."""
    import sqlite3
    try:
        return str(store.image_count())
    except sqlite3.Error:
        return "an unknown number of"


def open_demo(folder: Path | None, train: bool):
    """Build the demo project on first start (and train), or reopen it; returns the window."""
    from . import demo
    from .main_window import MainWindow
    from .project.store import Store

    folder = folder or demo.default_dir()
    first = not Store.is_project(folder)
    if first:
        print(f"building the demo project in {folder}", flush=True)
        try:
            demo.build_demo_project(folder)
        except (OSError, RuntimeError) as exc:
            print(f"error: cannot build the demo project: {exc}", file=sys.stderr)
            return None
    else:
        print(f"opening the demo project {folder}", flush=True)
    window = MainWindow(folder)
    if first and train and window.store is not None:
        demo.start_first_training(window)
    return window


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.headless:
        return run_headless(a)
    from PySide6.QtWidgets import QApplication

    from . import resources
    from .main_window import MainWindow
    from .project.store import Store

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("SemiREST Studio")
    app.setOrganizationName("SemiREST")
    app.setStyleSheet(resources.style_sheet())
    if a.demo is not None:
        window = open_demo(Path(a.demo) if a.demo else None, train=not a.no_train)
        if window is None:
            return 2
    elif a.new:
        window = MainWindow()          # Store.create makes the folder, or says why it cannot
        window.open_project(a.new, create=not Store.is_project(a.new))
    else:
        window = MainWindow(a.project)
    window.show()
    if window.store is not None and a.demo is None:
        if a.import_folder:
            window.import_folder(a.import_folder, a.copy, a.split or window.store.settings().default_split)
        if a.mvtec:
            window.import_mvtec(a.mvtec, a.copy)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
