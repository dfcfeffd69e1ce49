"""A regular (non-editable) install carries every package and the resources (icons, style sheet,
demo images), and the app finds them there."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_package_list_matches_the_source_tree():
    from setuptools import find_packages
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set(find_packages(str(ROOT), include=["core*", "app*"]))
    assert set(cfg["packages"]) == found | {"semirest_studio_resources"}
    assert cfg["package-dir"] == {"semirest_studio_resources": "resources"}


def test_wheel_carries_resources_and_the_app_finds_them(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("core", "app", "resources", "pyproject.toml", "README.md"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, src / name)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q",
                        "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = [p.relative_to(ROOT / "resources").as_posix() for p in (ROOT / "resources").rglob("*") if p.is_file()]
    missing = [p for p in shipped if f"semirest_studio_resources/{p}" not in names]
    assert not missing, missing
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = ("import app.resources as r, app.demo as d\n"
             "print(r.ROOT); print(bool(r.style_sheet())); print((d.demo_data() / 'train' / 'good').is_dir())\n")
    env = dict(os.environ, PYTHONPATH=str(site))
    r = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    root, style, demo = r.stdout.split()
    assert Path(root) == site / "semirest_studio_resources" and style == "True" and demo == "True"
