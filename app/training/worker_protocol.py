"""The training worker's protocol, read robustly, and the live state of a run. No Qt.

The worker (``python -m core.cli train ... --progress-json``) prints one JSON object per line on
stdout: ``{"event": "progress", "stage", "done", "total", "message", "metrics"}``, then one
``{"event": "result", ...}`` or ``{"event": "error", "kind", "message"}``. Anything else (library
noise, a half-written line when the process dies) must never break the reader: lines are split on
newlines across reads, decoded leniently, and what does not parse is kept as log text.
"""
from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import dataclass, field

MAX_LINE = 1 << 20          # a line longer than this is noise: dropped in pieces, never buffered whole
CURVES = ("loss", "l_x", "l_u", "val_pixel_ap")


class LineSplitter:
    """Bytes in, complete text lines out; a partial last line waits for the next read."""

    def __init__(self):
        self._buf = b""

    def feed(self, data: bytes) -> list[str]:
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        if len(self._buf) > MAX_LINE:
            lines.append(self._buf)
            self._buf = b""
        return [ln.decode("utf-8", errors="replace").rstrip("\r") for ln in lines]

    def flush(self) -> list[str]:
        """The unterminated rest (a process that died mid-line)."""
        rest, self._buf = self._buf, b""
        text = rest.decode("utf-8", errors="replace").strip()
        return [text] if text else []


def parse_event(line: str) -> dict | None:
    """The event of a protocol line, or None for anything else (noise, a truncated line)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        ev = json.loads(line)
    except ValueError:
        return None
    if not isinstance(ev, dict) or ev.get("event") not in ("progress", "result", "error"):
        return None
    if ev["event"] == "progress":
        try:
            ev["done"], ev["total"] = int(ev.get("done", 0)), int(ev.get("total", 0))
        except (TypeError, ValueError):
            return None
        if not isinstance(ev.get("metrics"), dict):
            ev["metrics"] = {}
        ev["stage"] = str(ev.get("stage", ""))
        ev["message"] = str(ev.get("message", ""))
    return ev


def _finite(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


@dataclass
class RunState:
    """What the Train panel shows, folded from the events of one worker."""

    stage: str = ""
    message: str = ""
    done: int = 0
    total: int = 0
    rate: float | None = None          # units (steps, images) per second of the current stage
    train_rate: float | None = None    # steps per second of the last training stage
    eta_s: float | None = None         # of the current stage
    train_stage: str = ""              # "supervised" | "boxes (pseudo-masks)" | "ResMixMatch"
    curves: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: {k: [] for k in CURVES})
    stage_starts: list[tuple[float, str]] = field(default_factory=list)   # (x, stage) for the curve
    log: deque = field(default_factory=lambda: deque(maxlen=200))
    result: dict | None = None
    error: dict | None = None          # {"kind", "message"}
    _offset: int = 0
    _last_total: int = 0

    def apply(self, ev: dict) -> None:
        kind = ev.get("event")
        if kind == "result":
            self.result = ev
            return
        if kind == "error":
            self.error = {"kind": str(ev.get("kind", "error")), "message": str(ev.get("message", ""))}
            return
        stage, m = ev["stage"], ev["metrics"]
        if stage == "log":
            self.log.append(ev["message"])
            return
        self.stage, self.message, self.done, self.total = stage, ev["message"], ev["done"], ev["total"]
        self.rate, self.eta_s = _finite(m.get("rate")), _finite(m.get("eta_s"))
        if stage != "train":
            return
        if self.rate is not None:
            self.train_rate = self.rate
        if ev["message"] != self.train_stage:          # a new training stage continues the x axis
            if self.train_stage:
                self._offset += self._last_total
            self.train_stage = ev["message"]
            self.stage_starts.append((float(self._offset + max(0, ev["done"] - 1)), ev["message"]))
        self._last_total = ev["total"]
        x = float(self._offset + ev["done"])
        for k in CURVES:
            v = _finite(m.get(k))
            if v is not None:
                self.curves[k].append((x, v))

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(1.0, self.done / self.total)

    def position(self) -> str:
        """Where the run is: "train (supervised): 120 / 400"."""
        what = f"{self.stage}" + (f" ({self.message})" if self.message and self.stage == "train" else "")
        return f"{what}: {self.done} / {self.total}"

    @property
    def last_step(self) -> int:
        """The last training step reported (counted across training stages), 0 before any."""
        return int(self.curves["loss"][-1][0]) if self.curves["loss"] else 0

    def describe(self) -> str:
        """One line for the panel: stage, step, rate and ETA."""
        if not self.stage:
            return "starting…"
        if self.stage == "done":
            return f"finished: {self.last_step} steps" + (f" at {self.train_rate:.2f} steps/s" if self.train_rate else "")
        parts = [self.position()]
        if self.rate is not None:
            unit = "steps/s" if self.stage == "train" else "/s"
            parts.append(f"{self.rate:.2f} {unit}")
        if self.eta_s is not None and self.done < self.total:
            parts.append(f"ETA {format_seconds(self.eta_s)}")
        return ", ".join(parts)


def state_from_log(path) -> RunState:
    """A run's state replayed from its log (the worker's stdout is kept there line by line): what
    the panel shows of a run that is not running any more, after a restart. Resumes append to the
    same log, so the curve goes on across them. A missing or unreadable log gives an empty state."""
    st = RunState()
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except (OSError, TypeError):
        return st
    splitter = LineSplitter()
    for line in splitter.feed(data) + splitter.flush():
        ev = parse_event(line)
        if ev is not None:
            st.apply(ev)
    return st


def format_seconds(s: float) -> str:
    s = max(0, int(round(s)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"
