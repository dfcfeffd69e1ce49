"""The device list for the picker, fetched in a subprocess.

``core.device.list_devices()`` imports torch and opens a CUDA context on every GPU it queries
(hundreds of MB each, for the life of the process). The window must not pay that, so the list is
fetched by ``python -m app.training.devices`` (prints JSON) in the background; tests inject a list.
No Qt here: the process is run by the picker.
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict

from core.device import DeviceInfo

NO_GPU = "No CUDA GPU found: training runs on the CPU"
GIB = 1024 ** 3


def parse(text: str) -> list[DeviceInfo]:
    """The JSON printed by :func:`main` (last JSON line wins; noise before it is ignored)."""
    for line in reversed(text.strip().splitlines()):
        if line.startswith("["):
            try:
                return [DeviceInfo(d["spec"], d["name"], d.get("total_bytes"), d.get("free_bytes"))
                        for d in json.loads(line)]
            except (ValueError, KeyError, TypeError):
                break
    raise ValueError("the device list could not be read")


def label(d: DeviceInfo) -> str:
    """How the picker names a device: index, name, free and total memory."""
    if d.spec == "cpu":
        return f"CPU — {d.name}"
    mem = ""
    if d.total_bytes:
        free = "?" if d.free_bytes is None else f"{d.free_bytes / GIB:.1f}"
        mem = f" — {free} GiB free of {d.total_bytes / GIB:.1f} GiB"
    return f"GPU {d.spec.split(':', 1)[1]} ({d.spec}) — {d.name}{mem}"


def main() -> int:
    from core.device import list_devices
    print(json.dumps([asdict(d) for d in list_devices()]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
