"""Peak resident memory of one phase of a benchmark job (issue 11: a peak-memory column per method).

Every method of a class runs in one job process, one after the other, so the process-wide peak
(``getrusage``) is the largest method's. On Linux, writing 5 to ``/proc/self/clear_refs`` resets
the kernel's peak-RSS mark (VmHWM) to the current RSS, so the mark read after a phase is the peak
*during* that phase (it includes what the process already held: Python, torch, the loaded images).
Elsewhere the phase peak is unknown and reported as None.
"""
from __future__ import annotations

from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")


def _hwm_mb() -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024      # kB -> MB
    except OSError:
        pass
    return None


class PhasePeak:
    """``with PhasePeak() as p: ...`` then ``p.mb``: the peak RSS in MB during the block, or None
    where the kernel cannot reset its mark."""

    def __init__(self):
        self.mb: float | None = None
        self._reset = False

    def __enter__(self) -> "PhasePeak":
        try:
            _CLEAR.write_text("5")
            self._reset = True
        except OSError:
            self._reset = False
        return self

    def __exit__(self, *exc) -> None:
        self.mb = _hwm_mb() if self._reset else None
