"""The demo: the project built from resources/demo, its first training run (tiny config here),
``python -m app --demo``, and ./dev demo's fallback when there is no display."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import demo
from app.main_window import MainWindow
from app.settings import AppSettings
from app.project.store import Store
from app.training.selection import select_training_set
from core.data.labelcost import PRIOR
from core.device import DeviceInfo


ROOT = Path(__file__).resolve().parents[2]
CPU = [DeviceInfo("cpu", "Test CPU", None, None)]


def test_demo_project_holds_the_shipped_images_and_labels(tmp_path):
    folder = demo.build_demo_project(tmp_path / "demo")
    assert not (tmp_path / ".demo.building").exists()
    with Store.open(folder) as s:
        assert s.image_count() == 26 and all(r.copied and r.abs_path.is_file() for r in s.images())
        assert len(s.images("train")) == 17 and len(s.images("test", status="defective")) == 5
        ts = select_training_set(s, "all")
        assert len(ts.normals) == 12
        assert ts.labels_used == {"boxes": 3, "tag": 1, "mask": 1}
        # the label cost model's estimates from each label's geometry (Fig. 6 priors), not round seeds
        cost = {k: sum(PRIOR.estimate(lab).get(k, 0.0) for lab in ts.labels) for k in ("boxes", "tag", "mask")}
        assert ts.label_seconds == pytest.approx(cost, abs=1e-2)
        assert ts.label_seconds["mask"] >= 10 and ts.label_seconds["tag"] == 2.0
        assert ts.label_seconds["boxes"] not in (15.0, 0.0)
        assert ts.label_seconds_estimated == ts.label_seconds       # none measured: all estimated
        assert len(select_training_set(s, "boxes").labels) == 3
        assert select_training_set(s, "unsupervised").labels == []


def test_demo_first_start_starts_the_demo_training_run(qtbot, tmp_path):
    folder = demo.build_demo_project(tmp_path / "demo")
    w = MainWindow(folder, AppSettings(tmp_path / "u.ini"), devices=CPU)
    qtbot.addWidget(w)
    w.show()
    with qtbot.waitSignal(w.docks.training.runStarted, timeout=60_000) as started:
        demo.start_first_training(w)
    with Store.open(folder) as s:
        run = s.runs.run(started.args[0])
    assert run.settings["supervision"] == "all" and run.settings["preset"] == "cpu"
    assert run.labels_used == {"boxes": 3, "tag": 1, "mask": 1}
    assert (run.run_dir / "config.yaml").read_text() == demo.resources.path("demo", "demo.yaml").read_text()
    assert "--config" in run.command and w.docks.dock["train"].isVisible()
    with qtbot.waitSignal(w.docks.training.runEnded, timeout=30_000) as ended:
        w.docks.training.cancel()
    assert ended.args[1] == "cancelled"
    w.close()


def test_python_m_app_demo_builds_and_opens(tmp_path):
    code = ("import sys\n"
            "from PySide6.QtCore import QTimer\n"
            "from PySide6.QtWidgets import QApplication\n"
            "app = QApplication(sys.argv[:1])\n"
            "def check():\n"
            "    w = [x for x in app.topLevelWidgets() if x.objectName() == 'main'][0]\n"
            "    print('images', w.store.image_count(), 'runs', len(w.store.runs.all()), 'title', w.windowTitle())\n"
            "    w.close()\n"
            "    app.quit()\n"
            "QTimer.singleShot(2000, check)\n"
            "from app.__main__ import main\n"
            "print('rc', main(['--demo', sys.argv[1], '--no-train']))\n")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", SEMIREST_STUDIO_SETTINGS=str(tmp_path / "u.ini"))
    for expect in ("building the demo project", "opening the demo project"):     # first start, then again
        r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "demo")], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert expect in r.stdout and "images 26 runs 0 title demo" in r.stdout and "rc 0" in r.stdout


def _fake_venv(tmp_path: Path) -> Path:
    """A venv whose python prints its arguments, already 'set up' (./dev skips pip)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    py = venv / "bin" / "python"
    py.write_text('#!/bin/sh\necho "python $*"\n')
    py.chmod(0o755)
    sha = hashlib.sha1((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:12]
    (venv / f".semirest-installed-{sha}").touch()
    return venv


@pytest.mark.skipif(sys.platform != "linux", reason="the no-display rule is for Linux")
def test_dev_demo_falls_back_to_the_headless_demo_without_a_display(tmp_path):
    venv = _fake_venv(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env["SEMIREST_VENV"] = str(venv)
    r = subprocess.run([str(ROOT / "dev"), "demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert "no display" in lines[0] and lines[-1] == "python -m core.demo"
    env["QT_QPA_PLATFORM"] = "offscreen"
    r = subprocess.run([str(ROOT / "dev"), "demo", "--no-train"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=30)
    assert r.stdout.strip() == "python -m app --demo --no-train"
