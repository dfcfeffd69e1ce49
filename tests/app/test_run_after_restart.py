"""A run stopped when the app closed is shown as such after a restart: its status, why it stopped
and how far it got (the stage, the step, the progress bar and the loss curve from its log), and
Resume, enabled because its checkpoint is there. Not "No run yet" beside an enabled Resume.

The worker is a stand-in (the training protocol on stdout, a checkpoint file, SIGTERM handled
like the CLI does), so this runs in seconds; the real worker's cancel and resume are tested in
test_training.py."""
from __future__ import annotations

import sys
import time

import pytest
from PySide6.QtCore import Qt

from app.main_window import MainWindow
from app.settings import AppSettings
from app.project.store import Store

pytestmark = pytest.mark.gui

FAKE_WORKER = r'''
import json, pathlib, signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(130))     # the CLI stops like Ctrl-C: exit 130
def progress(stage, done, total, message="", **metrics):
    print(json.dumps({"event": "progress", "stage": stage, "done": done, "total": total,
                      "message": message, "metrics": metrics}), flush=True)
progress("features", 1, 1)
for step in range(1, 1001):
    progress("train", step, 1000, "supervised", loss=1.0 / step, rate=50.0, eta_s=(1000 - step) / 50)
    if step == 5:
        pathlib.Path("model.pt.ckpt").write_bytes(b"checkpoint at step 5")
    time.sleep(0.02)
'''


def open_window(qtbot, folder, tmp_path, python=None) -> MainWindow:
    w = MainWindow(folder, AppSettings(tmp_path / "user.ini"), devices=[])
    qtbot.addWidget(w)
    w.resize(1400, 800)
    w.show()
    qtbot.waitExposed(w)
    if python is not None:
        w.docks.training.python = str(python)
    return w


def fake_python(tmp_path):
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\nexec {sys.executable} {script} \"$@\"\n")
    python.chmod(0o755)
    return python


@pytest.mark.skipif(sys.platform == "win32", reason="the stand-in worker is a shell script")
def test_a_run_stopped_by_closing_the_app_shows_as_stopped_with_its_progress_after_a_restart(
        qtbot, project_dir, tmp_path):
    w = open_window(qtbot, project_dir, tmp_path, fake_python(tmp_path))
    panel = w.docks.train_panel
    panel.supervision.setCurrentIndex(panel.supervision.findData("unsupervised"))
    qtbot.mouseClick(panel.train_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.docks.training.process is not None
                    and w.docks.training.process.state.done >= 20, timeout=30_000)
    run_id = w.docks.training.process and w.store.runs.all()[-1].id
    w.close()                                         # the app closes mid-run
    with Store.open(project_dir) as s:
        run = s.runs.run(run_id)
    assert run.status == "cancelled" and "the app closed" in run.error and run.checkpoint_path.exists()
    reached = max(int(line.split('"done": ')[1].split(",")[0]) for line in
                  (run.run_dir / "train.log").read_text().splitlines() if '"stage": "train"' in line)

    w2 = open_window(qtbot, project_dir, tmp_path)    # the restart
    panel = w2.docks.train_panel
    text = panel.run_label.text()
    assert text != "No run yet" and f"Run {run_id}" in text and "stopped when the app closed" in text
    assert f"train (supervised): {reached} / 1000" in panel.stage_label.text()
    assert "ETA" not in panel.stage_label.text()     # nothing is running: no time left to count
    assert panel.progress.value() == int(1000 * reached / 1000)
    assert panel.curve.curves["loss"][-1][0] == reached
    assert panel.resume_button.isEnabled() and not panel.cancel_button.isEnabled()
    assert f"run {run_id}" in panel.resume_button.toolTip() and f"step {reached}" in panel.resume_button.toolTip()
    w2.close()


def test_a_run_orphaned_by_a_crash_shows_as_failed_after_a_restart(qtbot, project_dir, tmp_path):
    """The app died (no close): the run row still says running. The next start marks it failed,
    resumable, and the panel says so with where it got to."""
    with Store.open(project_dir) as s:
        run_dir = s.folder / "runs" / "0007"
        run_dir.mkdir(parents=True)
        (run_dir / "model.pt.ckpt").write_bytes(b"ckpt")
        (run_dir / "train.log").write_text(
            "=== 2024-06-14 10:00:00 python -m core.cli train\n"
            '{"event": "progress", "stage": "train", "done": 40, "total": 200, "message": "supervised",'
            ' "metrics": {"loss": 0.5, "rate": 2.0, "eta_s": 80}}\n'
            "Loading faiss with AVX2 support.\n"
            '{"event": "progress", "stage": "tr')          # a line cut by the crash
        run_id = s.runs.add_run({"supervision": "unsupervised"}, ["-m", "core.cli"], run_dir, {}, {})
        s.runs.update_run(run_id, status="running", pid=None, started=time.time() - 60, log_path=run_dir / "train.log")
    w = open_window(qtbot, project_dir, tmp_path)
    panel = w.docks.train_panel
    assert f"Run {run_id}" in panel.run_label.text() and "failed" in panel.run_label.text()
    assert "the app closed or crashed" in panel.message.text()
    assert "train (supervised): 40 / 200" in panel.stage_label.text() and panel.progress.value() == 200
    assert panel.resume_button.isEnabled()
    w.close()


def test_a_new_project_says_no_run_yet_and_resume_is_off(qtbot, project_dir, tmp_path):
    w = open_window(qtbot, project_dir, tmp_path)
    assert w.docks.train_panel.run_label.text() == "No run yet"
    assert not w.docks.train_panel.resume_button.isEnabled()
    w.close()
