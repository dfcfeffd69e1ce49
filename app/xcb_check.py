"""Before a window opens on Linux/X11: are the system libraries of Qt's xcb platform plugin there?

Without them Qt aborts with "Could not load the Qt platform plugin xcb", which does not say what to
install. PySide6's wheels bring Qt but not these X11 libraries, so a fresh Debian or Ubuntu box
often lacks a few. This module runs ``ldd`` on the plugin, maps every library it reports as
"not found" to its Debian/Ubuntu package and prints the one apt line that installs them.

    python -m app.xcb_check     exit 0: nothing missing (or nothing to check); 1: printed the line

It never imports PySide6 (only finds its folder), so it is quick and cannot itself crash on them.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

# Library file name -> Debian/Ubuntu package, for the libraries Qt's xcb plugin links against.
PACKAGES = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-xinerama.so.0": "libxcb-xinerama0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb.so.1": "libxcb1",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libX11.so.6": "libx11-6",
    "libGL.so.1": "libgl1",
    "libEGL.so.1": "libegl1",
    "libfontconfig.so.1": "libfontconfig1",
    "libdbus-1.so.3": "libdbus-1-3",
}

_NOT_FOUND = re.compile(r"^\s*(\S+)\s*=>\s*not found", re.MULTILINE)


def missing_libraries(ldd_output: str) -> list[str]:
    """The libraries ``ldd`` reports as "not found", once each, in its order (ldd repeats a library
    once for every object that needs it)."""
    return list(dict.fromkeys(_NOT_FOUND.findall(ldd_output)))


def debian_package(soname: str) -> str:
    """The package holding ``soname``: from the table, else by Debian's naming rule
    (libfoo.so.N -> libfooN; libfoo2.so.N -> libfoo2-N)."""
    if soname in PACKAGES:
        return PACKAGES[soname]
    m = re.fullmatch(r"(lib.+?)\.so\.(\d+).*", soname)
    if not m:
        return soname
    stem, major = m.group(1).lower(), m.group(2)
    return f"{stem}-{major}" if stem[-1].isdigit() else f"{stem}{major}"


def apt_line(missing: list[str]) -> str:
    return "sudo apt-get install " + " ".join(dict.fromkeys(debian_package(s) for s in missing))


def xcb_plugin() -> Path | None:
    """PySide6's ``libqxcb.so``, found without importing PySide6; None when absent."""
    spec = importlib.util.find_spec("PySide6")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        plugin = Path(folder) / "Qt" / "plugins" / "platforms" / "libqxcb.so"
        if plugin.is_file():
            return plugin
    return None


def ldd(path: Path) -> str | None:
    """``ldd``'s output for ``path``; None when ldd is not there or fails (then nothing is checked)."""
    exe = shutil.which("ldd")
    if exe is None:
        return None
    try:
        return subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def uses_xcb(env: dict) -> bool:
    """Whether Qt will take the xcb plugin: an X display and no other platform asked for.
    (A Wayland session also sets DISPLAY for XWayland; there Qt may not need xcb at all.)"""
    platform = env.get("QT_QPA_PLATFORM", "")
    return bool(env.get("DISPLAY")) and (platform == "" or platform.startswith("xcb"))


def report(missing: list[str], wayland: bool) -> str:
    names = ", ".join(missing)
    lines = [f"Qt's X11 platform plugin (xcb) needs system libraries that are not installed: {names}.",
             "Install them with:",
             f"    {apt_line(missing)}"]
    if wayland:
        lines.append("(Under Wayland Qt may not need them: starting anyway.)")
    else:
        lines.append("Or run the headless demo instead, with no window: env -u DISPLAY ./dev demo")
    return "\n".join(lines)


def main(env: dict | None = None) -> int:
    env = dict(os.environ) if env is None else env
    if not sys.platform.startswith("linux") or not uses_xcb(env):
        return 0
    plugin = xcb_plugin()
    out = ldd(plugin) if plugin else None
    missing = missing_libraries(out or "")
    if not missing:
        return 0
    wayland = bool(env.get("WAYLAND_DISPLAY"))
    print(report(missing, wayland), file=sys.stderr)
    return 0 if wayland else 1


if __name__ == "__main__":
    sys.exit(main())
