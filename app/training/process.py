"""The training worker: ``python -m core.cli train ... --progress-json`` in its own process.

A separate process, not a thread, so that nothing training does (a CUDA out-of-memory, a crash
in a native library, a kill) can take the window down, and so that Cancel can stop it at once.
Qt's QProcess delivers its output on the GUI thread's event loop: the window never blocks.

- stdout is read as the JSON-lines protocol (app.training.worker_protocol); stderr is log text; both
  are appended to the run's log file, and the last stderr lines are kept for the error message.
- Cancel sends SIGTERM (the CLI stops like Ctrl-C: temporary files removed, checkpoint kept,
  exit 130) and kills the process if it has not exited after ``KILL_AFTER_MS``.
- The end is classified once: ``finished`` (exit 0 with a result), ``cancelled`` (asked to stop),
  or ``failed`` with a message for the user: the worker's own error (a DeviceError carries advice
  on memory), or, for a process that died (killed, crashed), that fact and its last stderr lines.
"""
from __future__ import annotations

import os
import sys
import time
from collections import deque
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

import core

from .worker_protocol import LineSplitter, RunState, parse_event

KILL_AFTER_MS = 10_000
EXIT_ERROR, EXIT_CANCELLED = 2, 130
STDERR_TAIL = 12


def worker_environment() -> QProcessEnvironment:
    """The app's environment, unbuffered, with the folder holding ``core`` on PYTHONPATH."""
    env = QProcessEnvironment.systemEnvironment()
    root = str(Path(core.__file__).resolve().parents[1])
    old = env.value("PYTHONPATH", "")
    env.insert("PYTHONPATH", root + (os.pathsep + old if old else ""))
    env.insert("PYTHONUNBUFFERED", "1")
    env.insert("PYTHONIOENCODING", "utf-8")
    return env


class TrainingProcess(QObject):
    started = Signal(int)                 # pid
    event = Signal(dict)                  # one protocol event
    ended = Signal(str, object, str)      # status, exit code (None: killed/crashed), message

    def __init__(self, command: list[str], cwd: str | Path, log_path: str | Path | None = None,
                 python: str | None = None, parent=None):
        super().__init__(parent)
        self.command, self.cwd = list(command), Path(cwd)
        self.python = python or sys.executable
        self.log_path = Path(log_path) if log_path else None
        self.state = RunState()
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL)
        self.status: str | None = None
        self._out, self._err = LineSplitter(), LineSplitter()
        self._cancel_requested = False
        self._log = None
        self.proc = QProcess(self)
        self.proc.setWorkingDirectory(str(self.cwd))
        self.proc.setProcessEnvironment(worker_environment())
        self.proc.readyReadStandardOutput.connect(self._read_stdout)
        self.proc.readyReadStandardError.connect(self._read_stderr)
        self.proc.finished.connect(self._finished)
        self.proc.errorOccurred.connect(self._error)
        self.proc.started.connect(lambda: self.started.emit(int(self.proc.processId())))
        self._killer = QTimer(self, singleShot=True, interval=KILL_AFTER_MS, timeout=self.kill)

    # ---- control ----------------------------------------------------------------------------------
    def start(self) -> None:
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "a", encoding="utf-8", errors="replace")
            self._log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {self.python} "
                            f"{' '.join(self.command)}  (in {self.cwd})\n")
            self._log.flush()
        self.proc.start(self.python, self.command)

    def pid(self) -> int | None:
        pid = int(self.proc.processId())
        return pid or None

    def is_running(self) -> bool:
        return self.proc.state() != QProcess.ProcessState.NotRunning

    def cancel(self, kill_after_ms: int = KILL_AFTER_MS) -> None:
        """Ask the worker to stop (SIGTERM; it keeps its checkpoint); kill it if it lingers."""
        if not self.is_running():
            return
        self._cancel_requested = True
        self.proc.terminate()
        self._killer.start(kill_after_ms)

    def kill(self) -> None:
        if self.is_running():
            self.proc.kill()

    def wait(self, ms: int) -> bool:
        """Block until the process has ended (for closing the window); True if it did."""
        if not self.is_running():
            return True
        return self.proc.waitForFinished(ms)

    # ---- output -----------------------------------------------------------------------------------
    def _write_log(self, text: str) -> None:
        if self._log is not None:
            self._log.write(text + "\n")
            self._log.flush()

    def _read_stdout(self) -> None:
        self._lines(self._out.feed(bytes(self.proc.readAllStandardOutput())), stdout=True)

    def _read_stderr(self) -> None:
        self._lines(self._err.feed(bytes(self.proc.readAllStandardError())), stdout=False)

    def _lines(self, lines: list[str], stdout: bool) -> None:
        for line in lines:
            self._write_log(line)
            ev = parse_event(line) if stdout else None
            if ev is None:
                if line.strip():
                    self.stderr_tail.append(line.rstrip())
                    self.state.log.append(line.rstrip())
                continue
            self.state.apply(ev)
            self.event.emit(ev)

    # ---- the end ----------------------------------------------------------------------------------
    def _error(self, err) -> None:
        if err == QProcess.ProcessError.FailedToStart:
            self._end("failed", None, f"the training worker could not be started "
                                      f"({self.python}: {self.proc.errorString()})")

    def _finished(self, code: int, status) -> None:
        self._read_stdout()
        self._read_stderr()
        self._lines(self._out.flush(), stdout=True)
        self._lines(self._err.flush(), stdout=False)
        crashed = status == QProcess.ExitStatus.CrashExit
        st = self.state
        if self._cancel_requested and (crashed or code in (EXIT_CANCELLED, EXIT_ERROR) or st.result is None):
            self._end("cancelled", None if crashed else code, "cancelled; Resume continues from the last checkpoint")
        elif not crashed and code == 0 and st.result is not None:
            self._end("finished", code, "")
        elif not crashed and st.error is not None:
            self._end("failed", code, st.error["message"] or st.error["kind"])
        else:
            how = ("was killed or crashed" if crashed else f"exited with status {code}")
            tail = "\n".join(self.stderr_tail)
            self._end("failed", None if crashed else code,
                      f"the training process {how} without a result" + (f"; its last output:\n{tail}" if tail else ""))

    def _end(self, status: str, code, message: str) -> None:
        if self.status is not None:
            return
        self.status = status
        self._killer.stop()
        self._write_log(f"=== {status}" + (f" (exit {code})" if code is not None else "") +
                        (f": {message}" if message else ""))
        if self._log is not None:
            self._log.close()
            self._log = None
        self.ended.emit(status, code, message)
