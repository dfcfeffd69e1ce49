"""Every setting of the app, in one place.

Two kinds, kept apart on purpose:

- :class:`ProjectSettings` belong to a project (the model's block grid, the idle threshold of the
  timer). They live in the project's database, so every window and every machine that opens the
  project agrees on them, and training reads the same grid the labeller drew on.
- :class:`AppSettings` belong to the user on this machine (recent projects, brush size, last
  tool). They live in QSettings; tests point them at a throwaway ini file through
  ``SEMIREST_STUDIO_SETTINGS`` so they never touch the real user's settings.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

SPLITS = ("train", "test", "val", "inspect")   # inspect: parts run through a model for review
BLOCK_SIZES = (8, 16)
IMAGE_SIZES = (256, 320, 384, 448, 512, 640, 768, 1024)   # multiples of 64 (core.data.geometry)


@dataclass
class ProjectSettings:
    image_size: int = 256            # model input's longest side: core's cpu preset (paper: 512)
    block: int = 8                   # block size at the model input (8 or 16 px)
    idle_threshold_s: float = 10.0   # idle gaps longer than this are not annotation time
    default_split: str = "train"     # split given to plainly imported images

    def validate(self) -> "ProjectSettings":
        if self.image_size <= 0 or self.image_size % 64:
            raise ValueError(f"image_size must be a positive multiple of 64, got {self.image_size}")
        if self.block not in BLOCK_SIZES:
            raise ValueError(f"block must be one of {BLOCK_SIZES}, got {self.block}")
        if not self.idle_threshold_s > 0:
            raise ValueError(f"idle threshold must be positive, got {self.idle_threshold_s}")
        if self.default_split not in SPLITS:
            raise ValueError(f"default split must be one of {SPLITS}, got {self.default_split!r}")
        return self

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ProjectSettings":
        known = {f.name: f.type for f in fields(cls)}
        kw = {}
        for k, v in d.items():
            if k in known:   # settings written by a newer version are ignored, not fatal
                kw[k] = type(getattr(cls(), k))(v)
        return cls(**kw).validate()


# Per-user defaults (AppSettings keys and their defaults).
BRUSH_RADIUS_DEFAULT = 6          # image px
BRUSH_RADIUS_MIN, BRUSH_RADIUS_MAX = 1, 400
MAX_RECENT = 10
SAVE_TIMING_EVERY_MS = 5000       # timing checkpoint while an image stays open
EXTERNAL_POLL_MS = 1000           # how often a window looks for other windows' edits
THUMB_SIZE = 96                   # thumbnail longest side, px


class AppSettings:
    """Per-user settings (QSettings), with typed accessors."""

    def __init__(self, path: str | Path | None = None):
        from PySide6.QtCore import QSettings   # here, so ProjectSettings stays importable without Qt
        path = path or os.environ.get("SEMIREST_STUDIO_SETTINGS")
        if path:
            self._q = QSettings(str(path), QSettings.Format.IniFormat)
        else:
            self._q = QSettings("SemiREST", "SemiREST Studio")

    def recent_projects(self) -> list[str]:
        v = self._q.value("recent_projects", [])
        if isinstance(v, str):
            v = [v]
        return [p for p in (v or []) if p]

    def add_recent_project(self, folder: str | Path) -> None:
        folder = str(Path(folder).resolve())
        items = [folder] + [p for p in self.recent_projects() if p != folder]
        self._q.setValue("recent_projects", items[:MAX_RECENT])

    def brush_radius(self) -> int:
        try:
            return int(self._q.value("brush_radius", BRUSH_RADIUS_DEFAULT))
        except (TypeError, ValueError):
            return BRUSH_RADIUS_DEFAULT

    def set_brush_radius(self, r: int) -> None:
        self._q.setValue("brush_radius", int(r))

    def tool(self) -> str:
        return str(self._q.value("tool", "box"))

    def set_tool(self, name: str) -> None:
        self._q.setValue("tool", name)

    def value(self, key: str, default=None):
        return self._q.value(key, default)

    def set_value(self, key: str, value) -> None:
        self._q.setValue(key, value)

    def sync(self) -> None:
        self._q.sync()
