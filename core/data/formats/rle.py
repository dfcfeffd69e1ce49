"""COCO run-length encoding of binary masks, done by pycocotools (``pycocotools.mask``).

A mask of ``h`` x ``w`` pixels is read in column-major (Fortran) order, so pixel (x, y) is element
``x * h + y``. ``counts`` are the lengths of alternating runs, starting with a run of *background*
(0) pixels, which is 0 when the first pixel is foreground; they sum to ``h * w``. Compressed RLE
(``{"size": [h, w], "counts": "<str>"}``) writes them as pycocotools' LEB128-like string; the
uncompressed form (``"counts": [int, ...]``) is read as well.

pycocotools writes every RLE and measures area and bounding box. What stays here, and why:

- :func:`string_to_counts` reads a compressed string into its run lengths, to check an RLE from a
  file before anything uses it; :func:`paint` and :func:`decode` expand those checked runs.
  pycocotools' reader takes any character (garbage in, garbage out), fills a too-short RLE with
  background, and its ``merge`` never returns on an RLE whose runs do not add up to its size
  (pycocotools 2.0.11). It has no call that returns the run lengths, which :func:`paint` needs to
  cost O(runs) rather than O(h * w) per instance, and its ``decode`` parses the string again.
- :func:`counts_from_indices`: run lengths of a mask given by its pixel indices, so the COCO
  exporter does not build a full-size mask for every connected component.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from pycocotools import mask as cocomask


class RLEError(ValueError):
    """A run-length encoding is malformed (bad character, wrong total length, negative run)."""


# ---------------------------------------------------------------------------------------------
# run lengths
# ---------------------------------------------------------------------------------------------
def counts_from_indices(indices: np.ndarray, n: int) -> list[int]:
    """Run lengths of a length-``n`` 0/1 sequence whose ones are at the sorted ``indices``."""
    idx = np.asarray(indices, dtype=np.int64)
    if idx.size == 0:
        return [int(n)]
    # A new foreground run starts wherever the index is not the previous index + 1.
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    starts = idx[np.concatenate(([0], breaks))]
    ends = idx[np.concatenate((breaks - 1, [idx.size - 1]))] + 1       # exclusive
    gaps = starts - np.concatenate(([0], ends[:-1]))                   # background before each run
    runs = np.empty(2 * starts.size + 1, np.int64)
    runs[0:-1:2] = gaps
    runs[1::2] = ends - starts
    runs[-1] = n - ends[-1]
    out = runs.tolist()
    if out[-1] == 0:             # pycocotools ends on the last real run
        out.pop()
    return out


def _mask2d(mask: np.ndarray) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 2:
        raise RLEError(f"mask must be 2-D (h, w), got shape {m.shape}")
    return m


def mask_to_counts(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO counts of a (h, w) mask (non-zero = foreground)."""
    m = _mask2d(mask)
    return counts_from_indices(np.flatnonzero(m.ravel(order="F")), m.size)


def counts_to_string(counts: Sequence[int]) -> str:
    """The compressed string of uncompressed counts (pycocotools' ``rleToString``)."""
    c = [int(v) for v in counts]
    if any(v < 0 for v in c):
        raise RLEError("RLE has a negative run length")
    # frPyObjects compresses an uncompressed RLE; its size only has to match the counts' total.
    obj = cocomask.frPyObjects({"size": [sum(c), 1], "counts": c}, sum(c), 1)
    return obj["counts"].decode("ascii")


def string_to_counts(s: str | bytes) -> list[int]:
    """Run lengths of a compressed string, checked character by character (see the module doc for
    why pycocotools' own reader is not used on strings from files)."""
    if isinstance(s, bytes):
        try:
            s = s.decode("ascii")
        except UnicodeDecodeError as exc:
            raise RLEError("compressed counts must be ASCII") from exc
    counts: list[int] = []
    p, n = 0, len(s)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise RLEError(f"compressed counts end in the middle of a value (at character {p})")
            c = ord(s[p]) - 48
            if not 0 <= c <= 63:
                raise RLEError(f"invalid character {s[p]!r} at position {p} of the compressed counts "
                               f"(allowed: '0' to 'o')")
            x |= (c & 0x1F) << (5 * k)      # 5 bits a character, least significant first
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)          # sign-extend
        if len(counts) > 2:                 # from the fourth on: the difference to two before
            x += counts[-2]
        counts.append(x)
    return counts


# ---------------------------------------------------------------------------------------------
# RLE objects
# ---------------------------------------------------------------------------------------------
def encode(mask: np.ndarray) -> dict:
    """Compressed RLE ``{"size": [h, w], "counts": str}`` of a (h, w) mask (non-zero =
    foreground), by pycocotools' ``mask.encode`` (``counts`` as str, for JSON)."""
    m = _mask2d(mask)
    obj = cocomask.encode(np.asfortranarray(m != 0, dtype=np.uint8))
    return {"size": [int(m.shape[0]), int(m.shape[1])], "counts": obj["counts"].decode("ascii")}


def encode_indices(indices: np.ndarray, h: int, w: int) -> dict:
    """Compressed RLE of a mask given by the sorted column-major indices of its pixels."""
    counts = counts_from_indices(indices, h * w)
    obj = cocomask.frPyObjects({"size": [int(h), int(w)], "counts": counts}, int(h), int(w))
    return {"size": [int(h), int(w)], "counts": obj["counts"].decode("ascii")}


def rle_counts(rle: dict) -> tuple[int, int, list[int]]:
    """(h, w, counts) of a compressed or uncompressed RLE dict, checked for shape and length."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise RLEError("RLE must be an object with \"size\" and \"counts\"")
    size = rle["size"]
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in size)):
        raise RLEError(f"RLE \"size\" must be [height, width] (non-negative integers), got {size!r}")
    h, w = int(size[0]), int(size[1])
    raw = rle["counts"]
    if isinstance(raw, (str, bytes)):
        counts = string_to_counts(raw)
    elif isinstance(raw, (list, tuple)):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
            raise RLEError("uncompressed RLE counts must be integers")
        counts = [int(v) for v in raw]
    else:
        raise RLEError(f"RLE \"counts\" must be a string or a list, got {type(raw).__name__}")
    if any(v < 0 for v in counts):
        raise RLEError("RLE has a negative run length")
    total = sum(counts)
    if total != h * w:
        raise RLEError(f"run lengths sum to {total} pixels but \"size\" is {h}x{w} = {h * w} pixels")
    return h, w, counts


def _checked(rle: dict) -> dict:
    """The RLE as pycocotools takes it (compressed, bytes), once :func:`rle_counts` passed it."""
    h, w, counts = rle_counts(rle)
    raw = rle["counts"]
    if isinstance(raw, (list, tuple)):
        return cocomask.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    return {"size": [h, w], "counts": raw.encode("ascii") if isinstance(raw, str) else raw}


def decode(rle: dict) -> np.ndarray:
    """(h, w) bool mask (C order) of a compressed or uncompressed RLE dict, painted from the
    checked run lengths (pycocotools' ``decode`` would parse the string again, and under NumPy 2
    it warns on every call: its ``__array__`` lacks the ``copy`` keyword)."""
    h, w, _ = rle_counts(rle)
    out_t = np.zeros((w, h), bool)
    paint(rle, out_t)
    return np.ascontiguousarray(out_t.T)


def paint(rle: dict, out_t: np.ndarray) -> None:
    """Set the RLE's foreground pixels in ``out_t``, a C-contiguous (w, h) bool array (the
    transposed mask, whose flat order is the RLE's column-major order). Costs O(runs), not
    O(h * w), so many small instances on a large image decode fast."""
    h, w, counts = rle_counts(rle)
    if out_t.shape != (w, h) or out_t.dtype != bool or not out_t.flags.c_contiguous:
        raise ValueError(f"out_t must be a C-contiguous bool array of shape {(w, h)}")
    flat = out_t.reshape(-1)
    ends = np.cumsum(np.asarray(counts, np.int64))
    starts = ends - np.asarray(counts, np.int64)
    for s, e in zip(starts[1::2].tolist(), ends[1::2].tolist()):
        flat[s:e] = True


def area(rle: dict) -> int:
    """Number of foreground pixels."""
    return int(cocomask.area(_checked(rle)))


def to_bbox(rle: dict) -> list[int]:
    """[x, y, w, h] of the foreground, by pycocotools' ``toBbox`` (all zeros when empty)."""
    return [int(v) for v in cocomask.toBbox(_checked(rle))]
