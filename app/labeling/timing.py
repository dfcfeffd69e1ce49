"""Active annotation time per image and per label kind, measured like the paper's labelling tool.

The paper's tool measured "the time from opening an image until moving on", with idle periods
excluded. Here (docs/decisions/0003-annotation-timing.md):

- A *visit* starts when an image is opened on the canvas and ends when the user moves to another
  image, closes the project or quits. Moving on is the last event of the visit.
- The window reports every input event on the canvas (mouse press/move/release, wheel, keys, tool
  switches) as *activity*. The time between two consecutive events is active time if it is at most
  ``idle_threshold`` seconds (default 10 s); a longer gap is idle and is excluded whole (the user
  was away, and we cannot tell when they left).
- Active time is held *pending* until the user edits a label: an edit of kind K (a box drawn or
  moved, a brush or polygon stroke, block cells, an undo/redo of one) books the pending time to K.
  Giving a verdict (tagging the image normal or defective) books it to ``checked`` and records the
  verdict; clearing a tag is an edit of ``tag``. So with several kinds edited on one image, each
  edit gets the time since the previous edit. The active tool does not matter.
- At the end of the visit, time after the last edit goes to the last edited kind (checking one's
  work before moving on). A visit without any edit or verdict (paging through images, looking at
  heatmaps) records nothing: browsing is not labelling.

Pure Python with an injectable clock, no Qt, so the rules are tested with a fake clock.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

from core.data.labelcheck import CHECKED, LABEL_KINDS, SECONDS_KINDS, TAGS

# CHECKED: time spent judging an image, booked with a verdict. TIMING_KINDS: what the store's
# timing table accepts (app/project/schema.py TIMING_KINDS_SQL): the label kinds and "checked".
TIMING_KINDS = SECONDS_KINDS


@dataclass
class Visit:
    """The measured part of one visit of one image."""

    image_id: int
    session: str
    started_at: float                     # wall clock (epoch s), for the record
    ended_at: float
    seconds: dict[str, float] = field(default_factory=dict)
    verdict: str | None = None            # the last verdict given ("normal"/"defective"), if any

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


class AnnotationTimer:
    """Feed it events and edits; it books active seconds per edited kind for the open image."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, idle_threshold: float = 10.0,
                 wall_clock: Callable[[], float] = time.time):
        if idle_threshold <= 0:
            raise ValueError("idle threshold must be positive")
        self.clock = clock
        self.wall_clock = wall_clock
        self.idle_threshold = float(idle_threshold)
        self._visit: Visit | None = None
        self._last: float = 0.0
        self._pending: float = 0.0            # active time since the last edit, not booked yet
        self._last_kind: str | None = None    # the kind of the last edit (gets the time after it)

    @property
    def image_id(self) -> int | None:
        return None if self._visit is None else self._visit.image_id

    @property
    def pending(self) -> float:
        """Active seconds since the last edit (or the start), not booked to any kind yet."""
        return self._pending

    def start(self, image_id: int) -> None:
        """An image was opened; ends any visit still open."""
        self.stop()
        now = self.wall_clock()
        self._visit = Visit(image_id, uuid.uuid4().hex, now, now)
        self._last = self.clock()
        self._pending, self._last_kind = 0.0, None

    def _advance(self) -> None:
        """Add the time since the last event to the pending time, unless it was idle."""
        if self._visit is None:
            return
        now = self.clock()
        gap = now - self._last
        if 0 < gap <= self.idle_threshold:
            self._pending += gap
        self._last = max(now, self._last)
        self._visit.ended_at = self.wall_clock()

    def _book(self, kind: str) -> None:
        self._visit.seconds[kind] = self._visit.seconds.get(kind, 0.0) + self._pending
        self._pending, self._last_kind = 0.0, kind

    def activity(self) -> None:
        """An input event on the open image (including a tool switch): extends active time only."""
        self._advance()

    def edited(self, kind: str) -> None:
        """A label of ``kind`` changed on the open image: the time since the last edit is its."""
        if kind not in LABEL_KINDS:
            raise ValueError(f"unknown label kind {kind!r}; expected one of {LABEL_KINDS}")
        self._advance()
        if self._visit is not None:
            self._book(kind)

    def verdict(self, tag: str) -> None:
        """The user judged the open image normal or defective: the time since the last edit is
        ``checked`` time, and the verdict is kept (the last one of the visit wins)."""
        if tag not in TAGS:
            raise ValueError(f"a verdict is one of {TAGS}, got {tag!r}")
        self._advance()
        if self._visit is not None:
            self._book(CHECKED)
            self._visit.verdict = tag

    def snapshot(self) -> Visit | None:
        """The visit as :meth:`stop` would end it now (time up to the last event), for periodic
        saving. A copy."""
        if self._visit is None:
            return None
        v = self._visit
        seconds = dict(v.seconds)
        if self._last_kind is not None:
            seconds[self._last_kind] = seconds.get(self._last_kind, 0.0) + self._pending
        return Visit(v.image_id, v.session, v.started_at, v.ended_at, seconds, v.verdict)

    def stop(self) -> Visit | None:
        """Moving on (or closing): the visit's last event; returns the finished visit. Time after
        the last edit goes to the last edited kind; a visit without edits has no seconds."""
        if self._visit is None:
            return None
        self._advance()
        if self._last_kind is not None:
            self._book(self._last_kind)
        visit, self._visit = self._visit, None
        self._pending, self._last_kind = 0.0, None
        return visit

    def set_idle_threshold(self, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError("idle threshold must be positive")
        self.idle_threshold = float(seconds)
