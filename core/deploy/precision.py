"""Inference precision: which float type the Swin's matrix products run in (decision 0024).

``float32`` (the default) is exact: the maps equal the export's and every stored result. The low
precisions run only the Swin (the largest share of inference time) under ``torch.autocast``: its
linear layers and attention in bfloat16 or float16, while LayerNorm, softmax and the bagged
average stay float32 as autocast keeps them. The backbone and the neighbour search stay float32:
bfloat16 features move the nearest neighbours, and with them the residuals (measured: block maps
moved by up to 0.33 with the backbone in bfloat16, 0.003 with the Swin alone).

- ``bfloat16``: CPUs with AMX or AVX512-BF16 (Intel Sapphire Rapids and later, AMD Zen 4) and
  GPUs from Ampere on. On other CPUs oneDNN emulates it and it can be slower than float32.
- ``float16``: GPUs only (torch's CPU kernels for it are slow).
"""
from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions: the CLI lists PRECISIONS without paying torch's start-up
PRECISIONS = ("float32", "bfloat16", "float16")
DEFAULT_PRECISION = "float32"
# train.precision also takes "auto" (its default): bfloat16 where the hardware multiplies it
# (resolve_precision), float32 elsewhere. Measured on the 8 dev classes: the same test pixel AP
# to 0.02 points, about 1.6x faster training on a CPU with AMX (decision 0024).
TRAIN_PRECISIONS = ("auto",) + PRECISIONS


def known_precision(precision: str, names: tuple[str, ...] = PRECISIONS, what: str = "precision") -> str:
    """``precision`` if it is one of ``names``; else the error every caller gives (``what``: the
    setting's name as the user wrote it)."""
    if precision not in names:
        raise ConfigError(f"{what}: expected one of {', '.join(names)}, got {precision!r}")
    return precision


def check_precision(precision: str, device: "torch.device") -> str:
    """``precision`` if it is known and runs on ``device``; a clear error otherwise."""
    known_precision(precision)
    if precision == "float16" and device.type != "cuda":
        raise ConfigError("precision float16 runs on a CUDA device only; on the CPU use bfloat16 "
                          "(fast where the CPU has AMX or AVX512-BF16) or float32")
    import torch
    if precision == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"{device} has no bfloat16 support; use float16 or float32")
    return precision


@functools.lru_cache(maxsize=1)     # the CPU does not change while the process runs
def cpu_info() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ("model name", "flags", ...); empty where
    there is no such file (not Linux)."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if not line.strip():
                    break                      # the first processor's block ends here
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


def cpu_has_fast_bf16() -> bool:
    """True when this CPU multiplies bfloat16 in hardware (AMX or AVX512-BF16), where bfloat16
    pays off; read from /proc/cpuinfo (Linux) and False where that is absent."""
    flags = cpu_info().get("flags", "").split()
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str, device: "torch.device") -> str:
    """``auto`` -> ``bfloat16`` on a CPU that multiplies bfloat16 in hardware and on a CUDA device
    that supports it, else ``float32``; any other value as it is."""
    if precision != "auto":
        return precision
    if device.type == "cpu":
        return "bfloat16" if cpu_has_fast_bf16() else DEFAULT_PRECISION
    if device.type == "cuda":
        import torch
        return "bfloat16" if torch.cuda.is_bf16_supported() else DEFAULT_PRECISION
    return DEFAULT_PRECISION


def low_precision(device: "torch.device", precision: str):
    """The context the Swin runs in: nothing for float32, else autocast to ``precision``."""
    import torch
    if precision == DEFAULT_PRECISION:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype={"bfloat16": torch.bfloat16, "float16": torch.float16}[precision])
