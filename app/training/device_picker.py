"""The device picker: the CPU and every CUDA GPU by index, name, free and total memory.

The list comes from a background process (app.training.devices) so the window never initialises
CUDA, fetched the first time the picker is shown (labelling alone never pays for it); until it
arrives the CPU is listed and the remembered choice stands. With no GPU the picker says so plainly. The last choice
is remembered per user (AppSettings ``train/device``) and restored when that device still exists.
Tests inject a list with :meth:`set_devices`.
"""
from __future__ import annotations

import sys

from shiboken6 import isValid
from PySide6.QtCore import QProcess, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QToolButton, QVBoxLayout, QWidget

from core.device import DeviceInfo

from .devices import NO_GPU, label, parse
from .process import worker_environment

SETTING = "train/device"
CPU_ONLY = [DeviceInfo("cpu", "CPU", None, None)]


class DevicePicker(QWidget):
    deviceChanged = Signal(str)          # "cpu" | "cuda:N"

    def __init__(self, app_settings=None, devices: list[DeviceInfo] | None = None, parent=None):
        super().__init__(parent)
        self.app_settings = app_settings
        self.combo = QComboBox()
        self.combo.setMinimumContentsLength(24)
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.refresh_button = QToolButton(text="↻", toolTip="Look for devices again (free memory changes)")
        self.refresh_button.clicked.connect(self.refresh)
        self.devices: list[DeviceInfo] = []
        self._final = False              # the real list arrived (before: a CPU-only placeholder)
        self._proc: QProcess | None = None
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.combo, 1)
        row.addWidget(self.refresh_button)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(row)
        lay.addWidget(self.note)
        self.combo.currentIndexChanged.connect(self._changed)
        if devices is not None:
            self.set_devices(devices)
        else:
            self.set_devices(CPU_ONLY, final=False)

    def showEvent(self, event) -> None:
        if not self._final and self._proc is None:
            self.refresh()
        super().showEvent(event)

    # ---- the list -------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Fetch the device list in the background (a few seconds: it imports torch)."""
        if self._proc is not None:
            return
        self.note.setText("Looking for GPUs…")
        proc = QProcess(self)
        proc.setProcessEnvironment(worker_environment())
        # Bound methods that ask sender(), not lambdas holding the process: a slot that keeps a
        # reference to its own sender is released inside the sender's destructor, and deleting
        # the finished process then crashed the app now and then (SIGBUS in QObject::~QObject
        # during the deferred delete; 1 run in 3 of the picker's tests, and a CI run).
        proc.finished.connect(self._finished)
        proc.errorOccurred.connect(self._failed)
        self._proc = proc
        proc.start(sys.executable, ["-m", "app.training.devices"])

    def _finished(self, code: int, status: QProcess.ExitStatus) -> None:
        if isValid(self):
            self._listed(self.sender(), code if status == QProcess.ExitStatus.NormalExit else -1)

    def _failed(self, _error: QProcess.ProcessError) -> None:
        if isValid(self):
            self._listed(self.sender(), -1)

    def _listed(self, proc: QProcess | None, code: int) -> None:
        # A picker destroyed while listing (window closed, app quitting) destroys its running
        # child process, which still emits errorOccurred: nothing is left to update then.
        if proc is None or proc is not self._proc or not (isValid(self) and isValid(proc)):
            return
        self._proc = None
        out = bytes(proc.readAllStandardOutput()).decode("utf-8", "replace")
        proc.deleteLater()
        try:
            devices = parse(out) if code == 0 else None
        except ValueError:
            devices = None
        if devices is None:
            self.set_devices(CPU_ONLY)
            self.note.setText("Could not list GPUs (torch failed to start); training runs on the CPU")
        else:
            self.set_devices(devices)

    def set_devices(self, devices: list[DeviceInfo], final: bool = True) -> None:
        """Show ``devices`` (the first must be the CPU); keep or restore the chosen one."""
        want = self.current() if self._final else self._remembered()
        self._final = final
        self.devices = list(devices)
        self.combo.blockSignals(True)
        self.combo.clear()
        for d in self.devices:
            self.combo.addItem(label(d), d.spec)
            self.combo.setItemData(self.combo.count() - 1, d.describe(), 3)   # tooltip role
        i = self.combo.findData(want)
        self.combo.setCurrentIndex(i if i >= 0 else 0)
        self.combo.blockSignals(False)
        gpus = [d for d in self.devices if d.spec != "cpu"]
        if final:
            self.note.setText(NO_GPU if not gpus else f"{len(gpus)} GPU{'s' if len(gpus) > 1 else ''} found")
        self._changed()

    def _remembered(self) -> str:
        if self.app_settings is None:
            return "cpu"
        return str(self.app_settings.value(SETTING, "cpu"))

    def stop(self) -> None:
        """Closing: do not leave the listing process behind."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.waitForFinished(2000)

    def _changed(self, *_) -> None:
        spec = self.current()
        if self._final and self.app_settings is not None:   # a placeholder must not overwrite it
            self.app_settings.set_value(SETTING, spec)
        self.deviceChanged.emit(spec)

    def current(self) -> str:
        """The chosen device; before the list arrived, the remembered one."""
        if not self._final:
            return self._remembered()
        return self.combo.currentData() or "cpu"

    def select(self, spec: str) -> bool:
        i = self.combo.findData(spec)
        if i >= 0:
            self.combo.setCurrentIndex(i)
        return i >= 0
