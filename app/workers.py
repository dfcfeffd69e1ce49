"""Long work off the GUI thread, in the style of superqt's thread_worker: a job runs a plain
function in a Python thread, reports progress through Qt signals (delivered on the GUI thread),
and is cancelled through the progress callback returning False (the core's convention)."""
from __future__ import annotations

import threading
import traceback
from typing import Any, Callable

from PySide6.QtCore import QObject, Signal, Slot

from core.errors import Cancelled, SemiRestError

from .project.store import StoreError


class Job(QObject):
    progress = Signal(int, int)      # done, total
    finished = Signal(object)        # the function's result
    failed = Signal(str)             # a message for the user
    cancelled = Signal()
    # The worker thread emits these; they are queued to this object's (the GUI) thread and
    # re-emitted there as the public signals, so every receiver, lambdas included, runs on the
    # GUI thread whatever PySide decides for plain-function connections.
    _progress_x = Signal(int, int)
    _done_x = Signal(str)

    def __init__(self, fn: Callable[[Callable[[int, int], bool]], Any], name: str = "job", parent=None):
        super().__init__(parent)
        self._fn, self.name = fn, name
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self.result: Any = None
        self.error: str | None = None
        self._progress_x.connect(self._relay_progress)
        self._done_x.connect(self._relay_done)

    @Slot(int, int)
    def _relay_progress(self, done: int, total: int) -> None:
        self.progress.emit(done, total)

    @Slot(str)
    def _relay_done(self, how: str) -> None:
        if how == "finished":
            self.finished.emit(self.result)
        elif how == "cancelled":
            self.cancelled.emit()
        else:
            self.failed.emit(self.error)

    def start(self) -> "Job":
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._cancel.set()

    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.is_running()

    def _progress(self, done: int, total: int) -> bool:
        self._progress_x.emit(int(done), int(total))
        return not self._cancel.is_set()

    def _run(self) -> None:
        try:
            self.result = self._fn(self._progress)
        except Cancelled:
            self._done_x.emit("cancelled")
            return
        except (SemiRestError, StoreError, OSError, ValueError) as exc:
            self.error = str(exc)
        except Exception as exc:   # a bug: say so, never take the window down with it
            self.error = f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}"
        else:
            self._done_x.emit("finished")
            return
        self._done_x.emit("failed")
