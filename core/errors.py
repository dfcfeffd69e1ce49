"""Errors the core raises. Every message names the file (or setting) and the problem, so a user
can act on it without a traceback."""
from __future__ import annotations

from pathlib import Path


class SemiRestError(Exception):
    """Base class for every error the core raises on purpose."""


class InputError(SemiRestError):
    """Bad input file: names the file and what is wrong with it."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


class ImageReadError(InputError):
    """An image or mask could not be read (missing, empty, corrupt, truncated, unsupported)."""


class LabelError(InputError):
    """A label is invalid (bad box, mask of the wrong size, label for a missing image...)."""


class DatasetError(InputError):
    """A dataset folder is unusable (missing folders, no images)."""


class WriteError(InputError):
    """An output (model, checkpoint, heatmap, CSV, export) cannot be written: no space left, a
    read-only file system, no permission. The message names the file and the place at fault.
    A subclass of InputError because atomic writes raised that before, and callers catch it."""

    def __init__(self, path: str | Path, problem: str):
        super().__init__(path, problem)
        SemiRestError.__init__(self, f"cannot write {path}: {problem}")


class ConfigError(SemiRestError):
    """A configuration value is invalid."""


class WeightsUnavailable(SemiRestError):
    """Backbone weights cannot be had; the message says what to do."""


class Cancelled(SemiRestError):
    """The progress callback asked to stop. Partial outputs have been removed."""


class ExportError(SemiRestError):
    """A model cannot be exported, or an export cannot run (a missing package, a setting the
    graph cannot express, an export that disagrees with the torch model)."""


class DeviceError(SemiRestError):
    """The requested device does not exist or ran out of memory; the message suggests a way out."""


class PreflightError(SemiRestError):
    """The dry run before a long training run failed: the real run would have failed too."""
