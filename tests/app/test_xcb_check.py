"""`./dev demo` on X11 without Qt's xcb libraries: the missing ones named with the one apt line that
installs them, instead of Qt's bare "Could not load the Qt platform plugin xcb" (app/xcb_check.py)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import xcb_check

ROOT = Path(__file__).resolve().parents[2]

# ldd on libqxcb.so of a Debian box lacking two of them: ldd lists a missing library once for
# every object that needs it (the plugin and libQt6XcbQpa).
FAKE_LDD = """\
\tlinux-vdso.so.1 (0x00007ffd2b5f3000)
\tlibQt6XcbQpa.so.6 => /venv/PySide6/Qt/plugins/platforms/../../lib/libQt6XcbQpa.so.6 (0x00007f0e1c000000)
\tlibxkbcommon-x11.so.0 => not found
\tlibxcb-cursor.so.0 => /lib/x86_64-linux-gnu/libxcb-cursor.so.0 (0x00007f0e1bff0000)
\tlibxcb-icccm.so.4 => not found
\tlibxcb-xinerama.so.0 => not found
\tlibxcb-icccm.so.4 => not found
\tlibxkbcommon-x11.so.0 => not found
\tlibxcb.so.1 => /lib/x86_64-linux-gnu/libxcb.so.1 (0x00007f0e1bfc0000)
"""


def test_missing_libraries_once_each_in_order():
    assert xcb_check.missing_libraries(FAKE_LDD) == [
        "libxkbcommon-x11.so.0", "libxcb-icccm.so.4", "libxcb-xinerama.so.0"]
    assert xcb_check.missing_libraries("\tlibxcb.so.1 => /lib/libxcb.so.1 (0x1)\n") == []


def test_apt_line_names_the_debian_packages_of_the_missing_only():
    missing = xcb_check.missing_libraries(FAKE_LDD)
    assert xcb_check.apt_line(missing) == \
        "sudo apt-get install libxkbcommon-x11-0 libxcb-icccm4 libxcb-xinerama0"


@pytest.mark.parametrize("soname, package", [
    ("libxcb-render-util.so.0", "libxcb-render-util0"),   # from the table
    ("libX11-xcb.so.1", "libx11-xcb1"),
    ("libxcb-present.so.0", "libxcb-present0"),           # not in the table: Debian's naming rule
    ("libfoo2.so.3", "libfoo2-3"),                         # a name ending in a digit takes a dash
])
def test_debian_package(soname, package):
    assert xcb_check.debian_package(soname) == package


def test_main_prints_the_line_and_fails_on_x11(monkeypatch, capsys):
    monkeypatch.setattr(xcb_check, "xcb_plugin", lambda: Path("/fake/libqxcb.so"))
    monkeypatch.setattr(xcb_check, "ldd", lambda path: FAKE_LDD)
    monkeypatch.setattr(sys, "platform", "linux")
    assert xcb_check.main({"DISPLAY": ":0"}) == 1
    err = capsys.readouterr().err
    assert "sudo apt-get install libxkbcommon-x11-0 libxcb-icccm4 libxcb-xinerama0" in err
    assert "libxcb-icccm.so.4" in err and "headless" in err
    # Under Wayland Qt may not need xcb: the same advice, but the app still starts.
    assert xcb_check.main({"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0"}) == 0
    assert "apt-get install" in capsys.readouterr().err


@pytest.mark.parametrize("env", [{}, {"DISPLAY": ":0", "QT_QPA_PLATFORM": "offscreen"},
                                 {"WAYLAND_DISPLAY": "wayland-0"}])
def test_no_check_when_qt_will_not_use_xcb(monkeypatch, capsys, env):
    monkeypatch.setattr(xcb_check, "ldd", lambda path: FAKE_LDD)
    assert xcb_check.main(env) == 0
    assert capsys.readouterr().err == ""


def test_nothing_missing_or_no_ldd_is_silent(monkeypatch, capsys):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(xcb_check, "xcb_plugin", lambda: Path("/fake/libqxcb.so"))
    for out in ("\tlibxcb.so.1 => /lib/libxcb.so.1 (0x1)\n", None):
        monkeypatch.setattr(xcb_check, "ldd", lambda path, out=out: out)
        assert xcb_check.main({"DISPLAY": ":0"}) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ldd and the xcb plugin are Linux's")
def test_real_plugin_is_found_and_probed():
    """On this machine: the plugin of the installed PySide6 is found and ldd runs on it; the
    command's verdict agrees with what ldd says."""
    plugin = xcb_check.xcb_plugin()
    assert plugin is not None and plugin.name == "libqxcb.so"
    out = xcb_check.ldd(plugin)
    assert out is not None and "libQt6XcbQpa" in out
    missing = xcb_check.missing_libraries(out)
    env = dict(os.environ, DISPLAY=":0")
    env.pop("WAYLAND_DISPLAY", None)
    env.pop("QT_QPA_PLATFORM", None)
    r = subprocess.run([sys.executable, "-m", "app.xcb_check"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == (1 if missing else 0)
    if missing:
        assert xcb_check.apt_line(missing) in r.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="./dev demo's check is for Linux")
def test_dev_demo_stops_with_the_apt_line(tmp_path):
    """`./dev demo` itself, with a set-up venv that runs this Python and an `ldd` on PATH that
    reports missing libraries: it prints the apt line and opens no window."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    import hashlib
    stamp = hashlib.sha1((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:12]
    (venv / f".semirest-installed-{stamp}").touch()        # dev's setup: already installed
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "ldd").write_text(f"#!/bin/sh\ncat <<'END'\n{FAKE_LDD}END\n")
    (fake / "ldd").chmod(0o755)
    env = dict(os.environ, SEMIREST_VENV=str(venv), DISPLAY=":0", PATH=f"{fake}:{os.environ['PATH']}",
               HOME=str(tmp_path / "home"), XDG_DATA_HOME=str(tmp_path / "data"),
               PYTHONPATH=str(ROOT))
    env.pop("WAYLAND_DISPLAY", None)
    env.pop("QT_QPA_PLATFORM", None)
    r = subprocess.run([str(ROOT / "dev"), "demo", "--no-train"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "sudo apt-get install libxkbcommon-x11-0 libxcb-icccm4 libxcb-xinerama0" in r.stderr
