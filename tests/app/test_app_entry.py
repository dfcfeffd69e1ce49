"""``python -m app`` / ``semirest-studio``: arguments, headless scripted import, window start."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.__main__ import main, parse_args
from app.project.store import Store

from gen_images import make_folder

ROOT = Path(__file__).resolve().parents[2]


def run(*args, timeout=60):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    return subprocess.run([sys.executable, "-m", "app", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_headless_new_project_with_import(tmp_path):
    make_folder(tmp_path / "imgs", 3)
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    r = run("--new", tmp_path / "p", "--import", tmp_path / "imgs", "--copy", "--split", "test", "--headless")
    assert r.returncode == 0, r.stderr
    assert "3 images imported" in r.stdout and "skipped" in r.stdout and "broken.png" in r.stdout
    with Store.open(tmp_path / "p") as s:
        assert s.image_count() == 3 and {r.split for r in s.images()} == {"test"}
        assert all(r.copied for r in s.images())


def test_bad_arguments_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--import", str(tmp_path)])             # import into which project?
    with pytest.raises(SystemExit):
        parse_args([str(tmp_path), "--new", str(tmp_path)])
    assert main([str(tmp_path / "nothing"), "--headless"]) == 2
    assert "not a SemiREST Studio project" in capsys.readouterr().err


def test_window_starts_and_quits(tmp_path):
    """The real entry point opens a window on a project (quit by a timer inside the app)."""
    make_folder(tmp_path / "imgs", 2)
    run("--new", tmp_path / "p", "--import", tmp_path / "imgs", "--headless")
    code = ("import sys\n"
            "from PySide6.QtCore import QTimer\n"
            "from PySide6.QtWidgets import QApplication\n"
            "app = QApplication(sys.argv[:1])\n"
            "def check():\n"
            "    w = [x for x in app.topLevelWidgets() if x.objectName() == 'main']\n"
            "    print('images', w[0].store.image_count(), 'shown', w[0].canvas.has_image())\n"
            "    w[0].close()\n"
            "    app.quit()\n"
            "QTimer.singleShot(1500, check)\n"
            "from app.__main__ import main\n"
            "print('rc', main([sys.argv[1]]))\n")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen",
               SEMIREST_STUDIO_SETTINGS=str(tmp_path / "u.ini"))
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "p")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "images 2 shown True" in r.stdout and "rc 0" in r.stdout
