"""Progress events, cancellation, and the two renderings of one event stream.

Every long operation of the core reports through a :class:`Reporter`: one event per unit of work
(image, coreset step, training step), each a cancellation point. The caller's callback receives a
:class:`ProgressEvent` and returns ``False`` to request cancellation; the core then raises
:class:`~core.errors.Cancelled` after removing partial outputs. The CLI renders the same stream as
tqdm bars or, with ``--progress-json``, as one JSON line per event (the app's worker protocol),
so there is one training path.
"""
from __future__ import annotations

import json
import math
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from .errors import Cancelled


@dataclass
class ProgressEvent:
    stage: str                 # features | coreset | synthesis | neighbours | train | validate | predict | eval | done | log
    done: int
    total: int
    message: str = ""
    metrics: dict = field(default_factory=dict)   # loss, l_x, l_u, lr, val_ap, steps_per_s, eta_s, ...

    def to_json(self) -> str:
        return json.dumps({"event": "progress", **asdict(self)}, default=_jsonable)


def _jsonable(o):
    try:
        return float(o)
    except (TypeError, ValueError):
        return str(o)


ProgressCallback = Callable[[ProgressEvent], "bool | None"]

ESTIMATE_AFTER = 3          # units timed (after a stage's first, which holds the warm-up) before
ESTIMATE_MIN_S = 30.0       # the one-line estimate of a stage; none for stages shorter than this


def duration_text(seconds: float) -> str:
    """A duration as a person says it: 40 s, 12 min, 3.5 h, 2.1 days."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


class Reporter:
    """Emits events to a callback, adds rate and ETA per stage, and checks for cancellation.

    ``cancel_event``: an optional ``threading.Event``; setting it cancels at the next event, which
    lets a GUI thread stop work running in another thread without a callback round trip.
    """

    def __init__(self, callback: ProgressCallback | None = None,
                 cancel_event: threading.Event | None = None, min_interval: float = 0.0):
        self.callback = callback
        self.cancel_event = cancel_event
        self.min_interval = min_interval
        self._stage: str | None = None
        self._t0 = 0.0
        self._d0 = 0
        self._last_emit = 0.0
        self._estimated: set[tuple[str, int]] = set()

    def __call__(self, stage: str, done: int, total: int, message: str = "", **metrics) -> None:
        now = time.perf_counter()
        if stage != self._stage:
            self._stage, self._t0, self._d0 = stage, now, done
        if self.cancel_event is not None and self.cancel_event.is_set():
            raise Cancelled(f"cancelled during {stage}")
        if self.callback is None:
            return
        self._estimate(stage, done, total, message, now)
        final = done >= total
        if not final and self.min_interval and now - self._last_emit < self.min_interval:
            return
        self._last_emit = now
        elapsed = now - self._t0
        work = done - self._d0
        if work > 0 and elapsed > 0:
            rate = work / elapsed
            metrics.setdefault("rate", rate)
            metrics.setdefault("eta_s", max(0.0, (total - done) / rate))
        if self.callback(ProgressEvent(stage, done, total, message, metrics)) is False:
            raise Cancelled(f"cancelled during {stage}")

    def _estimate(self, stage: str, done: int, total: int, message: str, now: float) -> None:
        """Once per stage, after its first few units: a line with the time per unit measured on
        this machine and the time left (the bars show a live ETA; this one stays in the log)."""
        work, elapsed = done - self._d0, now - self._t0
        if (stage == "log" or work < ESTIMATE_AFTER or elapsed <= 0 or done >= total
                or (stage, total) in self._estimated):
            return
        self._estimated.add((stage, total))
        per = elapsed / work
        if per * (total - done) < ESTIMATE_MIN_S:
            return
        unit = "step" if stage == "train" else "item"
        what = f"{stage} ({message})" if stage == "train" and message else stage
        text = (f"estimate: {what} takes {per:.3g} s per {unit} here, about "
                f"{duration_text(per * (total - done))} for the {total - done} {unit}s left"
                + (" (plus validation)" if stage == "train" else ""))
        if self.callback(ProgressEvent("log", 1, 1, text, {"seconds_per_unit": per,
                                                           "eta_s": per * (total - done)})) is False:
            raise Cancelled(f"cancelled during {stage}")

    def log(self, message: str, **metrics) -> None:
        """A one-off message (e.g. which backbone was chosen); also a cancellation point."""
        self("log", 1, 1, message, **metrics)
        self._stage = None

    def tick(self, stage: str, message: str = "") -> Callable[[int, int], None]:
        """A ``tick(done, total)`` function for inner loops (e.g. the coreset)."""
        return lambda done, total: self(stage, done, total, message)


class TqdmRenderer:
    """Renders events as one tqdm bar per stage on stderr; log events as plain lines."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.bar = None
        self.stage = None

    def __call__(self, ev: ProgressEvent) -> None:
        from tqdm import tqdm
        if ev.stage == "log":
            self.close()
            print(ev.message, file=self.stream, flush=True)
            return
        if ev.stage != self.stage or self.bar is None:
            self.close()
            self.stage = ev.stage
            self.bar = tqdm(total=ev.total, desc=f"{ev.stage:<10}", file=self.stream, leave=True,
                            dynamic_ncols=True, mininterval=0.5)
        self.bar.n = ev.done
        post = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in ev.metrics.items()
                if k not in ("rate", "eta_s") and not (isinstance(v, float) and math.isnan(v))}
        if ev.message:
            post["note"] = ev.message
        if post:
            self.bar.set_postfix(post, refresh=False)
        self.bar.refresh()
        if ev.done >= ev.total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class JsonRenderer:
    """One JSON object per line on stdout: the worker protocol."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout

    def __call__(self, ev: ProgressEvent) -> None:
        self.stream.write(ev.to_json() + "\n")
        self.stream.flush()
