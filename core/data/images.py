"""Robust image and mask reading.

Every reader returns a plain numpy array in one canonical form and raises
:class:`~core.errors.ImageReadError` naming the file and the problem otherwise. Files are read as
bytes and decoded in memory, so non-ASCII paths work on every platform (``cv2.imread`` fails on
them on Windows).

Canonical forms:
- images: ``uint8`` RGB, shape ``(H, W, 3)``; grayscale is replicated, alpha is dropped (anomaly
  images are opaque; a transparent background carries no inspection information), 16-bit and float
  images are scaled to 8 bits (signed integer data with negative values is stretched min..max).
- masks: ``bool``, shape ``(H, W)``, True = defect (any non-zero pixel, the MVTec convention).
  A mask with more than two distinct values (a JPEG-saved or anti-aliased mask, a class-index
  map) is still read that way, with a logged warning naming the file, once per file.
"""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from ..errors import ImageReadError
from ..fileio import atomic_write_bytes

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

try:  # OpenCV prints libpng complaints to stderr for every corrupt file; we report our own.
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
except AttributeError:  # pragma: no cover - very old OpenCV
    pass


def is_image_file(path: str | Path) -> bool:
    p = Path(path)
    return p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def list_images(folder: str | Path) -> list[Path]:
    """Image files of a folder, sorted by name (not recursive)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise ImageReadError(path, "no such file")
    if path.is_dir():
        raise ImageReadError(path, "is a folder, not an image file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageReadError(path, f"cannot be read ({exc.strerror or exc})") from exc
    if not data:
        raise ImageReadError(path, "file is empty (0 bytes)")
    return data


def _decode(path: Path, data: bytes) -> np.ndarray:
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.size == 0:
        kind = _sniff(data)
        if kind is None:
            raise ImageReadError(path, "not a supported image (unknown format or corrupt header)")
        raise ImageReadError(path, f"corrupt or truncated {kind} data: the image cannot be decoded")
    if arr.ndim == 3 and arr.shape[2] not in (1, 2, 3, 4):
        raise ImageReadError(path, f"unsupported number of channels ({arr.shape[2]})")
    return arr


def _sniff(data: bytes) -> str | None:
    signatures = {b"\x89PNG": "PNG", b"\xff\xd8": "JPEG", b"BM": "BMP", b"II*\x00": "TIFF",
                  b"MM\x00*": "TIFF", b"RIFF": "WebP"}
    for sig, name in signatures.items():
        if data.startswith(sig):
            return name
    return None


def _to_uint8(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        # Full-range scaling (65535 -> 255); rounding keeps 8-bit data stored as 16-bit exact.
        return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        a = np.nan_to_num(arr.astype(np.float32))
        hi = float(a.max()) if a.size else 1.0
        if hi <= 1.0 + 1e-6:
            a = a * 255.0
        elif hi > 255.0:
            lo = float(a.min())
            a = (a - lo) / max(hi - lo, 1e-12) * 255.0
        return np.clip(a + 0.5, 0, 255).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        lo = int(arr.min()) if arr.size else 0
        hi = int(arr.max()) if arr.size else 0
        if lo < 0:  # signed data: stretch min..max (a plain cast would wrap -1 round to 255)
            return ((arr.astype(np.float64) - lo) / max(hi - lo, 1) * 255.0 + 0.5).astype(np.uint8)
        if hi <= 255:
            return arr.astype(np.uint8)
        return (arr.astype(np.float64) / hi * 255.0 + 0.5).astype(np.uint8)
    raise ImageReadError(path, f"unsupported pixel type {arr.dtype}")


def read_image(path: str | Path) -> np.ndarray:
    """Read any supported image as ``uint8`` RGB ``(H, W, 3)``."""
    path = Path(path)
    arr = _to_uint8(_decode(path, _read_bytes(path)), path)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 2:  # gray + alpha
        arr = np.repeat(arr[:, :, :1], 3, axis=2)
    elif arr.shape[2] == 4:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGB)
    else:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    if min(arr.shape[:2]) < 8:
        raise ImageReadError(path, f"image is too small ({arr.shape[1]}x{arr.shape[0]} px; at least 8x8)")
    return np.ascontiguousarray(arr)


def read_mask(path: str | Path, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Read a defect mask as ``bool (H, W)``; with ``expected_hw`` the size must match exactly."""
    path = Path(path)
    arr = _decode(path, _read_bytes(path))
    if arr.ndim == 3:
        arr = arr[:, :, :3].max(axis=2) if arr.shape[2] != 2 else arr[:, :, 0]
    _warn_if_not_binary(path, arr)
    mask = arr > 0
    if expected_hw is not None and tuple(mask.shape) != tuple(expected_hw):
        raise ImageReadError(
            path, f"mask is {mask.shape[1]}x{mask.shape[0]} px but its image is "
                  f"{expected_hw[1]}x{expected_hw[0]} px")
    return mask


_warned_masks: set[str] = set()   # masks are re-read (each evaluation): warn once per file


def _warn_if_not_binary(path: Path, arr: np.ndarray) -> None:
    if arr.dtype in (np.uint8, np.uint16):   # bincount: linear time, for 4000 x 4000 masks too
        n = int(np.count_nonzero(np.bincount(arr.ravel())))
    else:
        n = int(np.unique(arr).size)
    if n > 2 and str(path) not in _warned_masks:
        _warned_masks.add(str(path))
        log.warning("%s: the mask has %d distinct values, not 2 (a JPEG-saved or anti-aliased "
                    "mask?); every non-zero pixel is taken as defect", path, n)


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file, decoding it fully (so corrupt files are caught)."""
    img = read_image(path)
    return img.shape[1], img.shape[0]


def encode_png(arr: np.ndarray, rgb: bool = True) -> bytes:
    if arr.ndim == 3 and rgb:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", arr)
    if not ok:  # pragma: no cover - OpenCV refuses only on impossible shapes
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def write_png(path: str | Path, arr: np.ndarray, rgb: bool = True) -> None:
    """Write an RGB (or single-channel) array as PNG, atomically."""
    atomic_write_bytes(path, encode_png(arr, rgb=rgb))


def write_mask(path: str | Path, mask: np.ndarray) -> None:
    """Write a boolean mask as an MVTec-style PNG (255 = defect)."""
    write_png(path, np.where(mask, 255, 0).astype(np.uint8), rgb=False)
