"""User flows around a project that involve dialogs and background jobs: new/open, import,
export of labels and timing, writing the per-image JSON for training.

Each long flow returns its :class:`Job` (tests wait on it); the job opens its own Store
connection in its thread. Results are reported without blocking: a status message, and a
non-modal list of skipped files with the reasons when there are any.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QMessageBox

from .project import importer
from .dialogs.export import ExportDialog
from .dialogs.progress import SkippedFilesDialog, attach_progress
from .dialogs.project import ImportOptionsDialog
from .project.exporting import available_formats, export_project
from .project.store import Store
from .labeling.timing_report import export_timing as write_timing
from .workers import Job


def ask_new_project(window) -> bool:
    folder = QFileDialog.getExistingDirectory(window, "New project: choose an empty folder (or make one)")
    if not folder:
        return False
    if Store.is_project(folder):
        return window.open_project(folder)
    return window.open_project(folder, create=True)


def ask_open_project(window) -> bool:
    folder = QFileDialog.getExistingDirectory(window, "Open project folder")
    return bool(folder) and window.open_project(folder)


def _start(window, job: Job, title: str, on_done) -> Job:
    window.jobs.append(job)
    attach_progress(window, job, title)

    def finished(result):
        if job in window.jobs:
            window.jobs.remove(job)
        on_done(result)

    def failed(message: str):
        if job in window.jobs:
            window.jobs.remove(job)
        window.statusBar().showMessage(f"{title} failed", 10000)
        QMessageBox.warning(window, f"{title} failed", message)

    def cancelled():
        if job in window.jobs:
            window.jobs.remove(job)
        window.statusBar().showMessage(f"{title} cancelled", 8000)

    job.finished.connect(finished)
    job.failed.connect(failed)
    job.cancelled.connect(cancelled)
    return job.start()


def show_skipped(window, summary: str, skipped) -> None:
    window.statusBar().showMessage(summary, 15000)
    if skipped:
        dlg = SkippedFilesDialog(summary, skipped, window)
        window.skipped_dialog = dlg            # kept for inspection (and so it is not collected)
        dlg.show()


def import_images(window, folder, copy, split, mvtec: bool) -> Job | None:
    store = window.store
    if store is None:
        return None
    if folder is None:
        folder = window.ask_folder("Import an MVTec category folder" if mvtec else "Import a folder of images")
        if folder is None:
            return None
    folder = Path(folder)
    if copy is None:
        dlg = ImportOptionsDialog(folder, mvtec, store.settings().default_split, window)
        if not dlg.exec():
            return None
        copy, split = dlg.copy.isChecked(), dlg.split.currentText()
    split = split or store.settings().default_split
    project = store.folder

    def run(progress):
        with Store.open(project) as s:
            if mvtec:
                return importer.import_mvtec(s, folder, copy=copy, progress=progress)
            return importer.import_folder(s, folder, copy=copy, split=split, progress=progress)

    def done(report: importer.ImportReport):
        if window.image_list is not None:
            had = window.image_list.current_id()
            window.image_list.reload()
            if had is None:
                window.image_list.select_row(0)
        show_skipped(window, f"Import of {folder.name}: {report.summary()}", report.skipped)

    return _start(window, Job(run, "import"), "Importing images", done)


def export_labels(window, formats, out_dir, split) -> Job | None:
    if window.store is None:
        return None
    try:
        known = available_formats()
    except ImportError as exc:
        QMessageBox.warning(window, "Export labels", f"Label formats are not available ({exc}).")
        return None
    if formats is None:
        dlg = ExportDialog(known, window.store.folder / "exports", window)
        if not dlg.exec():
            return None
        formats, out_dir, split = dlg.formats(), dlg.out_dir(), dlg.split_value()
    bad = [f for f in formats if f not in known]
    if bad or not formats:
        QMessageBox.warning(window, "Export labels", f"Unknown or no formats: {bad or formats}")
        return None
    out_dir = Path(out_dir or window.store.folder / "exports")
    project = window.store.folder

    def done(reports: dict):
        n = sum(len(r.files) for r in reports.values())
        skipped = [(p, f"{fmt}: {why}") for fmt, r in reports.items() for p, why in r.skipped]
        show_skipped(window, f"Exported {n} files to {out_dir}", skipped)

    return _start(window, Job(lambda p: export_project(project, formats, out_dir, split, p), "export"),
                  "Exporting labels", done)


def export_timing(window, out_dir) -> Job | None:
    if window.store is None:
        return None
    if out_dir is None:
        out_dir = window.ask_folder("Export annotation timing to", window.store.folder / "exports")
        if out_dir is None:
            return None
    window.controller.save_timing()       # include the visit in progress
    project = window.store.folder

    def run(progress):
        with Store.open(project) as s:
            return write_timing(s, out_dir, progress)

    def done(paths):
        window.statusBar().showMessage(f"Timing written: {', '.join(p.name for p in paths)} in {out_dir}", 15000)

    return _start(window, Job(run, "timing"), "Exporting timing", done)


def write_label_files(window) -> Job | None:
    if window.store is None:
        return None
    project = window.store.folder

    def run(progress):
        with Store.open(project) as s:
            return s.write_label_files()

    def done(paths):
        window.statusBar().showMessage(f"{len(paths)} label files written to {project / 'labels'}", 15000)

    return _start(window, Job(run, "labels"), "Writing label files", done)
