"""Active annotation time per image and per label kind, measured like the paper's labelling tool.

The paper's tool measured "the time from opening an image until moving on", with idle periods
excluded. Here (docs/decisions/0003-annotation-timing.md):

- A *visit* starts when an image is opened on the canvas and ends when the user moves to another
  image, closes the project or quits. Moving on is the last event of the visit.
- The window reports every input event on the canvas (mouse press/move/release, wheel, keys) and
  every tool switch as *activity*. The time between two consecutive events is active time if it
  is at most ``idle_threshold`` seconds (default 10 s); a longer gap is idle and is excluded whole
  (the user was away, and we cannot tell when they left).
- Active time goes to the label kind of the tool in use during that interval (brush, eraser and
  polygon -> ``mask``, block tool -> ``blocks``, box tool -> ``boxes``, tag tool -> ``tag``).
  Zoom, pan and looking around count: finding the defect is part of labelling it. Navigation in
  the image list does not extend the visit: it ends it.

Pure Python with an injectable clock, no Qt, so the rules are tested with a fake clock.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

from core.labels import LABEL_KINDS

# Canvas tools -> the label kind they produce (the kinds of core.labels).
TOOL_KINDS = {"brush": "mask", "eraser": "mask", "polygon": "mask", "block": "blocks",
              "box": "boxes", "tag": "tag"}


@dataclass
class Visit:
    """The measured part of one visit of one image."""

    image_id: int
    session: str
    started_at: float                     # wall clock (epoch s), for the record
    ended_at: float
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


class AnnotationTimer:
    """Feed it events; it accumulates active seconds per kind for the open image."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, idle_threshold: float = 10.0,
                 wall_clock: Callable[[], float] = time.time):
        if idle_threshold <= 0:
            raise ValueError("idle threshold must be positive")
        self.clock = clock
        self.wall_clock = wall_clock
        self.idle_threshold = float(idle_threshold)
        self._visit: Visit | None = None
        self._kind: str | None = None
        self._last: float = 0.0

    @property
    def image_id(self) -> int | None:
        return None if self._visit is None else self._visit.image_id

    @property
    def kind(self) -> str | None:
        return self._kind

    def start(self, image_id: int, kind: str) -> None:
        """An image was opened with a tool of ``kind``; ends any visit still open."""
        self._check(kind)
        self.stop()
        now = self.wall_clock()
        self._visit = Visit(image_id, uuid.uuid4().hex, now, now)
        self._kind = kind
        self._last = self.clock()

    def _advance(self) -> None:
        """Credit the time since the last event to the current kind, unless it was idle."""
        if self._visit is None:
            return
        now = self.clock()
        gap = now - self._last
        if 0 < gap <= self.idle_threshold:
            self._visit.seconds[self._kind] = self._visit.seconds.get(self._kind, 0.0) + gap
        self._last = max(now, self._last)
        self._visit.ended_at = self.wall_clock()

    def activity(self) -> None:
        """An input event on the open image."""
        self._advance()

    def set_kind(self, kind: str) -> None:
        """The user switched tools: time until now goes to the old kind, from now to the new."""
        self._check(kind)
        self._advance()
        self._kind = kind

    def snapshot(self) -> Visit | None:
        """The visit so far (time up to the last event), for periodic saving. A copy."""
        if self._visit is None:
            return None
        v = self._visit
        return Visit(v.image_id, v.session, v.started_at, v.ended_at, dict(v.seconds))

    def stop(self) -> Visit | None:
        """Moving on (or closing): the visit's last event; returns the finished visit."""
        if self._visit is None:
            return None
        self._advance()
        visit, self._visit = self._visit, None
        return visit

    def set_idle_threshold(self, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError("idle threshold must be positive")
        self.idle_threshold = float(seconds)

    @staticmethod
    def _check(kind: str) -> None:
        if kind not in LABEL_KINDS:
            raise ValueError(f"unknown label kind {kind!r}; expected one of {LABEL_KINDS}")
