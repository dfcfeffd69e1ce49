"""Training from the window on real images (tiny config): a model row with its metrics and labels
used; cancel and resume; a killed worker; an out-of-memory error shown as advice; the device picker."""
from __future__ import annotations

import os
import signal
import sys

import pytest
from PySide6.QtCore import Qt

from app.main_window import MainWindow
from app.settings import AppSettings
from app.project.store import Store
from app.training.device_picker import DevicePicker
from app.training.devices import NO_GPU
from core.deploy.modelfile import ModelBundle
from core.device import DeviceInfo

from train_helpers import piped_project, tiny_yaml

pytestmark = pytest.mark.gui
CPU = [DeviceInfo("cpu", "Test CPU", None, None)]
GIB = 1024 ** 3
TWO_GPUS = CPU + [DeviceInfo("cuda:0", "NVIDIA Tiny 8GB", 8 * GIB, 1 * GIB),
                  DeviceInfo("cuda:1", "NVIDIA Roomy 80GB", 80 * GIB, 61.5 * GIB)]


@pytest.fixture
def project(tmp_path, piped_category):
    return piped_project(tmp_path / "proj", piped_category)


def open_window(qtbot, folder, tmp_path, devices=CPU, steps=20) -> MainWindow:
    w = MainWindow(folder, AppSettings(tmp_path / "user.ini"), devices=devices)
    qtbot.addWidget(w)
    w.resize(1400, 800)
    w.show()
    qtbot.waitExposed(w)
    w.docks.train_panel.config_file = str(tiny_yaml(tmp_path / f"tiny{steps}.yaml", steps))
    return w


def wait_run_end(qtbot, w, timeout=240_000):
    with qtbot.waitSignal(w.docks.training.runEnded, timeout=timeout) as sig:
        pass
    return sig.args


def wait_train_step(qtbot, w, step, timeout=120_000):
    qtbot.waitUntil(lambda: w.docks.training.process is not None
                    and w.docks.training.process.state.stage == "train"
                    and w.docks.training.process.state.done >= step, timeout=timeout)


def test_train_a_tiny_model_from_the_window(qtbot, project, tmp_path):
    w = open_window(qtbot, project, tmp_path)
    panel, models = w.docks.train_panel, w.docks.models_panel
    assert "2 images" in panel.supervision.itemText(panel.supervision.findData("boxes"))
    with qtbot.waitSignal(w.docks.training.modelReady, timeout=240_000) as ready:
        qtbot.mouseClick(panel.train_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: not panel.train_button.isEnabled())     # one run at a time
        assert panel.cancel_button.isEnabled()
    model_id = ready.args[0]
    row = models.model_row_texts(model_id)
    assert row["Supervision"] == "all" and row["Labels used"] == "boxes 2"
    assert row["Label time"] == "10 s"                    # 2 images x 5 s of measured box time
    assert row["Backbone"] == "tf_efficientnet_lite0" and row["Preset"] == "cpu"
    assert row["Device"].startswith("cpu")
    ap = float(row["Validation"])
    assert row["Validated on"] == "synthetic pixel AP"    # 2 labelled images: none held out
    with Store.open(project) as s:
        m = s.runs.model(model_id)
        run = s.runs.run(m.run_id)
    assert 0.0 <= ap <= 1.0 and ap == pytest.approx(m.val_pixel_ap, abs=1e-3)
    assert run.status == "finished" and run.exit_code == 0 and m.path == run.run_dir / "model.pt"
    assert not run.checkpoint_path.exists()
    # The panel followed the run: both stages on the curve (boxes train as pseudo-masks, decision
    # 0015), rate and ETA.
    st = w.docks.training.last_process.state
    assert [name for _, name in st.stage_starts] == ["supervised", "boxes (pseudo-masks)"]
    assert st.curves["loss"][-1][0] == 30   # 20 + 10 steps
    assert panel.progress.value() == 1000 and "steps/s" in panel.stage_label.text()
    bundle = ModelBundle.load(m.path)
    assert bundle.training["labels"] == {"boxes": 2}        # the core saw exactly what the app chose
    # The finished model becomes the review model and every image gets scored in the background.
    with qtbot.waitSignal(w.docks.review.jobEnded, timeout=120_000) as done:
        pass
    assert done.args == ["score", "finished"]
    with Store.open(project) as s:
        assert len(s.runs.scores(model_id)) == s.image_count()
    qtbot.waitUntil(lambda: w.canvas.heat is not None, timeout=10_000)     # heatmaps appear
    assert "Score" in w.docks.review_panel.image_info.text()
    w.close()


def test_cancel_mid_training_then_resume(qtbot, project, tmp_path):
    w = open_window(qtbot, project, tmp_path, steps=30)
    w.docks.train_panel.supervision.setCurrentIndex(w.docks.train_panel.supervision.findData("unsupervised"))
    qtbot.mouseClick(w.docks.train_panel.train_button, Qt.MouseButton.LeftButton)
    wait_train_step(qtbot, w, 12)
    qtbot.mouseClick(w.docks.train_panel.cancel_button, Qt.MouseButton.LeftButton)
    run_id, status, _ = wait_run_end(qtbot, w, timeout=15_000)          # stops within seconds
    assert status == "cancelled"
    with Store.open(project) as s:
        run = s.runs.run(run_id)
    assert run.status == "cancelled" and run.checkpoint_path.exists() and not run.model_path.exists()
    assert not list(run.run_dir.glob(".*.tmp"))
    assert "cancelled" in w.docks.models_panel.run_row_texts(run_id)["Status"]
    assert w.docks.train_panel.resume_button.isEnabled()
    with qtbot.waitSignal(w.docks.training.modelReady, timeout=240_000) as ready:
        qtbot.mouseClick(w.docks.train_panel.resume_button, Qt.MouseButton.LeftButton)
    st = w.docks.training.last_process.state
    (resumed,) = [line for line in st.log if "resumed from" in line]
    at = int(resumed.rsplit("step", 1)[1])
    assert at >= 10 and at % 10 == 0                       # the last checkpoint before the cancel
    assert st.curves["loss"][0][0] == at + 1               # continued after it, not from scratch
    with Store.open(project) as s:
        m = s.runs.model(ready.args[0])
        assert m.run_id == run_id and s.runs.run(run_id).status == "finished"
    assert [h["step"] for h in m.validation["history"]] == [10, 20, 30]
    assert not run.checkpoint_path.exists()
    w.close()


def test_killed_worker_is_reported_and_the_app_survives(qtbot, project, tmp_path):
    w = open_window(qtbot, project, tmp_path, steps=400)
    qtbot.mouseClick(w.docks.train_panel.train_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.docks.training.process is not None and bool(w.docks.training.process.state.stage),
                    timeout=120_000)                        # the worker is busy (first progress event)
    pid = w.docks.training.process.pid()
    os.kill(pid, signal.SIGKILL)
    run_id, status, message = wait_run_end(qtbot, w, timeout=15_000)
    assert status == "failed" and "killed or crashed" in message
    with Store.open(project) as s:
        run = s.runs.run(run_id)
    assert run.status == "failed" and "killed or crashed" in run.error and run.exit_code is None
    assert "killed or crashed" in w.docks.train_panel.message.text()
    assert w.docks.models_panel.run_row_texts(run_id)["Status"] == "failed"
    assert w.isVisible() and w.docks.train_panel.train_button.isEnabled()
    w.close()


FAKE_WORKER = r'''
import json, sys
print("Loading faiss with AVX2 support.", flush=True)              # noise on stdout
print(json.dumps({"event": "progress", "stage": "features", "done": 1, "total": 4,
                  "message": "", "metrics": {}}), flush=True)
sys.stdout.write('{"event": "progress", "stage": "fea')            # a line cut in two writes
sys.stdout.flush()
sys.stdout.write('tures", "done": 2, "total": 4, "message": "", "metrics": {}}\n')
print(json.dumps({"event": "error", "kind": "DeviceError", "message": ADVICE}), flush=True)
print("Traceback (most recent call last):\n  RuntimeError: CUDA out of memory", file=sys.stderr)
sys.exit(2)
'''


def test_out_of_memory_is_shown_as_advice_not_a_traceback(qtbot, project, tmp_path):
    advice = ("cuda:1 ran out of memory. Try the smaller preset (--preset cpu), a smaller "
              "features.image_size or swin.embed_dim, bagging off, or another device")
    script = tmp_path / "fake_worker.py"
    script.write_text(f"ADVICE = {advice!r}\n" + FAKE_WORKER)
    fake_python = tmp_path / "python"
    fake_python.write_text(f"#!/bin/sh\nexec {sys.executable} {script}\n")
    fake_python.chmod(0o755)
    w = open_window(qtbot, project, tmp_path, devices=TWO_GPUS)
    w.docks.training.python = str(fake_python)
    qtbot.mouseClick(w.docks.train_panel.train_button, Qt.MouseButton.LeftButton)
    run_id, status, message = wait_run_end(qtbot, w, timeout=30_000)
    assert status == "failed" and message == advice
    assert w.docks.train_panel.message.text() == advice and "Traceback" not in w.docks.train_panel.message.text()
    assert w.docks.training.last_process.state.done == 2            # the cut line was read whole
    log = (project / "runs" / f"{run_id:04d}" / "train.log").read_text()
    assert "Traceback" in log and "Loading faiss" in log            # the log keeps everything
    w.close()


def test_device_picker_lists_faked_gpus_and_passes_the_choice(qtbot, project, tmp_path):
    w = open_window(qtbot, project, tmp_path, devices=TWO_GPUS)
    picker = w.docks.train_panel.device
    texts = [picker.combo.itemText(i) for i in range(picker.combo.count())]
    assert texts[0].startswith("CPU")
    assert "NVIDIA Tiny 8GB" in texts[1] and "1.0 GiB free of 8.0 GiB" in texts[1] and "cuda:0" in texts[1]
    assert "NVIDIA Roomy 80GB" in texts[2] and "61.5 GiB free of 80.0 GiB" in texts[2]
    assert picker.note.text() == "2 GPUs found"
    picker.combo.setCurrentIndex(2)
    assert w.docks.train_panel.spec().device == "cuda:1"
    assert AppSettings(tmp_path / "user.ini").value("train/device") == "cuda:1"    # remembered
    qtbot.mouseClick(w.docks.train_panel.train_button, Qt.MouseButton.LeftButton)
    run_id, status, message = wait_run_end(qtbot, w, timeout=60_000)
    with Store.open(project) as s:
        cmd = s.runs.run(run_id).command
    assert cmd[cmd.index("--device") + 1] == "cuda:1"
    # This machine has no such GPU: the worker refuses with a message naming it, not a traceback.
    assert status == "failed" and "cuda:1" in message and "Traceback" not in message
    w.close()


def test_device_picker_without_gpu(qtbot, tmp_path):
    picker = DevicePicker(AppSettings(tmp_path / "u.ini"), devices=CPU)
    qtbot.addWidget(picker)
    assert picker.combo.count() == 1 and picker.current() == "cpu" and picker.note.text() == NO_GPU


def test_device_picker_destroyed_while_listing(qtbot, tmp_path):
    """Closing the window while the GPU listing runs kills the listing process, which still emits
    errorOccurred; the picker must not touch its deleted widgets (it raised RuntimeError)."""
    from PySide6.QtCore import QCoreApplication, QEvent
    picker = DevicePicker(AppSettings(tmp_path / "u.ini"))
    picker.show()
    assert picker._proc is not None and picker._proc.waitForStarted(10_000)
    picker.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    qtbot.wait(50)       # pytest-qt fails the test on an exception raised in a Qt callback


def test_device_picker_asks_a_real_process(qtbot, tmp_path):
    """The real listing runs in a subprocess (the window never opens CUDA); this machine: CPU only."""
    import torch
    picker = DevicePicker(AppSettings(tmp_path / "u.ini"))
    qtbot.addWidget(picker)
    picker.show()
    qtbot.waitUntil(lambda: picker._final, timeout=60_000)
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert picker.combo.count() == 1 + n_gpus
    if n_gpus == 0:
        assert picker.note.text() == NO_GPU


def test_device_picker_lists_again_on_refresh_and_deletes_each_finished_listing(qtbot, tmp_path):
    """The refresh button runs a new listing process each time; each finished one is deleted. Its
    slots once were lambdas holding the process, and deleting it then crashed the test process
    now and then (SIGBUS in QObject::~QObject during the deferred delete; a CI run)."""
    from PySide6.QtCore import QCoreApplication, QEvent, QProcess
    picker = DevicePicker(AppSettings(tmp_path / "u.ini"))
    qtbot.addWidget(picker)
    picker.show()
    for _ in range(3):
        qtbot.waitUntil(lambda: picker._final and picker._proc is None, timeout=60_000)
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        qtbot.wait(20)
        assert picker.findChildren(QProcess) == []       # the finished listing is gone
        assert picker.note.text() != "Looking for GPUs…"
        qtbot.mouseClick(picker.refresh_button, Qt.MouseButton.LeftButton)
        assert picker._proc is not None and picker.note.text() == "Looking for GPUs…"
    qtbot.waitUntil(lambda: picker._proc is None, timeout=60_000)
    assert picker.combo.count() >= 1 and picker.current() == picker.combo.currentData()


def test_a_run_orphaned_by_a_closed_app_is_reported_on_open(qtbot, project, tmp_path):
    """A run left 'running' by a window that died says so in the status bar when the project opens
    (the message was emitted before anyone listened to it)."""
    with Store.open(project) as s:
        run_id = s.runs.add_run({"supervision": "all"}, ["-m", "core.cli"], s.folder / "runs" / "0099", {}, {})
        s.runs.update_run(run_id, status="running", pid=None, started=1.0)
    w = open_window(qtbot, project, tmp_path)
    qtbot.waitUntil(lambda: "stopped when the app closed" in w.statusBar().currentMessage(), timeout=5000)
    assert str(run_id) in w.statusBar().currentMessage()
