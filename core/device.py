"""Device selection. Nothing assumes ``cuda:0``: the user names a device, or ``auto`` takes the
CUDA device with the most free memory, or the CPU when there is none."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import DeviceError

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions: the app's window imports DeviceInfo and must not pay
# torch's start-up (about 2 s) in the GUI process (docs/decisions/0008-training-worker.md).


@dataclass(frozen=True)
class DeviceInfo:
    spec: str                 # "cpu" or "cuda:N"
    name: str
    total_bytes: int | None   # None for the CPU
    free_bytes: int | None

    def describe(self) -> str:
        if self.total_bytes is None:
            return f"{self.spec}: {self.name}"
        gib = 1024 ** 3
        return f"{self.spec}: {self.name}, {self.free_bytes / gib:.1f} GiB free of {self.total_bytes / gib:.1f} GiB"


def list_devices() -> list[DeviceInfo]:
    """The CPU and every CUDA device, with name and total / free memory."""
    import os
    import platform
    import torch
    cpu_name = platform.processor() or platform.machine() or "CPU"
    out = [DeviceInfo("cpu", f"{cpu_name} ({os.cpu_count()} logical cores)", None, None)]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            try:
                free, total = torch.cuda.mem_get_info(i)
            except RuntimeError:
                free, total = None, torch.cuda.get_device_properties(i).total_memory
            out.append(DeviceInfo(f"cuda:{i}", torch.cuda.get_device_name(i), total, free))
    return out


def resolve_device(spec: str | None) -> "torch.device":
    """``auto`` / None, ``cpu``, ``cuda`` (= auto among GPUs) or ``cuda:N``; a clear error otherwise."""
    import torch
    spec = (spec or "auto").strip().lower()
    if spec == "cpu":
        return torch.device("cpu")
    gpus = list_devices()[1:]
    if spec in ("auto", "cuda", "gpu"):
        if not gpus:
            if spec == "auto":
                return torch.device("cpu")
            raise DeviceError("no CUDA device is available on this machine; use --device cpu")
        best = max(gpus, key=lambda d: d.free_bytes or 0)
        return torch.device(best.spec)
    if spec.startswith("cuda:"):
        try:
            idx = int(spec.split(":", 1)[1])
        except ValueError:
            raise DeviceError(f"bad device {spec!r}; use cpu, auto or cuda:N") from None
        if not gpus:
            raise DeviceError(f"{spec} requested but no CUDA device is available; use --device cpu")
        if not 0 <= idx < len(gpus):
            listing = "; ".join(d.describe() for d in gpus)
            raise DeviceError(f"{spec} does not exist; available: {listing}")
        return torch.device(spec)
    raise DeviceError(f"bad device {spec!r}; use cpu, auto or cuda:N")


def is_oom(exc: BaseException) -> bool:
    import torch
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def oom_message(device: "torch.device") -> str:
    return (f"{device} ran out of memory. Try the smaller preset (--preset cpu), a smaller "
            f"features.image_size or swin.embed_dim, bagging off, or another device "
            f"(see `semirest devices`).")
